//! Faster R-CNN (and the RPN alone) end to end through the binary on a tiny synthetic set: training a few
//! iterations with evaluation, exact resume, `test` (bbox, and proposal recall for the RPN), `infer` with
//! drawn images, and bad-input errors naming the field.

use std::path::Path;

use attndet_tests::{TempDir, config_path, log_lines, run, synth_dataset, train};

fn config(name: &str) -> String {
    config_path(name)
}

/// Overrides that point the demo config at `dir/data` and shrink the model and the schedule.
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
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

#[test]
fn faster_rcnn_trains_resumes_exactly_tests_and_infers() {
    let tmp = TempDir::new("faster-rcnn-e2e");
    let dir = tmp.path();
    synth_dataset(dir, 4, 2, 64, 5);
    let cfg = config("faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json");
    let head = [
        "model.roi_head.bbox_head.in_channels=16",
        "model.roi_head.bbox_head.fc_out_channels=32",
    ];
    let mut extra = vec!["evaluation.interval=1"];
    extra.extend(head);
    let full = dir.join("full");
    let out = train(&cfg, &full, &[], &tiny(dir, &extra));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let train_lines = log_lines(&full, "train");
    assert_eq!(train_lines.len(), 4, "2 epochs of 2 iterations");
    let names: Vec<&str> = train_lines[0]["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"]);
    let val = log_lines(&full, "val");
    assert_eq!(val.len(), 2);
    assert_eq!(val[1]["stats"]["bbox"].as_array().unwrap().len(), 12);

    // resume from epoch 1: the second epoch's losses are those of the uninterrupted run, exactly
    let part = dir.join("part");
    let out = train(&cfg, &part, &["--max-iters", "2"], &tiny(dir, &extra));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = train(&cfg, &part, &["--resume"], &tiny(dir, &extra));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let loss = |v: &serde_json::Value| v["loss"].as_f64().unwrap();
    let resumed = log_lines(&part, "train");
    assert_eq!(resumed.len(), 4);
    for (a, b) in resumed.iter().zip(&train_lines) {
        assert_eq!(loss(a), loss(b), "iteration {}", a["global_iter"]);
    }

    // test: bbox JSON and a results file; infer: JSON and drawn images
    let results = dir.join("dets.json");
    let mut args: Vec<String> = vec![
        "test".into(),
        cfg.clone(),
        full.display().to_string(),
        "--json".into(),
        "--out".into(),
        results.display().to_string(),
        "--cfg-options".into(),
    ];
    args.extend(tiny(dir, &head));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["bbox"]["stats"].as_array().unwrap().len(), 12);
    assert_eq!(v["bbox"]["stats"][0], val[1]["stats"]["bbox"][0]);
    assert!(results.exists());

    let shown = dir.join("shown");
    let image = dir
        .join("data/val")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut args: Vec<String> = vec![
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
        "--cfg-options".into(),
    ];
    args.extend(tiny(dir, &head));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(shown.join(image.file_name().unwrap()).exists());
    let infer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("infer.json")).unwrap()).unwrap();
    assert_eq!(infer.as_array().unwrap().len(), 1);
}

#[test]
fn rpn_alone_trains_and_reports_proposal_recall() {
    let tmp = TempDir::new("rpn-e2e");
    let dir = tmp.path();
    synth_dataset(dir, 4, 2, 64, 5);
    // the RPN base model on the demo's data, shrunk like the Faster R-CNN demo
    let base = |p: &str| config(p);
    let rpn_cfg = dir.join("rpn_demo.json");
    std::fs::write(
        &rpn_cfg,
        serde_json::json!({
            "_base_": [
                base("_base_/models/rpn_r50_fpn.json"),
                base("_base_/datasets/synth_shapes.json"),
                base("_base_/schedules/schedule_1x.json"),
                base("_base_/default_runtime.json"),
            ],
            "model": {
                "backbone": {"name": "resnet18", "frozen_stages": -1, "norm_eval": false},
                "neck": {"num_outs": 4},
                "rpn_head": {"anchor_generator": {"scales": [4], "strides": [4, 8, 16, 32]}},
            },
            "optimizer": {"_delete_": true, "type": "AdamW", "lr": 0.001, "weight_decay": 0.05},
            "evaluation": {"metric": ["proposal"], "save_best": "proposal_AR@1000"},
        })
        .to_string(),
    )
    .unwrap();
    let work = dir.join("rpn");
    let out = train(
        rpn_cfg.to_str().unwrap(),
        &work,
        &[],
        &tiny(dir, &["evaluation.interval=1", "runner.max_epochs=1"]),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let val = log_lines(&work, "val");
    assert_eq!(val[0]["stats"]["proposal"].as_array().unwrap().len(), 6);
    assert!(work.join("best/state.json").exists());
}

#[test]
fn bad_faster_rcnn_configs_name_the_field() {
    let tmp = TempDir::new("faster-rcnn-bad");
    let dir = tmp.path();
    synth_dataset(dir, 4, 2, 64, 5);
    let cfg = config("faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json");
    for (o, field) in [
        ("model.roi_head.type=\"DoubleHead\"", "model.roi_head"),
        ("model.roi_head.bbox_head.fc_out=3", "fc_out"),
        (
            "model.rpn_head.anchor_generator.strides=[4, 8, 16]",
            "model.rpn_head.anchor_generator.strides",
        ),
        ("evaluation.save_best=\"segm_mAP\"", "evaluation.save_best"),
    ] {
        // the RoI head at the shrunk FPN's width, so that only `o` is wrong
        let fit = "model.roi_head.bbox_head.in_channels=16";
        let out = train(&cfg, &dir.join("w"), &["--max-iters", "1"], &tiny(dir, &[fit, o]));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{o}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{o}: {err}");
    }
}
