//! End-to-end tests of the `attndet` binary live in `tests/`; this library holds their shared helpers:
//! finding the built binary, running it, and locating the shared fixtures.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `attndet` binary built by `cargo test --workspace` (same profile directory as the test).
///
/// # Panics
/// When the binary has not been built: run the tests with `cargo test --workspace`, which builds it.
pub fn attndet_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test-binary> -> target/<profile>/attndet
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let bin = profile_dir.join(format!("attndet{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run the end-to-end tests with `cargo test --workspace` (it builds the binary), or `cargo build -p attndet` first",
        bin.display()
    );
    bin
}

/// Run `attndet` with `args`, returning its output (status, stdout, stderr).
pub fn run(args: &[&str]) -> Output {
    Command::new(attndet_bin())
        .args(args)
        .output()
        .expect("spawn attndet")
}

/// Generate the synthetic shapes dataset (`attndet dataset synth`) with `train` + `val` images of
/// `size x size` into `dir/data`; panics with attndet's stderr when that fails.
pub fn synth_dataset(dir: &Path, train: usize, val: usize, size: u32, seed: u64) {
    let data = dir.join("data");
    let (train, val, size, seed) = (
        train.to_string(),
        val.to_string(),
        size.to_string(),
        seed.to_string(),
    );
    let out = run(&[
        "dataset",
        "synth",
        "--out",
        data.to_str().expect("UTF-8 temp path"),
        "--train",
        &train,
        "--val",
        &val,
        "--size",
        &size,
        "--seed",
        &seed,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `attndet train CFG --work-dir WORK_DIR --quiet EXTRA_ARGS... --cfg-options OVERRIDES...`.
pub fn train(cfg: &str, work_dir: &Path, extra_args: &[&str], overrides: &[String]) -> Output {
    let mut args: Vec<String> = vec![
        "train".into(),
        cfg.into(),
        "--work-dir".into(),
        work_dir.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    run_with_overrides(args, overrides)
}

/// Run `attndet ARGS... --cfg-options OVERRIDES...`.
pub fn run_with_overrides(mut args: Vec<String>, overrides: &[String]) -> Output {
    args.push("--cfg-options".into());
    args.extend(overrides.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

/// The lines of `WORK_DIR/log.jsonl` whose `mode` is `mode` (`train` or `val`).
pub fn log_lines(work_dir: &Path, mode: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(work_dir.join("log.jsonl"))
        .expect("log.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON log line"))
        .filter(|v| v["mode"] == mode)
        .collect()
}

/// The path of `configs/{name}` as a string.
pub fn config_path(name: &str) -> String {
    workspace_root().join("configs").join(name).display().to_string()
}

/// Root of the workspace (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The shared COCO fixtures (`../shared/fixtures/coco` beside the checkout).
pub fn shared_coco_fixtures() -> PathBuf {
    workspace_root().join("../shared/fixtures/coco")
}

/// A fresh, empty temporary directory for one test, under the target directory (removed on drop).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create `target/e2e-tmp/<name>-<pid>`, emptied first.
    pub fn new(name: &str) -> Self {
        let exe = std::env::current_exe().expect("current test executable");
        let base = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .join("e2e-tmp");
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
