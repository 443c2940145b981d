//! Guards of `train` through the binary. A work dir has one writer: a second `train` in the same work dir is
//! refused while the first runs; a killed run's stale lock and half-written checkpoint temporaries are cleaned up
//! by the next run. Non-finite gradients stop the run before the optimizer step, like non-finite losses.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attndet_tests::{TempDir, attndet_bin, run, synth_dataset, workspace_root};

fn demo_config() -> String {
    workspace_root()
        .join("configs/retinanet/retinanet_r18_fpn_synth_demo.json")
        .display()
        .to_string()
}

/// `train` arguments for a tiny model on `dir/data` in `work`.
fn train_args(dir: &Path, work: &Path, quiet: bool, extra: &[&str]) -> Vec<String> {
    let data = serde_json::Value::String(dir.join("data").display().to_string());
    let mut a: Vec<String> = vec![
        "train".into(),
        demo_config(),
        "--work-dir".into(),
        work.display().to_string(),
    ];
    if quiet {
        a.push("--quiet".into());
    }
    a.push("--cfg-options".into());
    a.extend(
        [
            format!("data.data_root={data}"),
            "data.batch_size=3".into(),
            "data.pipeline.img_scale=[64, 64]".into(),
            "model.neck.out_channels=16".into(),
            "model.bbox_head.feat_channels=16".into(),
            "model.bbox_head.stacked_convs=1".into(),
            "evaluation.interval=0".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string())),
    );
    a
}

#[test]
fn one_writer_per_work_dir_and_stale_leftovers_are_cleaned() {
    let tmp = TempDir::new("workdir-lock");
    let dir = tmp.path();
    synth_dataset(dir, 6, 3, 64, 0);
    let work = dir.join("work");
    // A: a long run holding the lock
    let mut a = Command::new(attndet_bin())
        .args(train_args(dir, &work, true, &["runner.max_epochs=1000"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn attndet");
    let lock = work.join(".lock");
    let t0 = Instant::now();
    while !lock.exists() {
        if let Some(status) = a.try_wait().unwrap() {
            let out = a.wait_with_output().unwrap();
            panic!(
                "the first run ended ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no lock after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // B: same work dir while A runs
    let b_args = train_args(dir, &work, true, &["runner.max_epochs=1"]);
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let b = run(&b_refs);
    let err = String::from_utf8_lossy(&b.stderr);
    assert_eq!(b.status.code(), Some(2), "{err}");
    assert!(
        err.contains("in use by another training run") && err.contains(&format!("pid {}", a.id())),
        "{err}"
    );
    // kill A: its lock stays behind, as would a checkpoint temporary of an interrupted save
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(lock.exists());
    let stale = work.join(".epoch_9.tmp-4242");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("model.mpk"), b"half").unwrap();
    // C: takes the stale lock over, says so, removes the temporary, and releases the lock at the end
    let c_args = train_args(dir, &work, false, &["runner.max_epochs=1"]);
    let c_refs: Vec<&str> = c_args.iter().map(String::as_str).collect();
    let c = run(&c_refs);
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "{err}");
    assert!(
        err.contains("took over the stale lock") && err.contains(&format!("pid {}", a.id())),
        "{err}"
    );
    assert!(
        err.contains("leftover") && err.contains(".epoch_9.tmp-4242"),
        "{err}"
    );
    assert!(!stale.exists() && !lock.exists());
    assert!(work.join("epoch_1/state.json").exists());
}

#[test]
fn non_finite_gradients_stop_before_the_step_with_or_without_clipping() {
    let tmp = TempDir::new("nan-grads");
    let dir = tmp.path();
    synth_dataset(dir, 6, 3, 64, 0);
    // a tiny (valid, positive) std: the inputs are ~1e38, the loss stays finite (saturated sigmoids) but the
    // gradients overflow
    for clip in ["optimizer.grad_clip=null", "optimizer.grad_clip.max_norm=10"] {
        let work = dir.join(format!("w-{}", clip.len()));
        let args = train_args(
            dir,
            &work,
            true,
            &[
                "runner.max_epochs=2",
                "data.pipeline.std=[1e-36,1e-36,1e-36]",
                clip,
            ],
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&refs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{clip}: {err}");
        assert!(
            err.contains("gradient norm is not finite") && err.contains("epoch 1, iteration 1"),
            "{clip}: {err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("done"), "{clip}");
    }
}

#[test]
fn a_failing_evaluation_loses_no_epoch() {
    let tmp = TempDir::new("eval-fails");
    let dir = tmp.path();
    synth_dataset(dir, 6, 3, 64, 0);
    // the val images are gone: the evaluation after epoch 1 fails
    for e in std::fs::read_dir(dir.join("data/val")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let work = dir.join("work");
    let args = train_args(
        dir,
        &work,
        true,
        &["runner.max_epochs=2", "evaluation.interval=1"],
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("evaluation failed"), "{err}");
    // epoch 1 was saved before its evaluation, and is the latest checkpoint
    assert!(work.join("epoch_1/state.json").exists(), "{err}");
    assert_eq!(
        std::fs::read_to_string(work.join("latest")).unwrap().trim(),
        "epoch_1"
    );
    assert!(!work.join(".lock").exists(), "the lock is released on error");
}
