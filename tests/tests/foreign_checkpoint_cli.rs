//! Whole mmdetection and torchvision detector checkpoints through the binary: `convert --config` to a
//! checkpoint directory, `test` and `infer` on that directory and on the `.pth` itself (same detections), and
//! exit 2 with the keys named for a broken file, a file of the other layout than the config's and another class
//! count.
//!
//! Fixtures: `python3 detectors/scripts/make_detector_checkpoints.py detectors/tests/fixtures/foreign`.

use std::path::{Path, PathBuf};

use attndet_tests::{TempDir, run, synth_dataset, workspace_root};

fn config(name: &str) -> String {
    workspace_root().join("configs").join(name).display().to_string()
}

fn fixture(name: &str) -> String {
    workspace_root()
        .join("detectors/tests/fixtures/foreign")
        .join(name)
        .display()
        .to_string()
}

/// The fixture script's sizes, and the data of `dir`.
fn overrides(dir: &Path, retina: bool) -> Vec<String> {
    let mut o = vec![
        format!(
            "data.data_root={}",
            serde_json::Value::String(dir.join("data").display().to_string())
        ),
        "data.pipeline.img_scale=[64, 64]".to_string(),
        "model.neck.out_channels=16".to_string(),
    ];
    let head: &[&str] = if retina {
        &[
            "model.bbox_head.feat_channels=16",
            "model.bbox_head.num_classes=3",
        ]
    } else {
        &[
            "model.rpn_head.feat_channels=16",
            "model.roi_head.bbox_head.in_channels=16",
            "model.roi_head.bbox_head.fc_out_channels=32",
            "model.roi_head.bbox_head.num_classes=3",
        ]
    };
    o.extend(head.iter().map(|s| s.to_string()));
    o
}

