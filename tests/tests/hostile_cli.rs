//! Hostile input through the binary: every subcommand with missing files, directories instead of files, empty
//! files, garbage JSON, huge, negative, NaN and zero numbers. Nothing may panic (exit code 101); bad input exits
//! 2 with a message. Also: a closed stdout pipe ends the process quietly.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use attndet_backbones::checkpoint::reference_keys;
use attndet_backbones::resnet::renames;
use attndet_backbones::{BackboneArch, formula};
use attndet_tests::{TempDir, attndet_bin, run, shared_coco_fixtures, workspace_root};
use burn::backend::Flex;

fn demo_config() -> String {
    workspace_root()
        .join("configs/retinanet/retinanet_r18_fpn_synth_demo.json")
        .display()
        .to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `args` must not panic; returns the output.
fn no_panic(args: &[&str]) -> Output {
    let out = run(args);
    let err = stderr(&out);
    assert!(
        out.status.code() != Some(101) && !err.contains("panicked"),
        "attndet {args:?} panicked: {:?}\n{err}",
        out.status
    );
    out
}

/// `args` must fail as bad input: exit 2 with a message, no panic.
fn bad_input(args: &[&str]) {
    let out = no_panic(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "attndet {args:?}: {err}");
    assert!(!err.trim().is_empty(), "attndet {args:?}: no message");
}

/// Hostile files: (name, path) of a missing file, a directory, an empty file, garbage, valid JSON of the
/// wrong shape.
fn hostile_files(dir: &Path) -> Vec<(String, String)> {
    let adir = dir.join("a_directory");
    std::fs::create_dir_all(&adir).unwrap();
    std::fs::write(dir.join("empty.json"), b"").unwrap();
    std::fs::write(dir.join("garbage.json"), b"{\"images\": [1, 2,,").unwrap();
    std::fs::write(dir.join("array.json"), b"[1, 2, 3]").unwrap();
    std::fs::write(dir.join("binary.json"), [0xff, 0xfe, 0x00, 0x81, 0x9f]).unwrap();
    [
        ("missing", dir.join("no_such_file.json")),
        ("directory", adir),
        ("empty", dir.join("empty.json")),
        ("garbage", dir.join("garbage.json")),
        ("wrong shape", dir.join("array.json")),
        ("binary", dir.join("binary.json")),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), p.display().to_string()))
    .collect()
}

#[test]
fn closed_stdout_pipe_does_not_panic() {
    // the read end is closed before the child starts: its first write hits a broken pipe, deterministically
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(attndet_bin())
        .args(["config", "show", &demo_config()])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("spawn attndet");
    let err = stderr(&out);
    assert!(
        !err.contains("panicked") && out.status.code() != Some(101),
        "{:?}: {err}",
        out.status
    );
    // ended by SIGPIPE, quietly, as `cat` or `grep` would be
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(13), "{:?}: {err}", out.status);
    }
    assert!(err.is_empty(), "{err}");
}

