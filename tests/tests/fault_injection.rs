//! kill -9 at random moments of a tiny training (between iterations, while a checkpoint is written, during the
//! per-epoch evaluation), each time followed by `--resume` from the work dir's newest checkpoint, until the
//! run completes. The result must equal an uninterrupted run bit for bit (every tensor of the final model
//! record, and the detections `attndet test` writes from it), and no temporary file or directory may be left.
//!
//! The suite kills 3 times; `ATTNDET_FAULT_ROUNDS=N` kills N times (`tests/scripts/fault_injection.sh` runs the
//! long form and reports it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attndet_tests::{TempDir, attndet_bin, run, synth_dataset, workspace_root};

fn train_args(dir: &Path, work: &Path) -> Vec<String> {
    let config = workspace_root().join("configs/retinanet/retinanet_r18_fpn_synth_demo.json");
    let data = dir.join("data");
    let mut a: Vec<String> = vec![
        "train".into(),
        config.display().to_string(),
        "--work-dir".into(),
        work.display().to_string(),
        "--quiet".into(),
        "--cfg-options".into(),
    ];
    a.extend([
        format!(
            "data.data_root={}",
            serde_json::Value::String(data.display().to_string())
        ),
        "data.batch_size=3".into(),
        "data.num_workers=2".into(),
        "data.pipeline.img_scale=[64, 64]".into(),
        "model.neck.out_channels=16".into(),
        "model.bbox_head.feat_channels=16".into(),
        "model.bbox_head.stacked_convs=1".into(),
        "runner.max_epochs=3".into(),
        "lr_config.warmup_iters=2".into(),
        "lr_config.step=[2]".into(),
        "evaluation.interval=1".into(),
        "log_config.interval=1".into(),
    ]);
    a
}

/// The tensors of a burn MessagePack record in file order: every `bin` payload (tensor bytes) and every float.
/// Integers and strings are skipped, as they hold the random `ParamId`s that differ between processes.
fn record_tensors(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut pending = 1usize; // values still to read
    let take = |pos: &mut usize, n: usize| -> &[u8] {
        let s = &bytes[*pos..*pos + n];
        *pos += n;
        s
    };
    let be = |s: &[u8]| s.iter().fold(0usize, |acc, &b| acc << 8 | b as usize);
    while pending > 0 {
        pending -= 1;
        let m = take(&mut pos, 1)[0];
        match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {}
            0x80..=0x8f => pending += 2 * (m & 0x0f) as usize,
            0x90..=0x9f => pending += (m & 0x0f) as usize,
            0xa0..=0xbf => pos += (m & 0x1f) as usize,
            0xc4..=0xc6 => {
                let n = be(take(&mut pos, 1 << (m - 0xc4)));
                out.push(take(&mut pos, n).to_vec());
            }
            0xca => out.push(take(&mut pos, 4).to_vec()),
            0xcb => out.push(take(&mut pos, 8).to_vec()),
            0xcc..=0xcf => pos += 1 << (m - 0xcc),
            0xd0..=0xd3 => pos += 1 << (m - 0xd0),
            0xd9..=0xdb => {
                let n = be(take(&mut pos, 1 << (m - 0xd9)));
                pos += n;
            }
            0xdc | 0xdd => pending += be(take(&mut pos, 2 << (m - 0xdc))),
            0xde | 0xdf => pending += 2 * be(take(&mut pos, 2 << (m - 0xde))),
            _ => panic!(
                "{}: unexpected MessagePack marker {m:#x} at {}",
                path.display(),
                pos - 1
            ),
        }
    }
    assert_eq!(pos, bytes.len(), "{}: trailing bytes", path.display());
    out
}

/// The final model of a finished work dir: its tensors and the detections `attndet test` writes from it.
fn fingerprint(dir: &Path, work: &Path) -> (Vec<Vec<u8>>, String) {
    let ckpt = work.join("epoch_3");
    let model = std::fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_stem().is_some_and(|s| s == "model"))
        .expect("epoch_3 has a model record");
    let tensors = record_tensors(&model);
    assert!(tensors.len() > 10, "no tensors found in {}", model.display());
    let out = work.join("dets.json");
    let mut args = train_args(dir, work);
    args[0] = "test".into();
    args.splice(
        2..4,
        [
            ckpt.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ],
    );
    args.retain(|a| a != "--quiet");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert!(
        o.status.success(),
        "test failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (tensors, std::fs::read_to_string(out).unwrap())
}

fn temp_entries(work: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("tmp"))
        .collect()
}

#[test]
fn killed_and_resumed_training_equals_an_uninterrupted_run() {
    let rounds: usize = std::env::var("ATTNDET_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = TempDir::new("fault-injection");
    let dir = tmp.path();
    synth_dataset(dir, 12, 3, 64, 5);

    // the uninterrupted run, timed to spread the kills over its whole length
    let clean = dir.join("clean");
    let t0 = Instant::now();
    let args = train_args(dir, &clean);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let length = t0.elapsed().as_secs_f64();
    let want = fingerprint(dir, &clean);

    // the killed run: each round starts (or resumes) and is killed after a pseudo-random share of the run's
    // length; then one last resume runs to the end
    let work = dir.join("killed");
    let mut x: u32 = 12345;
    let mut kills = 0;
    for round in 0..=rounds {
        let mut args = train_args(dir, &work);
        if work.join("latest").exists() {
            args.insert(4, "--resume".into());
        } else if work.exists() {
            // killed before the first checkpoint: start again, as a user would
            std::fs::remove_dir_all(&work).unwrap();
        }
        let mut child = Command::new(attndet_bin())
            .args(&args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if round < rounds {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            let share = 0.1 + 0.9 * (x as f64 / u32::MAX as f64);
            std::thread::sleep(Duration::from_secs_f64(share * length));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
            child.wait().unwrap();
            if work.join("epoch_3").exists()
                && std::fs::read_to_string(work.join("latest")).is_ok_and(|l| l.contains("epoch_3"))
            {
                break;
            }
        } else {
            let status = child.wait().unwrap();
            assert!(status.success(), "the final resume failed");
        }
    }
    eprintln!("{kills} kills over {rounds} rounds; uninterrupted run {length:.1} s");
    let got = fingerprint(dir, &work);
    assert_eq!(got.0.len(), want.0.len(), "number of tensors");
    for (i, (a, b)) in got.0.iter().zip(&want.0).enumerate() {
        assert!(
            a == b,
            "tensor {i} of the final model differs after kill -9 and resume"
        );
    }
    assert_eq!(got.1, want.1, "detections differ after kill -9 and resume");
    assert!(
        temp_entries(&work).is_empty(),
        "left behind: {:?}",
        temp_entries(&work)
    );
    assert!(!work.join(".lock").exists(), "the lock outlived the run");
}