fn run_with(args: &[&str], overrides: &[String]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--cfg-options");
    all.extend(overrides.iter().map(String::as_str));
    run(&all)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn detections(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn converted_mmdet_checkpoints_test_and_infer_like_the_pth() {
    let tmp = TempDir::new("foreign-ckpt");
    let dir = tmp.path();
    synth_dataset(dir, 1, 2, 64, 5);
    let image: PathBuf = dir.join("data/val/000001.png");
    for (cfg, pth, retina) in [
        (
            "faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json",
            "faster_rcnn_r18_tiny.pth",
            false,
        ),
        (
            "retinanet/retinanet_r18_fpn_synth_demo.json",
            "retinanet_r18_tiny.pth",
            true,
        ),
    ] {
        let cfg = config(cfg);
        let o = overrides(dir, retina);
        let conv = dir.join(format!("conv-{retina}"));
        let out = run_with(
            &[
                "convert",
                "--config",
                &cfg,
                "--from",
                &fixture(pth),
                "--out",
                conv.to_str().unwrap(),
            ],
            &o,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(conv.join("state.json").is_file() && conv.join("model.mpk").is_file());

        let out = run_with(&["test", &cfg, conv.to_str().unwrap(), "--json"], &o);
        assert!(out.status.success(), "{}", stderr(&out));
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(stats["bbox"]["stats"].as_array().unwrap().len(), 12, "{stats}");
        assert_eq!(stats["images"], 2, "{stats}");

        let from_dir = dir.join(format!("dir-{retina}.json"));
        let from_pth = dir.join(format!("pth-{retina}.json"));
        for (ckpt, json) in [(conv.display().to_string(), &from_dir), (fixture(pth), &from_pth)] {
            let out = run_with(
                &[
                    "infer",
                    &cfg,
                    &ckpt,
                    image.to_str().unwrap(),
                    "--out",
                    json.to_str().unwrap(),
                ],
                &o,
            );
            assert!(out.status.success(), "{}", stderr(&out));
        }
        assert_eq!(detections(&from_dir), detections(&from_pth));
    }
}

#[test]
fn bad_mmdet_checkpoints_exit_2_naming_the_keys() {
    let tmp = TempDir::new("foreign-ckpt-bad");
    let dir = tmp.path();
    synth_dataset(dir, 1, 2, 64, 5);
    let cfg = config("faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json");
    let o = overrides(dir, false);

    let out = run_with(&["test", &cfg, &fixture("faster_rcnn_r18_tiny_broken.pth")], &o);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for key in [
        "roi_head.bbox_head.shared_fcs.1.bias",
        "roi_head.bbox_head.fc_extra.weight",
        "neck.fpn_convs.2.conv.weight: model [16, 16, 3, 3], checkpoint [16, 16, 1, 1]",
    ] {
        assert!(err.contains(key), "{err}");
    }

    let out = run_with(&["test", &cfg, &fixture("torchvision_faster_rcnn_keys.pth")], &o);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("torchvision"), "{}", stderr(&out));

    let mut more = o.clone();
    more.push("model.roi_head.bbox_head.num_classes=80".into());
    let conv = dir.join("conv");
    let out = run_with(
        &[
            "convert",
            "--config",
            &cfg,
            "--from",
            &fixture("faster_rcnn_r18_tiny.pth"),
            "--out",
            conv.to_str().unwrap(),
        ],
        &more,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("roi_head.bbox_head.fc_cls.weight")
            && err.contains("3 classes")
            && err.contains("80 classes"),
        "{err}"
    );
    assert!(!conv.exists());
}

#[test]
fn torchvision_checkpoints_load_into_torchvision_layout_configs_only() {
    let tmp = TempDir::new("foreign-ckpt-tv");
    let dir = tmp.path();
    synth_dataset(dir, 1, 2, 64, 5);
    let image: PathBuf = dir.join("data/val/000001.png");
    let cfg = config("faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json");
    let mut tv = overrides(dir, false);
    tv.push("model.layout=torchvision".into());
    let tv_pth = fixture("torchvision_faster_rcnn_r18_tiny.pth");

    // convert, then infer on the directory and on the .pth: the same detections
    let conv = dir.join("conv-tv");
    let out = run_with(
        &[
            "convert",
            "--config",
            &cfg,
            "--from",
            &tv_pth,
            "--out",
            conv.to_str().unwrap(),
        ],
        &tv,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (from_dir, from_pth) = (dir.join("dir.json"), dir.join("pth.json"));
    for (ckpt, json) in [
        (conv.display().to_string(), &from_dir),
        (tv_pth.clone(), &from_pth),
    ] {
        let out = run_with(
            &[
                "infer",
                &cfg,
                &ckpt,
                image.to_str().unwrap(),
                "--out",
                json.to_str().unwrap(),
            ],
            &tv,
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(detections(&from_dir), detections(&from_pth));

    // an mmdetection checkpoint for the torchvision-layout config, and the torchvision one for the
    // mmdetection config: exit 2, naming a key of the file
    let out = run_with(&["test", &cfg, &fixture("faster_rcnn_r18_tiny.pth")], &tv);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("mmdetection detector (key `backbone.bn1.bias`)"),
        "{err}"
    );
    let out = run_with(
        &["infer", &cfg, &tv_pth, image.to_str().unwrap()],
        &overrides(dir, false),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("torchvision detector (key `backbone.body."), "{err}");
}

/// Mask R-CNN checkpoints of both layouts through the binary: `convert`, then `infer` on the directory and on
/// the `.pth` (the same detections, masks included); a torchvision file for a config with a third mask conv
/// exits 2 naming the missing keys in torchvision's terms.
#[test]
fn mask_rcnn_checkpoints_of_both_layouts_convert_and_infer() {
    let tmp = TempDir::new("foreign-ckpt-mask");
    let dir = tmp.path();
    synth_dataset(dir, 1, 2, 64, 5);
    let image: PathBuf = dir.join("data/val/000001.png");
    let cfg = config("mask_rcnn/mask_rcnn_r18_fpn_synth_demo.json");
    let mut mask = overrides(dir, false);
    mask.extend(
        [
            "model.roi_head.mask_head.in_channels=16",
            "model.roi_head.mask_head.conv_out_channels=16",
            "model.roi_head.mask_head.num_classes=3",
        ]
        .map(String::from),
    );
    let mut tv = mask.clone();
    tv.push("model.layout=torchvision".into());
    for (pth, o, name) in [
        ("mask_rcnn_r18_tiny.pth", &mask, "mmdet"),
        ("torchvision_mask_rcnn_r18_tiny.pth", &tv, "tv"),
    ] {
        let conv = dir.join(format!("conv-{name}"));
        let out = run_with(
            &[
                "convert",
                "--config",
                &cfg,
                "--from",
                &fixture(pth),
                "--out",
                conv.to_str().unwrap(),
            ],
            o,
        );
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let (from_dir, from_pth) = (
            dir.join(format!("dir-{name}.json")),
            dir.join(format!("pth-{name}.json")),
        );
        for (ckpt, json) in [(conv.display().to_string(), &from_dir), (fixture(pth), &from_pth)] {
            let out = run_with(
                &[
                    "infer",
                    &cfg,
                    &ckpt,
                    image.to_str().unwrap(),
                    "--out",
                    json.to_str().unwrap(),
                ],
                o,
            );
            assert!(out.status.success(), "{name}: {}", stderr(&out));
        }
        assert_eq!(detections(&from_dir), detections(&from_pth), "{name}");
    }

    let mut three = tv.clone();
    three.push("model.roi_head.mask_head.num_convs=3".into());
    let out = run_with(
        &[
            "infer",
            &cfg,
            &fixture("torchvision_mask_rcnn_r18_tiny.pth"),
            image.to_str().unwrap(),
        ],
        &three,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("roi_heads.mask_head.2.0.weight") && err.contains("roi_heads.mask_head.2.0.bias"),
        "{err}"
    );
}
