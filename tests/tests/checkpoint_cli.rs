//! Checkpoints that know themselves, through the binary: `test` and `infer` from a checkpoint alone, a config
//! that disagrees with the checkpoint's (error or warning, both values named), `max_keep_ckpts`, resume
//! reporting, a reused work dir, `infer` on directories and globs with colliding names, unreadable val images
//! with `skip_bad_images`, a box outside its image, and the one JSON shape of the COCO stats.

use std::path::{Path, PathBuf};
use std::process::Output;

use attndet_tests::{TempDir, run, synth_dataset, workspace_root};
use serde_json::Value;

fn demo_config() -> String {
    workspace_root()
        .join("configs/retinanet/retinanet_r18_fpn_synth_demo.json")
        .display()
        .to_string()
}

/// The demo config pointed at `dir/data`, with a tiny model and schedule (3 epochs of 2 iterations,
/// evaluation and the best checkpoint after each epoch).
fn tiny(dir: &Path, extra: &[&str]) -> Vec<String> {
    let data = dir.join("data");
    let mut o: Vec<String> = vec![
        format!("data.data_root={}", Value::String(data.display().to_string())),
        "data.batch_size=3".into(),
        "data.num_workers=1".into(),
        "data.pipeline.img_scale=[64, 64]".into(),
        "model.neck.out_channels=16".into(),
        "model.bbox_head.feat_channels=16".into(),
        "model.bbox_head.stacked_convs=1".into(),
        "runner.max_epochs=3".into(),
        "lr_config.warmup_iters=2".into(),
        "log_config.interval=1".into(),
        "evaluation.interval=1".into(),
        "evaluation.save_best=true".into(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

fn attndet(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), stderr(o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn train(work: &Path, extra_args: &[&str], overrides: &[String]) -> Output {
    let mut a = strings(&["train", &demo_config(), "--work-dir", &work.display().to_string()]);
    a.extend(strings(extra_args));
    a.push("--cfg-options".into());
    a.extend(overrides.iter().cloned());
    attndet(&a)
}

fn last_json(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// Add an annotation wholly outside its image to the first training image (which keeps its own boxes).
fn add_box_outside_image(ann_file: &Path) {
    let mut j: Value = serde_json::from_str(&std::fs::read_to_string(ann_file).unwrap()).unwrap();
    let img = j["images"][0].clone();
    let w = img["width"].as_f64().unwrap();
    let next_id = j["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .max()
        .unwrap()
        + 1;
    let cat = j["categories"][0]["id"].clone();
    j["annotations"].as_array_mut().unwrap().push(serde_json::json!({
        "id": next_id, "image_id": img["id"], "category_id": cat,
        "bbox": [w + 10.0, 5.0, 12.0, 12.0], "area": 144.0, "iscrowd": 0
    }));
    std::fs::write(ann_file, j.to_string()).unwrap();
}

#[test]
fn a_checkpoint_knows_itself() {
    let tmp = TempDir::new("ckpt-knows");
    let dir = tmp.path();
    synth_dataset(dir, 6, 4, 64, 5);
    let data = dir.join("data");
    add_box_outside_image(&data.join("annotations/instances_train.json"));
    let work = dir.join("work");

    // 3 epochs keeping 1 epoch checkpoint besides the best; the box outside its image never reaches the loss
    let out = train(&work, &[], &tiny(dir, &["checkpoint_config.max_keep_ckpts=1"]));
    ok(&out);
    let log = std::fs::read_to_string(work.join("log.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 6);
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let names = names_in(&work);
    assert!(
        names.contains(&"epoch_3".to_string()) && names.contains(&"best".to_string()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n == "epoch_1" || n == "epoch_2" || n.contains(".old-") || n.contains(".tmp-")),
        "{names:?}"
    );
    assert!(stderr(&out).contains("max_keep_ckpts = 1"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 box(es) wholly outside their image dropped"),
        "{}",
        stderr(&out)
    );

    // the checkpoint carries the class names of the annotations (in category-id order) and its config
    let ann: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("annotations/instances_val.json")).unwrap())
            .unwrap();
    let mut cats: Vec<(u64, String)> = ann["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), c["name"].as_str().unwrap().to_string()))
        .collect();
    cats.sort();
    let class_names: Vec<String> = cats.into_iter().map(|(_, n)| n).collect();
    let ckpt = work.join("epoch_3");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["classes"], serde_json::json!(class_names));
    assert_eq!(state["config"]["checkpoint_config"]["max_keep_ckpts"], 1);

    // test from the checkpoint alone; --out results scored by `eval --json` give the same object
    let results = dir.join("res.json");
    let out = attndet(&strings(&[
        "test",
        &ckpt.display().to_string(),
        "--json",
        "--out",
        &results.display().to_string(),
    ]));
    let t = last_json(&ok(&out));
    assert_eq!(
        (t["images"].as_u64(), t["skipped_images"].as_u64()),
        (Some(4), Some(0))
    );
    let bbox = &t["bbox"];
    assert_eq!(bbox["iou_type"], "bbox");
    assert_eq!(bbox["stats"].as_array().unwrap().len(), 12);
    assert_eq!(bbox["AP"], bbox["stats"][0]);
    assert_eq!(bbox["AP50"], bbox["stats"][1]);
    assert_eq!(bbox["ARl"], bbox["stats"][11]);
    let e = attndet(&strings(&[
        "eval",
        "--ann",
        &data.join("annotations/instances_val.json").display().to_string(),
        "--results",
        &results.display().to_string(),
        "--json",
    ]));
    assert_eq!(
        &last_json(&ok(&e)),
        bbox,
        "one JSON shape for the stats, the same numbers"
    );

    // the analysis tools take the checkpoint (here the work dir, its `latest`) for the config: its recorded
    // val split is the ground truth, so the matrix equals the one against the annotation file given directly
    let val_ann = data.join("annotations/instances_val.json").display().to_string();
    let confusion = |extra: &[&str]| {
        let mut a = strings(&[
            "analyze",
            "confusion",
            &work.display().to_string(),
            &results.display().to_string(),
            "--out",
            &dir.join("cm.png").display().to_string(),
            "--json",
        ]);
        a.extend(strings(extra));
        last_json(&ok(&attndet(&a)))
    };
    assert_eq!(confusion(&[]), confusion(&["--ann", &val_ann]));

    // an explicit config: a test setting that differs is a warning naming both values; a class count is an
    // error naming the field, both values and the tensors (exit 2)
    let mut a = strings(&[
        "test",
        &demo_config(),
        &ckpt.display().to_string(),
        "--json",
        "--cfg-options",
    ]);
    a.extend(tiny(
        dir,
        &[
            "checkpoint_config.max_keep_ckpts=1",
            "model.test_cfg.score_thr=0.2",
        ],
    ));
    let out = attndet(&a);
    ok(&out);
    assert!(
        stderr(&out).contains("warning:")
            && stderr(&out).contains("model.test_cfg.score_thr: 0.05 in the checkpoint, 0.2 now"),
        "{}",
        stderr(&out)
    );
    let mut a = strings(&[
        "test",
        &demo_config(),
        &ckpt.display().to_string(),
        "--cfg-options",
    ]);
    a.extend(tiny(
        dir,
        &[
            "checkpoint_config.max_keep_ckpts=1",
            "model.bbox_head.num_classes=3",
        ],
    ));
    let out = attndet(&a);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("model.bbox_head.num_classes: 5 in the checkpoint, 3 now"),
        "{err}"
    );
    // 9 anchors x 5 classes = 45 channels saved, 9 x 3 = 27 for the config
    assert!(
        err.contains("bbox_head.retina_cls.weight: [45, 16, 3, 3] in the checkpoint, [27, 16, 3, 3]"),
        "{err}"
    );
    // a wider head changes the structure, not only shapes: listed as well, never a panic
    let mut a = strings(&[
        "test",
        &demo_config(),
        &ckpt.display().to_string(),
        "--cfg-options",
    ]);
    a.extend(tiny(dir, &["model.bbox_head.stacked_convs=2"]));
    let out = attndet(&a);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing")
            && stderr(&out).contains("model.bbox_head.stacked_convs: 1 in the checkpoint, 2 now"),
        "{}",
        stderr(&out)
    );

    // a checkpoint of before (no config, no class names): needs the config, and works with it
    let old = dir.join("old");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["model.mpk", "optim.mpk"] {
        std::fs::copy(ckpt.join(f), old.join(f)).unwrap();
    }
    let mut s = state.clone();
    s.as_object_mut().unwrap().remove("config");
    s.as_object_mut().unwrap().remove("classes");
    std::fs::write(old.join("state.json"), s.to_string()).unwrap();
    let out = attndet(&strings(&["test", &old.display().to_string()]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("records no config"), "{}", stderr(&out));
    let mut a = strings(&[
        "test",
        &demo_config(),
        &old.display().to_string(),
        "--json",
        "--cfg-options",
    ]);
    a.extend(tiny(dir, &[]));
    assert_eq!(last_json(&ok(&attndet(&a)))["bbox"], *bbox);

    // unreadable val images with skip_bad_images: the rest is evaluated, exactly as a val set without them
    let val_dir = data.join("val");
    let first_val = ann["images"][0]["file_name"].as_str().unwrap().to_string();
    let broken = dir.join("broken_val");
    std::fs::create_dir_all(&broken).unwrap();
    for f in names_in(&val_dir) {
        std::fs::copy(val_dir.join(&f), broken.join(&f)).unwrap();
    }
    std::fs::write(broken.join(&first_val), b"not a png").unwrap();
    let skip = attndet(&strings(&[
        "test",
        &ckpt.display().to_string(),
        "--json",
        "--cfg-options",
        &format!("data.val.img_dir={}", Value::String(broken.display().to_string())),
        "data.skip_bad_images=true",
    ]));
    let skipped = last_json(&ok(&skip));
    assert_eq!(
        (skipped["images"].as_u64(), skipped["skipped_images"].as_u64()),
        (Some(3), Some(1))
    );
    let mut without = ann.clone();
    let first_id = ann["images"][0]["id"].clone();
    without["images"]
        .as_array_mut()
        .unwrap()
        .retain(|i| i["id"] != first_id);
    without["annotations"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["image_id"] != first_id);
    let without_file = dir.join("val_without.json");
    std::fs::write(&without_file, without.to_string()).unwrap();
    let reference = attndet(&strings(&[
        "test",
        &ckpt.display().to_string(),
        "--json",
        "--cfg-options",
        &format!(
            "data.val.ann_file={}",
            Value::String(without_file.display().to_string())
        ),
    ]));
    let reference = last_json(&ok(&reference));
    assert_eq!(reference["images"].as_u64(), Some(3));
    assert_eq!(
        skipped["bbox"], reference["bbox"],
        "skipped images are not scored as misses"
    );

    // infer from the checkpoint alone on a directory and a glob holding the same file names
    let (da, db) = (dir.join("in/a"), dir.join("in/b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    for f in names_in(&val_dir).iter().take(2) {
        std::fs::copy(val_dir.join(f), da.join(f)).unwrap();
        std::fs::copy(val_dir.join(f), db.join(f)).unwrap();
    }
    std::fs::write(da.join("notes.txt"), b"not an image").unwrap();
    let show = dir.join("show");
    let dets = dir.join("dets.json");
    let out = attndet(&strings(&[
        "infer",
        &work.display().to_string(),
        &da.display().to_string(),
        &format!("{}/*.png", db.display()),
        "--show-dir",
        &show.display().to_string(),
        "--out",
        &dets.display().to_string(),
        "--score-thr",
        "0",
        // the few iterations leave low scores: keep every candidate (an override of the checkpoint's config)
        "--cfg-options",
        "model.test_cfg.score_thr=0",
    ]));
    ok(&out);
    let entries: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&dets).unwrap()).unwrap();
    assert_eq!(entries.len(), 4, "two directories of two images");
    let drawings: std::collections::BTreeSet<PathBuf> = entries
        .iter()
        .map(|e| PathBuf::from(e["drawing"].as_str().unwrap()))
        .collect();
    assert_eq!(drawings.len(), 4, "no drawing overwrites another: {drawings:?}");
    for f in names_in(&da).iter().filter(|f| f.ends_with(".png")) {
        assert!(
            show.join("a").join(f).exists() && show.join("b").join(f).exists(),
            "{f}"
        );
    }
    // the class names come from the checkpoint (nothing else is given)
    let category = entries[0]["detections"][0]["category"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        class_names.contains(&category),
        "{category} not in {class_names:?}"
    );

    // very thin images: the keep-ratio resize bounds the long side by the config's scale and the short side
    // is at least one pixel, so memory stays small; every box lies inside its image
    let thin = dir.join("thin");
    std::fs::create_dir_all(&thin).unwrap();
    image::RgbImage::from_pixel(30_000, 1, image::Rgb([200, 60, 60]))
        .save(thin.join("wide.png"))
        .unwrap();
    image::RgbImage::from_pixel(2, 30_000, image::Rgb([60, 200, 60]))
        .save(thin.join("tall.png"))
        .unwrap();
    let thin_dets = dir.join("thin.json");
    let out = attndet(&strings(&[
        "infer",
        &work.display().to_string(),
        &thin.display().to_string(),
        "--out",
        &thin_dets.display().to_string(),
        "--score-thr",
        "0",
        "--cfg-options",
        "model.test_cfg.score_thr=0",
    ]));
    ok(&out);
    let entries: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&thin_dets).unwrap()).unwrap();
    assert_eq!(entries.len(), 2);
    for e in &entries {
        let (w, h) = if e["file"].as_str().unwrap().ends_with("wide.png") {
            (30_000.0, 1.0)
        } else {
            (2.0, 30_000.0)
        };
        for d in e["detections"].as_array().unwrap() {
            let b: Vec<f64> = d["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(
                b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w + 1e-3 && b[3] <= h + 1e-3, // [x1, y1, x2, y2]
                "{b:?} outside {w}x{h}"
            );
        }
    }

    // the finished work dir is not reused without --resume
    let out = train(&work, &[], &tiny(dir, &["checkpoint_config.max_keep_ckpts=1"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already holds a run") && stderr(&out).contains("--resume"),
        "{}",
        stderr(&out)
    );

    // resume with a model change: exit 2 naming the field and the tensors
    let out = train(
        &work,
        &["--resume"],
        &tiny(
            dir,
            &["checkpoint_config.max_keep_ckpts=1", "model.neck.out_channels=8"],
        ),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("model.neck.out_channels: 16 in the checkpoint, 8 now")
            && stderr(&out).contains("mis-shaped"),
        "{}",
        stderr(&out)
    );

    // resume for a 4th epoch with another lr: the log says what comes from where, config.json records it,
    // and the checkpoint resumed from is kept although max_keep_ckpts is 1
    let out = train(
        &work,
        &["--resume"],
        &tiny(
            dir,
            &[
                "checkpoint_config.max_keep_ckpts=1",
                "runner.max_epochs=4",
                "optimizer.lr=0.002",
            ],
        ),
    );
    ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("resumed from") && err.contains("weights, optimizer state"),
        "{err}"
    );
    assert!(
        err.contains("optimizer.lr: 0.001 in the checkpoint, 0.002 now"),
        "{err}"
    );
    assert!(
        err.contains("runner.max_epochs: 3 in the checkpoint, 4 now"),
        "{err}"
    );
    assert!(
        err.contains("base lr 0.001 in the checkpoint, 0.002 from iteration 7 on"),
        "{err}"
    );
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("config.json")).unwrap()).unwrap();
    assert_eq!(recorded["optimizer"]["lr"], 0.002);
    let lrs: Vec<f64> = std::fs::read_to_string(work.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["mode"] == "train" && v["epoch"] == 4)
        .map(|v| v["lr"].as_f64().unwrap())
        .collect();
    assert!(
        !lrs.is_empty() && lrs.iter().all(|&lr| lr == 0.002),
        "the new lr runs (steps at 14, 17): {lrs:?}"
    );
    let names = names_in(&work);
    assert!(
        names.contains(&"epoch_3".to_string()) && names.contains(&"epoch_4".to_string()),
        "{names:?}"
    );
}

#[test]
fn infer_and_test_name_what_they_need() {
    let tmp = TempDir::new("ckpt-args");
    let dir = tmp.path();
    // a config where the checkpoint should be, and an image argument that matches nothing
    let out = run(&["test", &demo_config()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("a config, not a checkpoint"),
        "{}",
        stderr(&out)
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(&[
        "infer",
        &dir.display().to_string(),
        &format!("{}/*.png", empty.display()),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(&["infer", &demo_config(), &empty.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("expected [CONFIG] CKPT IMAGE"),
        "{}",
        stderr(&out)
    );
    // the demo does not train over a previous run (and says so before generating any data)
    let demo = dir.join("demo");
    std::fs::create_dir_all(demo.join("epoch_2")).unwrap();
    std::fs::write(demo.join("epoch_2/state.json"), b"{}").unwrap();
    std::fs::write(demo.join("latest"), b"epoch_2").unwrap();
    let out = run(&["demo", "--work-dir", &demo.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds a previous run"), "{}", stderr(&out));
    assert!(!demo.join("data").exists());
}

/// Every subcommand's help ends with two or three examples, and only the subcommands that compute offer
/// `--device`.
#[test]
fn every_help_ends_with_examples_and_device_only_where_it_computes() {
    let computes = [
        vec!["train"],
        vec!["test"],
        vec!["infer"],
        vec!["demo"],
        vec!["classify"],
        vec!["devices"],
        vec!["benchmark"],
        vec!["swap"],
    ];
    let counts_only = [
        vec!["eval"],
        vec!["flops"],
        vec!["convert"],
        vec!["plot"],
        vec!["config"],
        vec!["config", "show"],
        vec!["dataset"],
        vec!["dataset", "stats"],
        vec!["dataset", "synth"],
        vec!["dataset", "browse"],
        vec!["models"],
        vec!["analyze", "confusion"],
        vec!["analyze", "errors"],
        vec!["analyze", "results"],
    ];
    for (cmd, device) in computes
        .iter()
        .map(|c| (c, true))
        .chain(counts_only.iter().map(|c| (c, false)))
    {
        for flag in ["--help", "-h"] {
            let mut a: Vec<&str> = cmd.clone();
            a.push(flag);
            let out = run(&a);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "{cmd:?}");
            let tail = text
                .rsplit_once("Examples:")
                .map(|(_, t)| t)
                .unwrap_or_else(|| panic!("{cmd:?} {flag}: no examples:\n{text}"));
            // an example may continue on the next line (after a `\`, or wrapped by clap)
            let examples: Vec<&str> = tail
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("attndet "))
                .collect();
            assert!((2..=3).contains(&examples.len()), "{cmd:?}: {examples:?}");
            let prefix = format!("attndet {}", cmd[0]);
            assert!(
                examples.iter().filter(|l| l.starts_with(&prefix)).count() >= 2,
                "{cmd:?}: {examples:?}"
            );
            assert_eq!(text.contains("--device"), device, "{cmd:?} {flag}");
        }
    }
}
