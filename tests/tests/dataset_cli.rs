//! `attndet dataset synth|stats`: a generated dataset is deterministic, valid, and described by `stats`.

use attndet_tests::{TempDir, run};

#[test]
fn synth_is_deterministic_and_stats_describe_it() {
    let dir = TempDir::new("dataset-synth");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let o = run(&[
            "dataset",
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--train",
            "6",
            "--val",
            "2",
            "--size",
            "96",
            "--seed",
            "3",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let ann = a.join("annotations/instances_train.json");
    assert_eq!(
        std::fs::read(&ann).unwrap(),
        std::fs::read(b.join("annotations/instances_train.json")).unwrap()
    );
    assert_eq!(
        std::fs::read(a.join("val/000002.png")).unwrap(),
        std::fs::read(b.join("val/000002.png")).unwrap()
    );

    let o = run(&["dataset", "stats", ann.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"], 6);
    assert_eq!(v["categories"], 5);
    assert_eq!(v["crowd"], 0);
    let n = v["annotations"].as_u64().unwrap();
    assert!(n >= 6, "at least one object per image");
    let sizes = &v["sizes"];
    assert_eq!(
        sizes["small"].as_u64().unwrap()
            + sizes["medium"].as_u64().unwrap()
            + sizes["large"].as_u64().unwrap(),
        n
    );
    let per_cat: u64 = v["per_category"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["instances"].as_u64().unwrap())
        .sum();
    assert_eq!(per_cat, n);

    let o = run(&["dataset", "stats", ann.to_str().unwrap()]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("6 images (0 without annotations)") && text.contains("circle"),
        "{text}"
    );
}

#[test]
fn empty_dataset_stats_and_bad_inputs() {
    let dir = TempDir::new("dataset-empty");
    let ann = dir.path().join("empty.json");
    std::fs::write(
        &ann,
        r#"{"images": [{"id": 1, "width": 4, "height": 4}], "categories": []}"#,
    )
    .unwrap();
    let o = run(&["dataset", "stats", ann.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images_without_annotations"], 1);
    assert_eq!(v["annotations"], 0);

    let o = run(&[
        "dataset",
        "synth",
        "--out",
        dir.path().join("s").to_str().unwrap(),
        "--size",
        "8",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("size: 8 is too small"));

    let o = run(&["dataset", "stats", "/nonexistent/ann.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/ann.json: cannot read"));
}

#[test]
fn browse_draws_annotated_copies() {
    let dir = TempDir::new("dataset-browse");
    let data = dir.path().join("data");
    let o = run(&[
        "dataset",
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--train",
        "3",
        "--val",
        "0",
        "--size",
        "64",
    ]);
    assert!(o.status.success());
    let ann = data.join("annotations/instances_train.json");
    let out = dir.path().join("drawn");
    let images = data.join("train");
    let (ann_s, images_s, out_s) = (
        ann.to_str().unwrap(),
        images.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let o = run(&[
        "dataset", "browse", ann_s, "--images", images_s, "--out", out_s, "--limit", "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let drawn: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(drawn.len(), 2);
    let original = std::fs::read(data.join("train/000001.png")).unwrap();
    let annotated = std::fs::read(out.join("000001.png")).unwrap();
    assert_ne!(original, annotated, "boxes and masks were drawn");

    // Images missing: exit 2 naming the file.
    let o = run(&[
        "dataset",
        "browse",
        ann.to_str().unwrap(),
        "--images",
        "/nonexistent",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/000001.png: cannot read image 1"));
}
