//! Configs: any bytes as a config file (at `configs/fuzz/input.json` of a copy of the repository's configs, so
//! that `_base_` paths such as `../_base_/models/retinanet_r50_fpn.json` resolve), followed after a NUL byte by
//! `--cfg-options` lines. Each either loads and validates or is refused with an error; a config that loads,
//! saved resolved (as the work dir's `config.json`) and loaded again, gives the same resolved config.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use attndet_detectors::config::{ExperimentConfig, load_typed, validate_experiment};
use attndet_detectors_fuzz::scratch;
use libfuzzer_sys::fuzz_target;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a copy of the configs");
    for entry in std::fs::read_dir(from).expect("the repository's configs") {
        let entry = entry.expect("a configs entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("a config copied");
        }
    }
}

fn input_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let configs = scratch("config").join("configs");
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs"),
            &configs,
        );
        let dir = configs.join("fuzz");
        std::fs::create_dir_all(&dir).expect("configs/fuzz");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let (text, options) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let overrides: Vec<String> = String::from_utf8_lossy(options)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(8)
        .map(str::to_string)
        .collect();
    let path = input_dir().join("input.json");
    std::fs::write(&path, text).expect("the input written");
    let Ok((cfg, resolved)) = load_typed::<ExperimentConfig>(&path, &overrides) else {
        return;
    };
    if validate_experiment(&cfg, "input.json").is_err() {
        return;
    }
    let m = &cfg.model;
    let _ = (
        m.num_classes(),
        m.layout(),
        m.test_proposals(),
        m.trains_masks(),
        m.class_ids(),
    );
    // the resolved config is what a work dir records and `test CKPT` loads back
    let saved = input_dir().join("resolved.json");
    std::fs::write(&saved, serde_json::to_vec_pretty(&resolved).expect("JSON")).expect("written");
    let (again, resolved_again) = load_typed::<ExperimentConfig>(&saved, &[])
        .unwrap_or_else(|e| panic!("a resolved config does not load back: {e}"));
    assert_eq!(
        resolved, resolved_again,
        "the resolved config changed on a round trip"
    );
    validate_experiment(&again, "resolved.json").expect("a valid config stays valid");
});
