//! `attndet benchmark` and `attndet swap` on a tiny synthetic set: the per-stage timing adds up, a two-arm
//! swap trains, tests and compares, a finished arm is not run again, `--report` rebuilds the comparison, and
//! bad arguments exit 2.

use std::path::Path;

use attndet_tests::{TempDir, run, synth_dataset, workspace_root};

fn demo_config() -> String {
    workspace_root()
        .join("configs/retinanet/retinanet_r18_fpn_synth_demo.json")
        .display()
        .to_string()
}

/// Overrides pointing the demo config at `dir/data`, with a tiny model and one epoch of two iterations.
fn tiny(dir: &Path) -> Vec<String> {
    vec![
        format!(
            "data.data_root={}",
            serde_json::Value::String(dir.join("data").display().to_string())
        ),
        "data.batch_size=3".into(),
        "data.num_workers=1".into(),
        "data.pipeline.img_scale=[64, 64]".into(),
        "model.neck.out_channels=16".into(),
        "model.bbox_head.feat_channels=16".into(),
        "model.bbox_head.stacked_convs=1".into(),
        "runner.max_epochs=1".into(),
        "lr_config.warmup_iters=2".into(),
        "log_config.interval=1".into(),
        "evaluation.interval=0".into(),
    ]
}

fn run_owned(args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

fn json_stdout(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn benchmark_times_each_stage() {
    let tmp = TempDir::new("benchmark");
    let dir = tmp.path();
    synth_dataset(dir, 6, 4, 64, 5);
    let work = dir.join("work");
    let mut train: Vec<String> = vec![
        "train".into(),
        demo_config(),
        "--work-dir".into(),
        work.display().to_string(),
    ];
    train.push("--quiet".into());
    train.push("--cfg-options".into());
    train.extend(tiny(dir));
    let out = run_owned(&train);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut bench: Vec<String> = vec![
        "benchmark".into(),
        demo_config(),
        work.display().to_string(),
        "--images".into(),
        "3".into(),
        "--warmup".into(),
        "1".into(),
        "--json".into(),
        "--cfg-options".into(),
    ];
    bench.extend(tiny(dir));
    let v = json_stdout(&run_owned(&bench));
    assert_eq!(v["images"], 3);
    assert_eq!(v["warmup"], 1);
    let stages = v["stages"].as_object().unwrap();
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    for s in ["data", "backbone", "neck", "heads", "post_processing"] {
        assert!(stages[s].as_f64().unwrap() >= 0.0, "{s}");
    }
    // the backbone really ran, and the stages are parts of the whole
    assert!(stages["backbone"].as_f64().unwrap() > 0.0);
    let sum: f64 = stages.values().map(|x| x.as_f64().unwrap()).sum();
    let total = v["ms_per_image"].as_f64().unwrap();
    assert!(sum <= total * 1.001 && sum > total * 0.8, "{sum} vs {total}");
    let ips = v["images_per_s"].as_f64().unwrap();
    assert!(
        (ips * total / 1000.0 - 1.0).abs() < 1e-6,
        "{ips} images/s at {total} ms"
    );

    // the table
    bench.retain(|a| a != "--json");
    let out = run_owned(&bench);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("post_processing") && text.contains("images/s"),
        "{text}"
    );

    // `test --show-dir --show-gt`: ground truth beside the detections, twice the drawing's width
    let show = dir.join("show");
    let mut test: Vec<String> = vec![
        "test".into(),
        demo_config(),
        work.display().to_string(),
        "--show-dir".into(),
        show.display().to_string(),
        "--show-gt".into(),
        "--cfg-options".into(),
    ];
    test.extend(tiny(dir));
    let out = run_owned(&test);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drawings: Vec<_> = std::fs::read_dir(&show)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(drawings.len(), 4);
    let img = image::open(&drawings[0]).unwrap();
    // 64 px images enlarged 5x to 320, side by side with an 8 px gap, under a 24 px title strip
    assert_eq!((img.width(), img.height()), (2 * 320 + 8, 320 + 24));

    let out = run(&["benchmark", &demo_config(), dir.join("nothing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn two_arm_swap_compares_and_resumes_arm_by_arm() {
    let tmp = TempDir::new("swap");
    let dir = tmp.path();
    synth_dataset(dir, 6, 3, 64, 7);
    let work = dir.join("swap");
    let mut args: Vec<String> = vec![
        "swap".into(),
        demo_config(),
        "--backbones".into(),
        "resnet18,se_resnet18".into(),
        "--work-dir".into(),
        work.display().to_string(),
        "--quiet".into(),
        "--json".into(),
        "--cfg-options".into(),
    ];
    args.extend(tiny(dir));
    let v = json_stdout(&run_owned(&args));
    assert_eq!(v["baseline"], "resnet18");
    let arms = v["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2);
    // each arm is the detector with its backbone: the SE arm is larger by exactly its SE blocks, two per
    // stage, each Linear(c, c/16) + Linear(c/16, c) with biases: 2 * c * (c/16) + c/16 + c parameters
    let se: i64 = [(64, 4), (128, 8), (256, 16), (512, 32)]
        .iter()
        .map(|&(c, r)| 2 * (2 * c * r + r + c))
        .sum();
    assert_eq!(arms[1]["delta"]["params"].as_i64().unwrap(), se);
    assert_eq!(arms[0]["delta"]["bbox_AP"], 0.0);
    for a in arms {
        assert_eq!(a["bbox"]["stats"].as_array().unwrap().len(), 12);
        assert!(a["s_per_iter"].as_f64().unwrap() > 0.0);
        assert_eq!(a["iterations"], 2);
        assert!(a["segm"].is_null());
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(a["work_dir"].as_str().unwrap()).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["model"]["backbone"]["name"], a["backbone"]);
    }
    for f in [
        "comparison.md",
        "comparison.json",
        "comparison.png",
        "resnet18/swap_arm.json",
    ] {
        assert!(work.join(f).exists(), "{f}");
    }
    let md = std::fs::read_to_string(work.join("comparison.md")).unwrap();
    assert!(md.lines().nth(2).unwrap().starts_with("| resnet18 |"), "{md}");
    let img = image::open(work.join("comparison.png")).unwrap();
    assert!(img.width() > 600 && img.height() > 300);

    // a finished arm is not run again
    let before = std::fs::metadata(work.join("se_resnet18/swap_arm.json"))
        .unwrap()
        .modified()
        .unwrap();
    let out = run_owned(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("not run again").count(), 2, "{err}");
    let after = std::fs::metadata(work.join("se_resnet18/swap_arm.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // --report rebuilds the same comparison from the work dirs
    let rebuilt = json_stdout(&run(&["swap", "--report", work.to_str().unwrap(), "--json"]));
    assert_eq!(rebuilt, v);

    // bad input exits 2 naming the problem
    let mut bad = args.clone();
    bad[3] = "resnet18,no_such_net".into();
    let out = run_owned(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--backbones"));
    let mut bad = args.clone();
    bad.splice(4..4, ["--init".to_string(), "a.pth".to_string()]);
    let out = run_owned(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a list of 1 files for 2 backbones"));
    let out = run(&["swap", "--report", dir.join("data").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no finished arm"));
}
