//! Cascade R-CNN and Cascade Mask R-CNN end to end through the binary on a tiny synthetic set: training a
//! few iterations with evaluation (every stage's losses logged), exact resume, `test` and `infer`.

use std::path::Path;

use attndet_tests::{TempDir, config_path, log_lines, run_with_overrides, synth_dataset, train};

/// Overrides that point a config at `dir/data` and shrink the model (every stage's head) and the schedule.
fn tiny(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut o: Vec<String> = vec![
        format!(
            "data.data_root={}",
            serde_json::Value::String(dir.join("data").display().to_string())
        ),
        "data.batch_size=2".into(),
        "data.num_workers=1".into(),
        "data.pipeline.img_scale=[64, 64]".into(),
        "model.neck.out_channels=16".into(),
        "model.rpn_head.feat_channels=16".into(),
        "runner.max_epochs=2".into(),
        "lr_config.warmup_iters=2".into(),
        "log_config.interval=1".into(),
        "model.test_cfg.rcnn.score_thr=0.0".into(),
    ];
    for i in 0..3 {
        o.push(format!("model.roi_head.bbox_head.{i}.in_channels=16"));
        o.push(format!("model.roi_head.bbox_head.{i}.fc_out_channels=32"));
    }
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Train 2 epochs with evaluation; train 1 epoch and resume; the resumed losses equal the uninterrupted
/// run's; `test --json` reproduces the last evaluation; `infer` writes one image's detections.
fn trains_resumes_tests_and_infers(cfg: &str, dir: &Path, extra: &[&str], kinds: &[&str]) {
    let mut with_eval = vec!["evaluation.interval=1"];
    with_eval.extend(extra);
    let full = dir.join("full");
    ok(&train(cfg, &full, &[], &tiny(dir, &with_eval)));
    let train_lines = log_lines(&full, "train");
    assert_eq!(train_lines.len(), 4, "2 epochs of 2 iterations");
    let names: Vec<&str> = train_lines[0]["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = vec!["loss_rpn_cls".into(), "loss_rpn_bbox".into()];
    for s in ["s0", "s1", "s2"] {
        expected.push(format!("{s}.loss_cls"));
        expected.push(format!("{s}.loss_bbox"));
        if kinds.contains(&"segm") {
            expected.push(format!("{s}.loss_mask"));
        }
    }
    assert_eq!(names, expected);
    let val = log_lines(&full, "val");
    assert_eq!(val.len(), 2);
    for k in kinds {
        assert_eq!(val[1]["stats"][k].as_array().unwrap().len(), 12, "{k}");
    }

    let part = dir.join("part");
    ok(&train(cfg, &part, &["--max-iters", "2"], &tiny(dir, &with_eval)));
    ok(&train(cfg, &part, &["--resume"], &tiny(dir, &with_eval)));
    let resumed = log_lines(&part, "train");
    assert_eq!(resumed.len(), 4);
    for (a, b) in resumed.iter().zip(&train_lines) {
        assert_eq!(
            a["loss"].as_f64(),
            b["loss"].as_f64(),
            "iteration {}",
            a["global_iter"]
        );
    }

    let out = run_with_overrides(
        vec![
            "test".into(),
            cfg.into(),
            full.display().to_string(),
            "--json".into(),
        ],
        &tiny(dir, extra),
    );
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for k in kinds {
        assert_eq!(v[k]["stats"][0], val[1]["stats"][k][0], "{k}");
    }

    let image = dir
        .join("data/val")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dets = dir.join("infer.json");
    ok(&run_with_overrides(
        vec![
            "infer".into(),
            cfg.into(),
            full.display().to_string(),
            image.display().to_string(),
            "--score-thr".into(),
            "0".into(),
            "--out".into(),
            dets.display().to_string(),
        ],
        &tiny(dir, extra),
    ));
    let infer: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&dets).unwrap()).unwrap();
    assert_eq!(infer.as_array().unwrap().len(), 1);
}

#[test]
fn cascade_rcnn_trains_resumes_exactly_tests_and_infers() {
    let tmp = TempDir::new("cascade-rcnn-e2e");
    let dir = tmp.path();
    synth_dataset(dir, 4, 2, 64, 5);
    let cfg = config_path("cascade_rcnn/cascade_rcnn_r18_fpn_synth_demo.json");
    trains_resumes_tests_and_infers(&cfg, dir, &[], &["bbox"]);
}

/// Cascade Mask R-CNN: the demo config with a mask branch (a tiny mask head per stage).
#[test]
fn cascade_mask_rcnn_trains_resumes_exactly_tests_and_infers() {
    let tmp = TempDir::new("cascade-mask-rcnn-e2e");
    let dir = tmp.path();
    synth_dataset(dir, 4, 2, 64, 9);
    let cfg = dir.join("cascade_mask_demo.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "_base_": config_path("cascade_rcnn/cascade_rcnn_r18_fpn_synth_demo.json"),
            "model": {"roi_head": {
                "mask_roi_extractor": {
                    "output_size": [14, 14], "sampling_ratio": 0, "aligned": true,
                    "featmap_strides": [4, 8, 16, 32], "mapping": {"type": "mmdet", "finest_scale": 56}
                },
                "mask_head": {
                    "num_convs": 1, "in_channels": 16, "conv_out_channels": 16, "roi_feat_size": 14,
                    "num_classes": 5, "mask_thr_binary": 0.5
                }
            }},
            "evaluation": {"metric": ["bbox", "segm"]},
        })
        .to_string(),
    )
    .unwrap();
    trains_resumes_tests_and_infers(cfg.to_str().unwrap(), dir, &[], &["bbox", "segm"]);
}
