//! RetinaNet end to end through the binary on a tiny synthetic set: training for a handful of iterations with
//! evaluation, `test` on the checkpoint, exact resume, NaN stop, plots, and bad-input errors.

use std::path::Path;

use attndet_tests::{TempDir, run, synth_dataset, workspace_root};

fn demo_config() -> String {
    workspace_root()
        .join("configs/retinanet/retinanet_r18_fpn_synth_demo.json")
        .display()
        .to_string()
}

/// Overrides that point the demo config at `dir/data` and shrink the model and the schedule.
fn tiny_overrides(dir: &Path, extra: &[&str]) -> Vec<String> {
    let data = dir.join("data");
    let mut o: Vec<String> = [
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
        "runner.max_epochs=2".into(),
        "lr_config.warmup_iters=2".into(),
        "log_config.interval=1".into(),
        // every epoch's checkpoint is looked at (the demo config keeps only the last)
        "checkpoint_config.max_keep_ckpts=null".into(),
    ]
    .into_iter()
    .collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

fn train(dir: &Path, work: &str, extra_args: &[&str], overrides: &[String]) -> std::process::Output {
    let work_dir = dir.join(work);
    let mut args: Vec<String> = vec![
        "train".into(),
        demo_config(),
        "--work-dir".into(),
        work_dir.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    args.push("--cfg-options".into());
    args.extend(overrides.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

fn losses(log: &Path) -> Vec<(usize, f64)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .map(|v| {
            (
                v["global_iter"].as_u64().unwrap() as usize,
                v["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn trains_evaluates_tests_and_resumes_exactly() {
    let tmp = TempDir::new("retinanet-e2e");
    let dir = tmp.path();
    synth_dataset(dir, 6, 3, 64, 3);
    // 2 epochs of 2 iterations, evaluation after each epoch
    let out = train(dir, "full", &[], &tiny_overrides(dir, &["evaluation.interval=1"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let full = dir.join("full");
    for f in [
        "config.json",
        "log.jsonl",
        "latest",
        "epoch_1/state.json",
        "epoch_2/state.json",
        "loss.png",
        "ap.png",
    ] {
        assert!(full.join(f).exists(), "{f} missing");
    }
    let log = std::fs::read_to_string(full.join("log.jsonl")).unwrap();
    let val: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["mode"] == "val")
        .collect();
    assert_eq!(val.len(), 2);
    assert_eq!(val[0]["stats"]["bbox"].as_array().unwrap().len(), 12);
    let full_losses = losses(&full.join("log.jsonl"));
    assert_eq!(full_losses.len(), 4);
    assert!(full_losses.iter().all(|(_, l)| l.is_finite() && *l > 0.0));

    // test on the last checkpoint: JSON with 12 stats and a results file
    let results = dir.join("results.json");
    let mut args = vec![
        "test".to_string(),
        demo_config(),
        full.join("epoch_2").display().to_string(),
        "--json".into(),
    ];
    args.extend([
        "--out".to_string(),
        results.display().to_string(),
        "--cfg-options".into(),
    ]);
    args.extend(tiny_overrides(dir, &[]));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["bbox"]["stats"].as_array().unwrap().len(), 12);
    // the evaluation at the end of training saw the same model: the same AP
    assert_eq!(v["bbox"]["stats"][0], val[1]["stats"]["bbox"][0]);
    assert!(results.exists());

    // stop after epoch 1, resume for epoch 2: the same losses as the uninterrupted run
    let out = train(
        dir,
        "split",
        &[],
        &tiny_overrides(dir, &["runner.max_epochs=1", "evaluation.interval=0"]),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = train(
        dir,
        "split",
        &["--resume"],
        &tiny_overrides(dir, &["evaluation.interval=0"]),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let split_losses = losses(&dir.join("split/log.jsonl"));
    assert_eq!(split_losses, full_losses, "resumed run diverged");
}

#[test]
fn nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint() {
    let tmp = TempDir::new("retinanet-nan");
    let dir = tmp.path();
    synth_dataset(dir, 6, 3, 64, 3);
    // epoch 1 trains; a huge learning rate from epoch 2 on (lr_config.gamma multiplies at epoch 1) blows up
    let o = tiny_overrides(
        dir,
        &[
            "evaluation.interval=0",
            "lr_config.step=[1]",
            "lr_config.gamma=1e30",
            "optimizer.grad_clip=null",
            "runner.max_epochs=3",
        ],
    );
    let out = train(dir, "nan", &[], &o);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // whichever blows up first, the loss or (with a still finite loss) the gradients
    assert!(
        err.contains("loss is not finite") || err.contains("gradient norm is not finite"),
        "{err}"
    );
    // the message names the last good checkpoint, which is intact
    let ckpt = err
        .split("The last good checkpoint is ")
        .nth(1)
        .expect("checkpoint named")
        .trim();
    assert!(Path::new(ckpt).join("state.json").exists(), "{err}");
}

#[test]
fn bad_inputs_exit_2_naming_the_problem() {
    let tmp = TempDir::new("retinanet-bad");
    let dir = tmp.path();
    // a typo in an override
    let out = train(dir, "w", &[], &["model.bbox_head.num_clases=3".into()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.bbox_head.num_clases"));
    // a missing annotation file
    let out = train(dir, "w", &[], &["data.data_root=\"/no/such/dir\"".into()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // resume without a checkpoint
    synth_dataset(dir, 6, 3, 64, 3);
    let out = train(dir, "empty", &["--resume"], &tiny_overrides(dir, &[]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint"));
}

#[test]
fn plot_of_a_dir_without_log_is_bad_input() {
    let tmp = TempDir::new("retinanet-plot");
    let out = run(&["plot", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.jsonl"));
}
