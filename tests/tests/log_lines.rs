//! `attndet train` with stderr piped (not a terminal): a plain progress line every `log_config.interval`
//! iterations and at the end of each epoch, and the saved / resumed / best messages, which a progress bar
//! would hide; each of those messages is in `log.jsonl` too (`"mode": "event"`).

use std::path::Path;

use attndet_tests::{TempDir, log_lines, run, workspace_root};

/// Train the synthetic demo config, shrunk to a few iterations on 64 x 64 images, with stderr piped.
fn train(dir: &Path, extra_args: &[&str], overrides: &[&str]) -> (bool, String) {
    let data = dir.join("data");
    let config = workspace_root().join("configs/retinanet/retinanet_r18_fpn_synth_demo.json");
    let mut args: Vec<String> = vec![
        "train".into(),
        config.display().to_string(),
        "--work-dir".into(),
        dir.join("work").display().to_string(),
    ];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    args.push("--cfg-options".into());
    args.extend(
        [
            format!(
                "data.data_root={}",
                serde_json::Value::String(data.display().to_string())
            ),
            "data.batch_size=2".into(),
            "data.num_workers=1".into(),
            "data.pipeline.img_scale=[64, 64]".into(),
            "model.neck.out_channels=16".into(),
            "model.bbox_head.feat_channels=16".into(),
            "model.bbox_head.stacked_convs=1".into(),
            "lr_config.warmup_iters=2".into(),
            "log_config.interval=2".into(),
        ]
        .into_iter()
        .chain(overrides.iter().map(|s| s.to_string())),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The shapes dataset in `DIR/data`: `train` + `val` images of 64 x 64, seed 3.
fn synth_data(dir: &Path, train: usize, val: usize) {
    let (train, val) = (train.to_string(), val.to_string());
    let out = run(&[
        "dataset",
        "synth",
        "--out",
        dir.join("data").to_str().unwrap(),
        "--train",
        &train,
        "--val",
        &val,
        "--size",
        "64",
        "--seed",
        "3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The plain progress lines of a run's stderr.
fn progress_lines(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("epoch ") && l.contains(" iter "))
        .collect()
}

#[test]
fn piped_stderr_gets_plain_lines_and_the_checkpoint_messages() {
    let tmp = TempDir::new("log-lines");
    let dir = tmp.path();
    synth_data(dir, 6, 2);

    // epoch 1 of 2: 3 iterations of 2 images, a line at iteration 2 (the interval) and 3 (the epoch's end)
    let (ok, err) = train(dir, &[], &["runner.max_epochs=1", "evaluation.interval=0"]);
    assert!(ok, "{err}");
    let lines = progress_lines(&err);
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("epoch 1/1 iter 2/3 loss="), "{err}");
    assert!(lines[1].starts_with("epoch 1/1 iter 3/3 loss="), "{err}");
    for l in &lines {
        for part in [" (cls=", " bbox=", ") lr=", "s/it data=", "s mem=", "MiB eta "] {
            assert!(l.contains(part), "`{part}` missing in {l}");
        }
        // lr in scientific notation, the run's ETA as h:mm:ss
        let lr = l.split(" lr=").nth(1).unwrap().split(' ').next().unwrap();
        assert!(lr.parse::<f64>().is_ok() && lr.contains('e'), "{l}");
        let eta: Vec<&str> = l.rsplit(" eta ").next().unwrap().split(':').collect();
        assert!(
            eta.len() == 3 && eta.iter().all(|p| p.parse::<u64>().is_ok()) && eta[1].len() == 2,
            "{l}"
        );
    }
    // no bar drawing (carriage returns or escapes) in the piped output
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
    let saved = dir.join("work/epoch_1");
    assert!(err.contains(&format!("saved {}", saved.display())), "{err}");

    // resume for a second epoch with evaluation and the best checkpoint: every message still shows
    let (ok, err) = train(
        dir,
        &["--resume"],
        &[
            "runner.max_epochs=2",
            "evaluation.interval=1",
            "evaluation.save_best=true",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("resumed from {}", saved.display())),
        "{err}"
    );
    let lines = progress_lines(&err);
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("epoch 2/2 iter 2/3 loss="), "{err}");
    assert!(err.contains("bbox evaluation on 2 val images"), "{err}");
    assert!(
        err.contains(&format!("saved {}", dir.join("work/epoch_2").display())),
        "{err}"
    );
    assert!(err.contains("best bbox_mAP"), "{err}");
    // the plots were drawn after training
    for f in ["loss.png", "lr.png", "ap.png"] {
        assert!(dir.join("work").join(f).exists(), "{f} missing");
    }

    // every message of both runs is in the log, in order, at the run position it was shown (epochs done,
    // iterations done): 3 iterations an epoch, so epoch 1 is saved at iteration 3, and the resumed run starts
    // there and saves epoch 2 at iteration 6
    let events: Vec<(u64, u64, String)> = log_lines(&dir.join("work"), "event")
        .iter()
        .map(|v| {
            (
                v["epoch"].as_u64().unwrap(),
                v["global_iter"].as_u64().unwrap(),
                v["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: [(u64, u64, String); 6] = [
        (0, 0, "training ".into()),
        (1, 3, format!("saved {}", saved.display())),
        (1, 3, "training ".into()),
        (1, 3, format!("resumed from {}", saved.display())),
        (2, 6, format!("saved {}", dir.join("work/epoch_2").display())),
        (2, 6, "best bbox_mAP".into()),
    ];
    assert_eq!(events.len(), expected.len(), "{events:#?}");
    for ((e, g, m), (ee, eg, em)) in events.iter().zip(&expected) {
        assert!(
            (e, g) == (ee, eg) && m.starts_with(em.as_str()),
            "{m} at ({e}, {g}), expected {em} at ({ee}, {eg})"
        );
    }
}

/// `--auto-scale-lr` says what it did, on stderr and in the log: 2 images per iteration against the demo's
/// base batch of 16 scale optimizer.lr by 2/16.
#[test]
fn the_scaled_learning_rate_is_shown_and_logged() {
    let tmp = TempDir::new("log-lines-lr");
    let dir = tmp.path();
    synth_data(dir, 2, 1);
    let (ok, err) = train(
        dir,
        &["--auto-scale-lr"],
        &[
            "runner.max_epochs=1",
            "evaluation.interval=0",
            "optimizer.lr=0.08",
            "auto_scale_lr.base_batch_size=16",
            "log_config.tensorboard=true",
        ],
    );
    assert!(ok, "{err}");
    let said = "learning rate scaled to 0.01 (optimizer.lr 0.08 x 2 images per iteration";
    assert!(err.contains(said), "{err}");
    let events = log_lines(&dir.join("work"), "event");
    assert!(
        events
            .iter()
            .any(|v| v["message"].as_str().unwrap().starts_with(said)),
        "{events:?}"
    );

    // log_config.tensorboard: one event file of TFRecords, the file version first, then the logged scalars
    // (`tools/scripts/check_tensorboard.py WORK_DIR` reads it with TensorBoard itself)
    let files: Vec<_> = std::fs::read_dir(dir.join("work/tf_logs"))
        .expect("tf_logs")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let first_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let first = &bytes[12..12 + first_len];
    assert!(first.ends_with(b"brain.Event:2"), "{first:?}");
    let has = |tag: &[u8]| bytes.windows(tag.len()).any(|w| w == tag);
    for tag in ["train/loss", "train/loss_cls", "train/loss_bbox", "train/lr"] {
        assert!(has(tag.as_bytes()), "{tag} missing");
    }
}
