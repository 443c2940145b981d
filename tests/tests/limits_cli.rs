//! Resource limits on input files: JSON annotation / results files over `ATTNDET_MAX_JSON_BYTES`, and config
//! files over 16 MiB, are refused before they are read, naming the file and both sizes (exit 2).

use std::process::Command;

use attndet_tests::{TempDir, attndet_bin, synth_dataset};

#[test]
fn json_files_over_the_limit_are_refused_up_front() {
    let tmp = TempDir::new("limits-json");
    synth_dataset(tmp.path(), 4, 2, 32, 0);
    let ann = tmp.path().join("data/annotations/instances_train.json");
    let size = std::fs::metadata(&ann).unwrap().len();
    let o = Command::new(attndet_bin())
        .env("ATTNDET_MAX_JSON_BYTES", "1000")
        .args(["dataset", "stats"])
        .arg(&ann)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{size} bytes is more than the limit of 1000 bytes")),
        "{stderr}"
    );
    assert!(stderr.contains("instances_train.json"), "{stderr}");
    // under the default limit the same file loads
    let o = Command::new(attndet_bin())
        .args(["dataset", "stats"])
        .arg(&ann)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn config_files_over_16_mib_are_refused_before_reading() {
    let tmp = TempDir::new("limits-config");
    let path = tmp.path().join("huge.json");
    // a sparse file: 17 MiB long without writing 17 MiB
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(17 << 20).unwrap();
    let o = Command::new(attndet_bin())
        .args(["config", "show"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("huge.json"), "{stderr}");
    assert!(
        stderr.contains("17825792 bytes; a config file is at most 16777216 bytes"),
        "{stderr}"
    );
}

/// A device or pipe reports size 0, so the size check alone would let `/dev/zero` be read without end (found
/// while writing the config fuzz target): the read itself stops past the limit, for configs, their bases and
/// JSON files alike, and the error names the stream.
#[test]
fn streams_without_a_size_are_read_up_to_the_limit_only() {
    let tmp = TempDir::new("limits-stream");
    let cfg = tmp.path().join("cfg.json");
    std::fs::write(&cfg, r#"{"_base_": "/dev/zero"}"#).unwrap();
    let o = Command::new(attndet_bin())
        .args(["config", "show"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    // 16 MiB of NUL bytes read, one past the limit: refused as too long, naming the base
    assert!(stderr.contains("/dev/zero"), "{stderr}");
    assert!(
        stderr.contains("a config file is at most 16777216 bytes"),
        "{stderr}"
    );
    let o = Command::new(attndet_bin())
        .env("ATTNDET_MAX_JSON_BYTES", "1000")
        .args(["dataset", "stats", "/dev/zero"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/dev/zero"), "{stderr}");
    assert!(stderr.contains("more than the limit of 1000 bytes"), "{stderr}");
}
