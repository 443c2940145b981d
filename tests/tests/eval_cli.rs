//! `attndet eval`: the real fixture reproduces pycocotools' stats exactly, and every bad input exits 2 with a
//! message naming the file and the problem.

use attndet_tests::{TempDir, run, shared_coco_fixtures};

fn fixture(name: &str) -> String {
    shared_coco_fixtures().join(name).display().to_string()
}

fn expected(iou: &str) -> Vec<f64> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected_stats.json")).unwrap()).unwrap();
    v[iou]["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn eval_json(results: &str, iou: &str, extra: &[&str]) -> serde_json::Value {
    let gt = fixture("instances_val2014_100.json");
    let mut args = vec![
        "eval",
        "--ann",
        &gt,
        "--results",
        results,
        "--iou-type",
        iou,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn json_stats_match_pycocotools_for_bbox_and_segm() {
    for (iou, res) in [
        ("bbox", "instances_val2014_fakebbox100_results.json"),
        ("segm", "instances_val2014_fakesegm100_results.json"),
    ] {
        let v = eval_json(&fixture(res), iou, &["--per-class"]);
        let stats: Vec<f64> = v["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(stats, expected(iou), "{iou}");
        assert_eq!(v["AP"].as_f64(), Some(expected(iou)[0]));
        assert_eq!(v["ARl"].as_f64(), Some(expected(iou)[11]));
        // 80 categories; those without ground truth in these 100 images have AP null (NaN).
        let per_class = v["per_class"].as_array().unwrap();
        assert_eq!(per_class.len(), 80);
        assert_eq!(per_class[0]["name"], "person");
    }
}

#[test]
fn table_has_twelve_lines() {
    let gt = fixture("instances_val2014_100.json");
    let res = fixture("instances_val2014_fakebbox100_results.json");
    let out = run(&["eval", "--ann", &gt, "--results", &res]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(
        lines[0],
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.505"
    );
    assert_eq!(
        lines[11],
        " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = 0.564"
    );
}

#[test]
fn empty_results_give_zero_ap() {
    let dir = TempDir::new("eval-empty");
    let res = dir.path().join("empty.json");
    std::fs::write(&res, "[]").unwrap();
    let v = eval_json(res.to_str().unwrap(), "bbox", &[]);
    assert_eq!(v["AP"].as_f64(), Some(0.0));
}

/// Run eval on a results file with `content`; expect exit code 2 and `needle` in stderr.
fn expect_bad(name: &str, content: &str, iou: &str, needle: &str) {
    let dir = TempDir::new(name);
    let res = dir.path().join("results.json");
    std::fs::write(&res, content).unwrap();
    let gt = fixture("instances_val2014_100.json");
    let out = run(&[
        "eval",
        "--ann",
        &gt,
        "--results",
        res.to_str().unwrap(),
        "--iou-type",
        iou,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    assert!(err.contains(needle), "{name}: expected `{needle}` in: {err}");
    assert!(
        err.contains("results.json"),
        "{name}: the message names the file: {err}"
    );
}

#[test]
fn bad_results_exit_2_with_clear_messages() {
    expect_bad(
        "eval-unknown-image",
        r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]"#,
        "bbox",
        "[0].image_id: image 1 is not in the ground truth",
    );
    expect_bad(
        "eval-score",
        r#"[{"image_id": 42, "category_id": 18, "bbox": [0, 0, 1, 1], "score": 0.5},
            {"image_id": 42, "category_id": 18, "bbox": [0, 0, 1, 1], "score": "high"}]"#,
        "bbox",
        "[1].score: \"high\" is not a number",
    );
    expect_bad(
        "eval-rle",
        r#"[{"image_id": 42, "category_id": 18, "segmentation": {"size": [478, 640], "counts": "0 z"}, "score": 0.5}]"#,
        "segm",
        "[0].segmentation: malformed compressed RLE string",
    );
    expect_bad(
        "eval-rle-sum",
        r#"[{"image_id": 42, "category_id": 18, "segmentation": {"size": [2, 2], "counts": [1, 2]}, "score": 0.5}]"#,
        "segm",
        "[0].segmentation: RLE counts sum to 3 but the mask has h*w = 4 pixels",
    );
    expect_bad(
        "eval-bbox",
        r#"[{"image_id": 42, "category_id": 18, "bbox": [0, 0, 1], "score": 0.5}]"#,
        "bbox",
        "[0].bbox: expected 4 numbers",
    );
    expect_bad(
        "eval-not-json",
        "[{\"image_id\": 42",
        "bbox",
        "EOF while parsing an object at line 1 column 16",
    );
}

#[test]
fn bad_ground_truth_and_arguments_exit_2() {
    let res = fixture("instances_val2014_fakebbox100_results.json");
    let out = run(&["eval", "--ann", "/nonexistent/gt.json", "--results", &res]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gt.json: cannot read"));

    let gt = fixture("instances_val2014_100.json");
    let out = run(&["eval", "--ann", &gt, "--results", &res, "--iou-type", "keypoints"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'keypoints' for '--iou-type"));

    let dir = TempDir::new("eval-bad-gt");
    let bad_gt = dir.path().join("gt.json");
    std::fs::write(
        &bad_gt,
        r#"{"images": [{"id": 1, "width": 10, "height": 10}], "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "area": 1, "iscrowd": 0}]}"#,
    )
    .unwrap();
    let out = run(&["eval", "--ann", bad_gt.to_str().unwrap(), "--results", &res]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("gt.json: annotations[0] (id 3).bbox: expected 4 numbers")
    );
}

#[test]
fn invalid_ground_truth_entries_exit_2_naming_them() {
    let res = fixture("instances_val2014_fakebbox100_results.json");
    let ann = |extra: &str| {
        format!(
            r#"{{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0{extra}}}"#
        )
    };
    let dataset = |images: &str, anns: &str| {
        format!(
            r#"{{"images": [{images}], "categories": [{{"id": 1, "name": "a"}}], "annotations": [{anns}]}}"#
        )
    };
    let img = r#"{"id": 1, "width": 4, "height": 4}"#;
    let cases = [
        (
            dataset(&format!("{img}, {img}"), ""),
            "gt.json: images[1]: duplicate image id 1 (also images[0])",
        ),
        (
            dataset(img, &format!("{}, {}", ann(""), ann(""))),
            "gt.json: annotations[1] (id 7): duplicate annotation id 7 (also annotations[0])",
        ),
        (
            dataset(
                img,
                &ann("").replace(r#""category_id": 1"#, r#""category_id": 3"#),
            ),
            "gt.json: annotations[0] (id 7).category_id: category 3 is not in categories",
        ),
        (
            dataset(img, &ann(r#", "segmentation": [[0, 0, 1, 1]]"#)),
            "gt.json: annotations[0] (id 7).segmentation: polygon 0 has 4 coordinates",
        ),
        (
            dataset(
                img,
                &ann(r#", "segmentation": {"size": [4, 4], "counts": [3, 4]}"#),
            ),
            "gt.json: annotations[0] (id 7).segmentation: RLE counts sum to 7 but the mask has h*w = 16 pixels",
        ),
    ];
    let dir = TempDir::new("eval-gt-entries");
    let gt = dir.path().join("gt.json");
    for (content, needle) in cases {
        std::fs::write(&gt, content).unwrap();
        let out = run(&["eval", "--ann", gt.to_str().unwrap(), "--results", &res]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    }
}
