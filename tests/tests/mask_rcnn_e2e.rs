//! Mask R-CNN end to end through the binary on a tiny synthetic set (whose instances carry polygons):
//! training with masks, exact resume, `test --eval bbox segm` writing both results files, those files
//! scored again by `attndet eval` to the same stats, and `infer` writing COCO compressed RLEs.

use std::path::Path;

use attndet_tests::{TempDir, run, synth_dataset, workspace_root};

fn tiny(dir: &Path) -> Vec<String> {
    [
        format!(
            "data.data_root={}",
            serde_json::Value::String(dir.join("data").display().to_string())
        ),
        "data.batch_size=2".into(),
        "data.num_workers=1".into(),
        "data.pipeline.img_scale=[64, 64]".into(),
        "model.neck.out_channels=16".into(),
        "model.rpn_head.feat_channels=16".into(),
        "model.roi_head.bbox_head.in_channels=16".into(),
        "model.roi_head.bbox_head.fc_out_channels=32".into(),
        "model.roi_head.mask_head.in_channels=16".into(),
        "model.roi_head.mask_head.conv_out_channels=16".into(),
        "model.test_cfg.rcnn.score_thr=0.0".into(),
        "runner.max_epochs=2".into(),
        "lr_config.warmup_iters=2".into(),
        "log_config.interval=1".into(),
    ]
    .into_iter()
    .collect()
}

fn with_overrides(mut args: Vec<String>, dir: &Path) -> std::process::Output {
    args.push("--cfg-options".into());
    args.extend(tiny(dir));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

fn losses(work: &Path) -> Vec<f64> {
    std::fs::read_to_string(work.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn mask_rcnn_trains_resumes_tests_both_kinds_and_infers_masks() {
    let tmp = TempDir::new("mask-rcnn-e2e");
    let dir = tmp.path();
    synth_dataset(dir, 4, 2, 64, 9);
    let cfg = workspace_root()
        .join("configs/mask_rcnn/mask_rcnn_r18_fpn_synth_demo.json")
        .display()
        .to_string();
    let train = |work: &Path, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "train".into(),
            cfg.clone(),
            "--work-dir".into(),
            work.display().to_string(),
            "--quiet".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        with_overrides(args, dir)
    };
    let full = dir.join("full");
    let out = train(&full, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let terms = std::fs::read_to_string(full.join("log.jsonl")).unwrap();
    assert!(terms.contains("loss_mask"), "{terms}");
    let part = dir.join("part");
    assert!(train(&part, &["--max-iters", "2"]).status.success());
    let out = train(&part, &["--resume"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        losses(&part),
        losses(&full),
        "resumed losses equal the uninterrupted run's"
    );

    let results = dir.join("res.json");
    let out = with_overrides(
        vec![
            "test".into(),
            cfg.clone(),
            full.display().to_string(),
            "--eval".into(),
            "bbox".into(),
            "segm".into(),
            "--json".into(),
            "--out".into(),
            results.display().to_string(),
        ],
        dir,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["bbox"]["stats"].as_array().unwrap().len(), 12);
    assert_eq!(v["segm"]["stats"].as_array().unwrap().len(), 12);
    let segm = dir.join("res.segm.json");
    assert!(dir.join("res.bbox.json").exists() && segm.exists());
    let ann = dir.join("data/annotations/instances_val.json");
    let out = run(&[
        "eval",
        "--ann",
        ann.to_str().unwrap(),
        "--results",
        segm.to_str().unwrap(),
        "--iou-type",
        "segm",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        e["stats"], v["segm"]["stats"],
        "the written segm results score the same"
    );

    let image = dir
        .join("data/val")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let shown = dir.join("shown");
    let out = with_overrides(
        vec![
            "infer".into(),
            cfg.clone(),
            full.display().to_string(),
            image.display().to_string(),
            "--score-thr".into(),
            "0".into(),
            "--show-dir".into(),
            shown.display().to_string(),
            "--out".into(),
            dir.join("infer.json").display().to_string(),
        ],
        dir,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let infer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("infer.json")).unwrap()).unwrap();
    let dets = infer[0]["detections"].as_array().unwrap();
    assert!(!dets.is_empty());
    let seg = &dets[0]["segmentation"];
    assert_eq!(seg["size"], serde_json::json!([64, 64]));
    assert!(seg["counts"].is_string());
    assert!(shown.join(image.file_name().unwrap()).exists());
}