#[test]
fn config_show_rejects_hostile_files_and_values() {
    let tmp = TempDir::new("hostile-config");
    for (what, f) in hostile_files(tmp.path()) {
        let out = no_panic(&["config", "show", &f]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
    }
    let cfg = demo_config();
    for o in [
        "data.pipeline.img_scale=[0,0]",
        "data.pipeline.img_scale=[99999999,1]",
        "data.pipeline.img_scale=[-1,5]",
        "data.pipeline.std=[0,0,0]",
        "data.pipeline.std=nan",
        "data.batch_size=0",
        "data.batch_size=-1",
        "data.batch_size=99999999999999999999999999",
        "data.num_workers=1000000000",
        "optimizer.lr=NaN",
        "optimizer.lr=-1",
        "optimizer.lr=0",
        "runner.max_epochs=0",
        "model.bbox_head.num_classes=0",
        "model.bbox_head.anchor_generator.strides=[0]",
        "log_config.interval=0",
        "data.pipeline.img_scale.7=3",
        "no_equals_sign",
        "=5",
    ] {
        bad_input(&["config", "show", &cfg, "--cfg-options", o]);
    }
}

#[test]
fn zero_image_scale_fails_at_load_not_with_an_empty_epoch() {
    let tmp = TempDir::new("hostile-scale");
    let work = tmp.path().join("w");
    let out = no_panic(&[
        "train",
        &demo_config(),
        "--work-dir",
        work.to_str().unwrap(),
        "--quiet",
        "--cfg-options",
        "data.pipeline.img_scale=[0,0]",
        "data.pipeline.keep_ratio=false",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("data.pipeline.img_scale.0"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("done"));
}

#[test]
fn eval_and_dataset_reject_hostile_files() {
    let tmp = TempDir::new("hostile-eval");
    let gt = shared_coco_fixtures().join("instances_val2014_100.json");
    let gt = gt.to_str().unwrap();
    let out_dir = tmp.path().join("out");
    let out_dir = out_dir.to_str().unwrap();
    for (what, f) in hostile_files(tmp.path()) {
        let f = f.as_str();
        for args in [
            vec!["eval", "--ann", f, "--results", f],
            vec!["eval", "--ann", gt, "--results", f],
            vec!["eval", "--ann", gt, "--results", f, "--iou-type", "segm"],
            vec!["dataset", "stats", f],
            vec!["dataset", "stats", f, "--json"],
            vec!["dataset", "browse", f, "--images", f, "--out", out_dir],
        ] {
            let out = no_panic(&args);
            assert_eq!(out.status.code(), Some(2), "{what}: {args:?}: {}", stderr(&out));
        }
    }
    // results that are JSON but not detections
    let bad = tmp.path().join("bad_results.json");
    for text in [
        "{}",
        "[{}]",
        "[{\"image_id\": 1}]",
        "[{\"image_id\": -1, \"category_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}]",
        "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 2], \"score\": 0.5}]",
        "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": \"NaN\"}]",
        "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1e999, 2, 3, 4], \"score\": 0.5}]",
        "[{\"image_id\": 18446744073709551615, \"category_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}]",
    ] {
        std::fs::write(&bad, text).unwrap();
        for iou in ["bbox", "segm"] {
            no_panic(&[
                "eval",
                "--ann",
                gt,
                "--results",
                bad.to_str().unwrap(),
                "--iou-type",
                iou,
            ]);
        }
    }
    // browse of real annotations whose images are missing, and a zero limit
    let imgs = tmp.path().join("a_directory");
    for limit in ["0", "1", "18446744073709551615"] {
        no_panic(&[
            "dataset",
            "browse",
            gt,
            "--images",
            imgs.to_str().unwrap(),
            "--out",
            out_dir,
            "--limit",
            limit,
        ]);
    }
}

#[test]
fn synth_and_flops_range_check_their_sizes() {
    let tmp = TempDir::new("hostile-sizes");
    let out = tmp.path().join("synth");
    let out = out.to_str().unwrap();
    for extra in [
        vec!["--size", "0"],
        vec!["--size", "31"],
        vec!["--size", "4294967295"],
        vec!["--size", "99999999999999"],
        vec!["--size", "-5"],
        vec!["--size", "NaN"],
        vec!["--train", "18446744073709551615"],
        vec!["--val", "-1"],
        vec!["--max-objects", "0"],
        vec!["--max-objects", "18446744073709551615"],
        vec!["--seed", "-1"],
    ] {
        let mut args = vec!["dataset", "synth", "--out", out];
        args.extend(extra);
        bad_input(&args);
    }
    for size in [
        ["0", "224"],
        ["224", "0"],
        ["4294967296", "4294967296"],
        ["18446744073709551615", "1"],
        ["100000", "100000"],
        ["-1", "5"],
        ["NaN", "5"],
    ] {
        bad_input(&["flops", "--model", "resnet50", "--input-size", size[0], size[1]]);
    }
    bad_input(&["flops", "--model", "no_such_net"]);
    // tiny inputs are fine
    for model in ["resnet50", "mobilenet_v2"] {
        let out = no_panic(&["flops", "--model", model, "--input-size", "1", "1", "--json"]);
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "{model}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn train_test_infer_demo_plot_convert_classify_reject_hostile_input() {
    let tmp = TempDir::new("hostile-run");
    let dir = tmp.path();
    let cfg = demo_config();
    let work = dir.join("work");
    let work = work.to_str().unwrap();
    let files = hostile_files(dir);
    std::fs::write(dir.join("not_an_image.png"), b"hello").unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    let not_image = dir.join("not_an_image.png").display().to_string();
    let empty_image = dir.join("empty.png").display().to_string();
    for (what, f) in &files {
        let f = f.as_str();
        for args in [
            vec!["train", f, "--work-dir", work, "--quiet"],
            vec!["test", f, f],
            vec!["test", &cfg, f],
            vec!["infer", f, f, f],
            vec!["infer", &cfg, f, f],
            vec![
                "demo",
                "--config",
                f,
                "--work-dir",
                work,
                "--train-images",
                "2",
                "--val-images",
                "1",
            ],
            vec!["convert", "--model", "resnet18", "--from", f, "--out", work],
            vec!["classify", "--model", "resnet18", "--checkpoint", f, &not_image],
            vec!["plot", f],
        ] {
            let out = no_panic(&args);
            assert_eq!(out.status.code(), Some(2), "{what}: {args:?}: {}", stderr(&out));
        }
    }
    for args in [
        vec![
            "train",
            &cfg,
            "--work-dir",
            work,
            "--resume",
            "/no/such/ckpt",
            "--quiet",
        ],
        vec!["train", &cfg, "--work-dir", work, "--seed", "-1"],
        vec!["train", &cfg, "--work-dir", work, "--seed", "NaN"],
        vec!["train", &cfg, "--work-dir", work, "--max-iters", "-3"],
        vec!["infer", &cfg, work, &not_image],
        vec!["infer", &cfg, work, &empty_image],
        vec!["test", &cfg, work, "--show-score-thr", "NaN"],
        vec!["demo", "--image-size", "0", "--work-dir", work],
        vec!["demo", "--image-size", "4294967295", "--work-dir", work],
        vec!["demo", "--train-images", "-1", "--work-dir", work],
        vec![
            "classify",
            "--model",
            "resnet18",
            "--checkpoint",
            work,
            "--topk",
            "0",
            &not_image,
        ],
        vec![
            "classify",
            "--model",
            "no_such_net",
            "--checkpoint",
            work,
            &not_image,
        ],
        vec!["convert", "--model", "no_such_net", "--from", work, "--out", work],
        vec!["devices", "--device", "cuda:99999999999999999999"],
        vec!["devices", "--device", "cpu:-1"],
        vec!["no-such-command"],
    ] {
        bad_input(&args);
    }
    // a work dir that is a file, and garbage in a work dir's log: errors, never panics
    let file = dir.join("empty.json").display().to_string();
    no_panic(&["train", &cfg, "--work-dir", &file, "--quiet"]);
    let logdir = dir.join("logdir");
    std::fs::create_dir_all(&logdir).unwrap();
    for log in [
        "",
        "garbage\n",
        "{\"mode\": \"train\"}\n",
        "{\"mode\": \"train\", \"loss\": 1e999}\n",
    ] {
        std::fs::write(logdir.join("log.jsonl"), log).unwrap();
        no_panic(&["plot", logdir.to_str().unwrap()]);
    }
}

/// A PNG whose header declares `w x h` RGB pixels, with no pixel data to speak of.
fn header_only_png(path: &Path, w: u32, h: u32) {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |png: &mut Vec<u8>, body: &[u8]| {
        png.extend((body.len() as u32 - 4).to_be_bytes());
        png.extend(body);
        png.extend(crc32(body).to_be_bytes());
    };
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, &ihdr);
    chunk(&mut png, b"IDAT\x78\x9c");
    chunk(&mut png, b"IEND");
    std::fs::write(path, png).unwrap();
}

#[test]
fn classify_rejects_hostile_images() {
    let tmp = TempDir::new("hostile-classify");
    let dir = tmp.path();
    let ckpt = dir.join("resnet18.safetensors");
    let arch = BackboneArch::parse("resnet18").unwrap();
    let BackboneArch::ResNet(cfg) = &arch else {
        unreachable!()
    };
    let model = arch.build_lazy::<Flex>(&Default::default()).unwrap();
    std::fs::write(
        &ckpt,
        formula::checkpoint_bytes(&reference_keys(&model, &renames(cfg))),
    )
    .unwrap();
    let ckpt = ckpt.to_str().unwrap();
    let bomb = dir.join("bomb.png");
    header_only_png(&bomb, 30000, 30000);
    let thin = dir.join("thin.png");
    image::RgbImage::new(1, 3000).save(&thin).unwrap();
    let dot = dir.join("dot.png");
    image::RgbImage::new(1, 1).save(&dot).unwrap();
    for (what, f) in hostile_files(dir) {
        let out = no_panic(&["classify", "--model", "resnet18", "--checkpoint", ckpt, &f]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
    }
    for (img, flag) in [(&bomb, "--json"), (&bomb, "--no-resize"), (&thin, "--json")] {
        bad_input(&[
            "classify",
            "--model",
            "resnet18",
            "--checkpoint",
            ckpt,
            flag,
            img.to_str().unwrap(),
        ]);
    }
    // a 1x1 image as it is: a result or a clear error, never a panic
    no_panic(&[
        "classify",
        "--model",
        "resnet18",
        "--checkpoint",
        ckpt,
        "--no-resize",
        dot.to_str().unwrap(),
    ]);
    for k in ["0", "-1", "18446744073709551615"] {
        no_panic(&[
            "classify",
            "--model",
            "resnet18",
            "--checkpoint",
            ckpt,
            "--topk",
            k,
            dot.to_str().unwrap(),
        ]);
    }
}
