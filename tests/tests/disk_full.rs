//! A full disk while a checkpoint is written: the run stops with the operating system's "No space left on
//! device" naming the checkpoint, exits non-zero, and leaves no half-written checkpoint or temporary directory
//! behind. The work dir is a small tmpfs; where it cannot be mounted (not root, or no tmpfs), the test says so
//! and passes without checking.

use std::path::Path;
use std::process::Command;

use attndet_tests::{TempDir, run, synth_dataset, workspace_root};

struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_during_a_save_is_reported_and_leaves_nothing_behind() {
    let tmp = TempDir::new("disk-full");
    let dir = tmp.path();
    let work = dir.join("small-disk");
    // the ResNet-18 model record alone is ~45 MB: 8 MB hold the config and the log, not a checkpoint
    let Some(_fs) = Tmpfs::mount(&work, "8m") else {
        eprintln!("disk_full: cannot mount a tmpfs here (needs root); not checked");
        return;
    };
    synth_dataset(dir, 6, 2, 64, 3);
    let config = workspace_root().join("configs/retinanet/retinanet_r18_fpn_synth_demo.json");
    let data = serde_json::Value::String(dir.join("data").display().to_string());
    let o = run(&[
        "train",
        &config.display().to_string(),
        "--work-dir",
        &work.display().to_string(),
        "--quiet",
        "--cfg-options",
        &format!("data.data_root={data}"),
        "data.batch_size=3",
        "data.pipeline.img_scale=[64, 64]",
        "model.neck.out_channels=16",
        "model.bbox_head.feat_channels=16",
        "model.bbox_head.stacked_convs=1",
        "runner.max_epochs=1",
        "evaluation.interval=0",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a run that could not save its checkpoint exited 0"
    );
    assert_ne!(o.status.code(), Some(101), "panicked: {stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("epoch_1"),
        "the message names the checkpoint: {stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp") || n.starts_with("epoch_"))
        .collect();
    assert!(left.is_empty(), "left behind on the full disk: {left:?}");
}
