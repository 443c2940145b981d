//! `attndet models` and `attndet analyze confusion|errors`: happy paths, their JSON, their figures, and bad
//! input exiting 2.

use attndet_tests::{TempDir, run, shared_coco_fixtures, workspace_root};

fn fixture(name: &str) -> String {
    shared_coco_fixtures().join(name).display().to_string()
}

/// Any full config: the analysis tools read only its val split, replaced here by `--ann`.
fn config() -> String {
    workspace_root()
        .join("configs/retinanet/retinanet_r50_fpn_1x_coco.json")
        .display()
        .to_string()
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn png_size(path: &std::path::Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn models_lists_the_zoo_with_parameters() {
    let configs = workspace_root().join("configs");
    let v = json_of(&[
        "models",
        "--configs",
        configs.to_str().unwrap(),
        "--filter",
        "synth_demo",
        "--json",
    ]);
    // the filter applies to backbone names too: none contains it
    assert_eq!(v["backbones"].as_array().unwrap().len(), 0);
    let dets = v["detectors"].as_array().unwrap();
    let kinds: Vec<&str> = dets.iter().map(|d| d["detector"].as_str().unwrap()).collect();
    // one synthetic demo config per detector type, ordered by path
    assert_eq!(kinds, ["CascadeRCNN", "FasterRCNN", "MaskRCNN", "RetinaNet"]);
    // the same count as `attndet flops CONFIG`
    for d in dets {
        let flops = json_of(&["flops", d["config"].as_str().unwrap(), "--json"]);
        assert_eq!(d["params"], flops["params"]);
        assert_eq!(d["flops"], flops["flops"]);
        assert_eq!(d["backbone"], "resnet18");
    }

    let v = json_of(&["models", "--backbones-only", "--json"]);
    let bbs = v["backbones"].as_array().unwrap();
    let get = |name: &str| {
        bbs.iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    // torchvision resnet50 / senet.pytorch se_resnet50: sum(p.numel()) = 25_557_032 / 28_088_024
    assert_eq!(get("resnet50")["params"], 25_557_032);
    assert_eq!(get("se_resnet50")["params"], 28_088_024);
    assert_eq!(get("mobilenet_v2")["family"], "MobileNetV2");
    assert!(bbs.len() > 80, "{}", bbs.len());

    let out = run(&["models", "--backbones-only"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dca_se_resnet50"), "{text}");

    let out = run(&["models", "--configs", "/nonexistent/configs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--configs /nonexistent/configs"));
}

#[test]
fn error_breakdown_matches_pycocotools() {
    // tools/tests/fixtures/error_analysis_bbox.json: `python3 tools/scripts/error_analysis_fixture.py` (its
    // docstring has the command) on the shared 100-image fixture.
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("tools/tests/fixtures/error_analysis_bbox.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = TempDir::new("analyze-errors");
    let out_dir = dir.path().join("errors");
    let v = json_of(&[
        "analyze",
        "errors",
        &config(),
        &fixture("instances_val2014_fakebbox100_results.json"),
        "--ann",
        &fixture("instances_val2014_100.json"),
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    let types = ["C75", "C50", "Loc", "Sim", "Oth", "BG", "FN"];
    let close = |a: &serde_json::Value, b: &serde_json::Value, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() < 1e-12, "{what}: {a} vs {b}");
    };
    let cats = v["per_category"].as_array().unwrap();
    let ref_cats = expected["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 80);
    for (c, r) in cats.iter().zip(ref_cats) {
        assert_eq!(c["id"], r["id"]);
        for (t, name) in types.iter().enumerate() {
            for a in 0..4 {
                close(
                    &c[name][a],
                    &r["ap"][a][t],
                    &format!("{} {name} area {a}", r["name"]),
                );
            }
        }
    }
    for (t, name) in types.iter().enumerate() {
        for a in 0..4 {
            close(&v["overall"][name][a], &expected["allclass"]["ap"][a][t], name);
        }
        for r in 0..101 {
            close(
                &v["overall_curve"][name][r],
                &expected["allclass"]["curves_all"][t][r],
                name,
            );
        }
    }
    // the overall figure and one per category
    let figures = v["figures"].as_array().unwrap();
    assert_eq!(figures.len(), 81);
    let (w, h) = png_size(&out_dir.join("bbox/allclass.png"));
    assert!(w > 1000 && h > 700, "{w}x{h}");
    assert!(out_dir.join("bbox/baseball_bat.png").exists());

    // the table: one row per category and the overall one
    let out = run(&[
        "analyze",
        "errors",
        &config(),
        &fixture("instances_val2014_fakebbox100_results.json"),
        "--ann",
        &fixture("instances_val2014_100.json"),
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--overall-only",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text
        .lines()
        .find(|l| l.starts_with("overall"))
        .expect("overall row");
    let c75 = expected["allclass"]["ap"][0][0].as_f64().unwrap();
    assert!(overall.contains(&format!("{c75:.3}")), "{overall}");
}

/// Two images, classes a and b; the matrix is worked out by hand in the comments.
#[test]
fn confusion_matrix_of_a_small_case() {
    let dir = TempDir::new("analyze-confusion");
    let gt = dir.path().join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images": [{"id": 1, "width": 64, "height": 64, "file_name": "1.png"},
                       {"id": 2, "width": 64, "height": 64, "file_name": "2.png"}],
            "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
            "annotations": [
              {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 30, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 3, "image_id": 2, "category_id": 7, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}]}"#,
    )
    .unwrap();
    let res = dir.path().join("results.json");
    // image 1: a on a (a->a), b on b (b->b); image 2: a on b (b->a), a at 0.2 (under the threshold);
    // a in the corner of image 2 overlapping nothing (background->a); b in image 2 is overlapped by no b,
    // so it is also missed (b->background).
    std::fs::write(
        &res,
        r#"[{"image_id": 1, "category_id": 3, "bbox": [1, 1, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 7, "bbox": [30, 30, 20, 20], "score": 0.8},
            {"image_id": 2, "category_id": 3, "bbox": [10, 10, 30, 28], "score": 0.7},
            {"image_id": 2, "category_id": 3, "bbox": [10, 10, 30, 30], "score": 0.2},
            {"image_id": 2, "category_id": 3, "bbox": [50, 50, 10, 10], "score": 0.6}]"#,
    )
    .unwrap();
    let png = dir.path().join("cm.png");
    let args = [
        "analyze",
        "confusion",
        &config(),
        res.to_str().unwrap(),
        "--ann",
        gt.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ];
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let v = json_of(&with_json);
    assert_eq!(v["classes"], serde_json::json!(["a", "b", "background"]));
    assert_eq!(v["matrix"], serde_json::json!([[1, 0, 0], [1, 1, 1], [1, 0, 0]]));
    // row b: 1 of 3 in each column
    assert!((v["normalized"][1][0].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
    // the background row: its one false positive
    assert_eq!(v["normalized"][2][0], 100.0);
    let (w, h) = png_size(&png);
    assert!(w > 200 && h > 200, "{w}x{h}");

    // the table
    let out = run(&args);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["b", "1", "1", "1"]),
        "{text}"
    );

    // bad thresholds and a results file naming an unknown image exit 2
    let mut bad = args.to_vec();
    bad.extend(["--score-thr", "1.5"]);
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--score-thr 1.5"));
    std::fs::write(
        &res,
        r#"[{"image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.9}]"#,
    )
    .unwrap();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("image 9 is not in the ground truth"));
}

/// Four images: one found exactly (AP 1), one found at IoU 0.62 (matched at IoU thresholds .50, .55 and .60
/// of ten: AP 0.3), one missed (AP 0), one without ground truth (not ranked).
#[test]
fn best_and_worst_images_by_per_image_ap() {
    let dir = TempDir::new("analyze-results");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 1..=4 {
        image::RgbImage::from_pixel(40, 40, image::Rgb([90, 120, 150]))
            .save(images.join(format!("{i}.png")))
            .unwrap();
    }
    let gt = dir.path().join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images": [{"id": 1, "width": 40, "height": 40, "file_name": "1.png"},
                       {"id": 2, "width": 40, "height": 40, "file_name": "2.png"},
                       {"id": 3, "width": 40, "height": 40, "file_name": "3.png"},
                       {"id": 4, "width": 40, "height": 40, "file_name": "4.png"}],
            "categories": [{"id": 1, "name": "box"}],
            "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0},
              {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
              {"id": 3, "image_id": 3, "category_id": 1, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0}]}"#,
    )
    .unwrap();
    let res = dir.path().join("results.json");
    std::fs::write(
        &res,
        r#"[{"image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 6.2], "score": 0.8},
            {"image_id": 4, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.7}]"#,
    )
    .unwrap();
    let out_dir = dir.path().join("analysis");
    let v = json_of(&[
        "analyze",
        "results",
        &config(),
        res.to_str().unwrap(),
        "--ann",
        gt.to_str().unwrap(),
        "--img-dir",
        images.to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--topk",
        "2",
        "--json",
    ]);
    assert_eq!(v["ranked"], 3);
    let ids = |group: &str| -> Vec<(u64, f64)> {
        v[group]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["image_id"].as_u64().unwrap(), r["ap"].as_f64().unwrap()))
            .collect()
    };
    let best = ids("best");
    let worst = ids("worst");
    assert_eq!(best.iter().map(|b| b.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(worst.iter().map(|b| b.0).collect::<Vec<_>>(), [3, 2]);
    assert!((best[0].1 - 1.0).abs() < 1e-12 && (best[1].1 - 0.3).abs() < 1e-12 && worst[0].1 == 0.0);
    // ground truth and predictions side by side: twice the (enlarged) width plus the gap
    let drawing = v["best"][0]["drawing"].as_str().unwrap();
    let img = image::open(drawing).unwrap();
    assert!(
        img.width() > 2 * img.height() - 60,
        "{}x{}",
        img.width(),
        img.height()
    );
    assert!(out_dir.join("worst").read_dir().unwrap().count() == 2);

    let out = run(&[
        "analyze",
        "results",
        &config(),
        res.to_str().unwrap(),
        "--ann",
        gt.to_str().unwrap(),
        "--img-dir",
        dir.path().join("missing").to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1.png"));
}
