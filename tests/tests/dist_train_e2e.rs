//! `attndet dist-train` through the binary on a tiny synthetic set: R CPU replicas (in one process, or one
//! per process over a 2-node localhost run) against one device with the global batch (the same losses and
//! weights), resume of a dist-train checkpoint with `train`, a corrupt image and a killed node ending the
//! run with a clear error, and bad arguments exiting 2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use attndet_detectors::config::{ExperimentConfig, load_typed};
use attndet_detectors::engine::checkpoint;
use attndet_detectors::models::AnyDetector;
use attndet_tests::{TempDir, attndet_bin, run, synth_dataset, workspace_root};
use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

fn config(name: &str) -> String {
    workspace_root().join("configs").join(name).display().to_string()
}

const RETINANET: &str = "retinanet/retinanet_r18_fpn_synth_demo.json";
const FASTER_RCNN: &str = "faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json";

/// Overrides of the demo configs: the data of `dir`, a shrunk model with a frozen-statistics backbone
/// (`norm_eval`: the replicas then equal one device up to summation order), 2 epochs, no evaluation, and
/// SGD: the demo configs' AdamW divides every gradient by its own magnitude, so that the rounding noise
/// of a near-zero gradient becomes a full-size step (measured: 3e-3 relative loss difference by iteration 7
/// with AdamW, 3e-5 with SGD at lr 0.01; rounding differences still grow with the iterations, so the
/// runs are kept short and the lr small).
fn tiny(dir: &Path, detector: &str, batch: usize) -> Vec<String> {
    let mut o: Vec<String> = vec![
        format!(
            "data.data_root={}",
            serde_json::Value::String(dir.join("data").display().to_string())
        ),
        format!("data.batch_size={batch}"),
        "data.num_workers=1".into(),
        "data.pipeline.img_scale=[64, 64]".into(),
        "model.backbone.norm_eval=true".into(),
        "model.neck.out_channels=16".into(),
        "runner.max_epochs=2".into(),
        "lr_config.warmup_iters=2".into(),
        "log_config.interval=1".into(),
        "evaluation.interval=0".into(),
        r#"optimizer={"type": "SGD", "lr": 0.002, "momentum": 0.9, "weight_decay": 0.0001, "grad_clip": {"max_norm": 10}}"#.into(),
    ];
    if detector == RETINANET {
        o.push("model.bbox_head.feat_channels=16".into());
        o.push("model.bbox_head.stacked_convs=1".into());
    } else {
        o.push("model.rpn_head.feat_channels=16".into());
        o.push("model.roi_head.bbox_head.in_channels=16".into());
    }
    o
}

fn args(cmd: &str, detector: &str, work_dir: &Path, extra: &[&str], overrides: &[String]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        cmd.into(),
        config(detector),
        "--work-dir".into(),
        work_dir.display().to_string(),
        "--quiet".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push("--cfg-options".into());
    a.extend(overrides.iter().cloned());
    a
}

fn run_args(a: &[String]) -> Output {
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    run(&refs)
}

fn spawn(a: &[String]) -> Child {
    Command::new(attndet_bin())
        .args(a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn attndet")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(global_iter, loss, terms)` of the train lines of a work dir's log.
fn losses(work_dir: &Path) -> Vec<(u64, f64, Vec<f64>)> {
    std::fs::read_to_string(work_dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .map(|v| {
            let terms = v["terms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t[1].as_f64().unwrap())
                .collect();
            (
                v["global_iter"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                terms,
            )
        })
        .collect()
}

fn assert_same_losses(a: &[(u64, f64, Vec<f64>)], b: &[(u64, f64, Vec<f64>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{what}");
        let close = |p: f64, q: f64| (p - q).abs() <= 1e-4 * p.abs().max(q.abs()).max(1e-3);
        assert!(
            close(x.1, y.1),
            "{what}: iteration {}: loss {} vs {}",
            x.0,
            x.1,
            y.1
        );
        for (p, q) in x.2.iter().zip(&y.2) {
            assert!(close(*p, *q), "{what}: iteration {}: term {p} vs {q}", x.0);
        }
    }
}

/// Every parameter of a checkpoint, flattened in the model's order.
fn weights(ckpt: &Path) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.extend(p.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let cfg_path = ckpt.parent().unwrap().join("config.json");
    let (cfg, _): (ExperimentConfig, _) = load_typed(&cfg_path, &[]).unwrap();
    let device = Default::default();
    let model = AnyDetector::<Flex>::from_config(&cfg.model, &device).unwrap();
    let model = checkpoint::load_model(ckpt, model, &device).unwrap();
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

fn assert_same_weights(a: &Path, b: &Path) {
    assert_close_weights(a, b, 1e-4);
}

fn assert_close_weights(a: &Path, b: &Path, tol: f32) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    let worst = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-2))
        .fold(0f32, f32::max);
    assert!(
        worst <= tol,
        "{} vs {}: weights differ by {worst:e} (relative)",
        a.display(),
        b.display()
    );
}

/// Free-looking localhost ports for one test (distinct per process and per test).
fn port_base(salt: u16) -> u16 {
    20_000 + (std::process::id() % 2_000) as u16 * 10 + salt
}

/// Two replicas in one process train as one device with the global batch: 14 images in global batches of 4 (the last batch of each epoch has 2: the second replica's share
/// is empty), 2 epochs = 8 iterations; then the dist-train checkpoint of epoch 1 resumes with plain
/// `train` and continues as the uninterrupted run (iterations 5-8), and with `dist-train` as the
/// uninterrupted 2-replica run, bit for bit; `train` resumed by `train` is `train` bit for bit.
#[test]
fn retinanet_replicas_equal_one_device_and_resume_with_train() {
    let tmp = TempDir::new("dist-retinanet");
    let dir = tmp.path();
    synth_dataset(dir, 14, 2, 64, 5);
    let one = dir.join("one");
    ok(&run_args(&args(
        "train",
        RETINANET,
        &one,
        &[],
        &tiny(dir, RETINANET, 4),
    )));
    let two = dir.join("two");
    ok(&run_args(&args(
        "dist-train",
        RETINANET,
        &two,
        &["--devices", "cpu,cpu"],
        &tiny(dir, RETINANET, 2),
    )));
    let reference = losses(&one);
    assert_eq!(reference.len(), 8);
    assert_same_losses(&reference, &losses(&two), "2 replicas vs 1 device");
    assert_same_weights(&one.join("epoch_2"), &two.join("epoch_2"));

    // resume: 2 replicas for epoch 1, then one device continues
    let split = dir.join("split");
    let mut first = tiny(dir, RETINANET, 2);
    first.push("runner.max_epochs=1".into());
    ok(&run_args(&args(
        "dist-train",
        RETINANET,
        &split,
        &["--devices", "cpu,cpu"],
        &first,
    )));
    let ckpt = split.join("epoch_1").display().to_string();
    ok(&run_args(&args(
        "train",
        RETINANET,
        &split,
        &["--resume", &ckpt],
        &tiny(dir, RETINANET, 4),
    )));
    assert_same_losses(&reference, &losses(&split), "dist-train epoch 1 + train epoch 2");
    // (the frozen BatchNorm statistics once came back from a checkpoint requiring gradients and were moved
    // by the optimizer: 8.4e-4 apart here, found by this comparison)
    assert_same_weights(&one.join("epoch_2"), &split.join("epoch_2"));

    // dist-train resumed by dist-train (this panicked in backward: the replicas shared the loaded running
    // statistics, tracked, so their autograd graphs merged)
    let again = dir.join("again");
    ok(&run_args(&args(
        "dist-train",
        RETINANET,
        &again,
        &["--devices", "cpu,cpu"],
        &first,
    )));
    let ckpt = again.join("epoch_1").display().to_string();
    ok(&run_args(&args(
        "dist-train",
        RETINANET,
        &again,
        &["--devices", "cpu,cpu", "--resume", &ckpt],
        &tiny(dir, RETINANET, 2),
    )));
    assert_same_losses(
        &reference,
        &losses(&again),
        "dist-train epoch 1 + dist-train epoch 2",
    );
    assert_close_weights(&two.join("epoch_2"), &again.join("epoch_2"), 0.0);

    // and plain `train` resumed by `train` with frozen statistics (`norm_eval`, every COCO config's
    // setting) is the uninterrupted run bit for bit
    let plain = dir.join("plain");
    let mut one_epoch = tiny(dir, RETINANET, 4);
    one_epoch.push("runner.max_epochs=1".into());
    ok(&run_args(&args("train", RETINANET, &plain, &[], &one_epoch)));
    let ckpt = plain.join("epoch_1").display().to_string();
    ok(&run_args(&args(
        "train",
        RETINANET,
        &plain,
        &["--resume", &ckpt],
        &tiny(dir, RETINANET, 4),
    )));
    assert_close_weights(&one.join("epoch_2"), &plain.join("epoch_2"), 0.0);
}

/// Faster R-CNN: the RPN's sampled-anchor normaliser and the RoI head's sampled-RoI normaliser are reduced
/// over replicas, so 2 replicas equal one device too.
#[test]
fn faster_rcnn_two_replicas_equal_one_device() {
    let tmp = TempDir::new("dist-faster-rcnn");
    let dir = tmp.path();
    synth_dataset(dir, 14, 2, 64, 6);
    let one = dir.join("one");
    ok(&run_args(&args(
        "train",
        FASTER_RCNN,
        &one,
        &[],
        &tiny(dir, FASTER_RCNN, 4),
    )));
    let two = dir.join("two");
    ok(&run_args(&args(
        "dist-train",
        FASTER_RCNN,
        &two,
        &["--devices", "cpu,cpu"],
        &tiny(dir, FASTER_RCNN, 2),
    )));
    let reference = losses(&one);
    assert_eq!(reference.len(), 8);
    assert_eq!(reference[0].2.len(), 4, "rpn cls/bbox, rcnn cls/bbox");
    assert_same_losses(&reference, &losses(&two), "2 replicas vs 1 device");
    assert_same_weights(&one.join("epoch_2"), &two.join("epoch_2"));
}

fn corrupt_first_train_image(dir: &Path) -> PathBuf {
    let imgs = dir.join("data/train");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&imgs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    std::fs::write(&files[0], b"not an image").unwrap();
    files[0].clone()
}

/// A corrupt image on one replica stops every replica, naming the file (exit 2, bad input).
#[test]
fn a_corrupt_image_stops_every_replica_and_names_the_file() {
    let tmp = TempDir::new("dist-corrupt");
    let dir = tmp.path();
    synth_dataset(dir, 6, 2, 64, 7);
    let bad = corrupt_first_train_image(dir);
    let name = bad.file_name().unwrap().to_string_lossy().to_string();
    let out = run_args(&args(
        "dist-train",
        RETINANET,
        &dir.join("w"),
        &["--devices", "cpu,cpu"],
        &tiny(dir, RETINANET, 2),
    ));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&name),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kill -9 of node 1 makes node 0 exit with an error naming it within the timeout; its checkpoints stay.
#[test]
fn a_killed_node_ends_the_other_within_the_timeout() {
    let tmp = TempDir::new("dist-kill");
    let dir = tmp.path();
    synth_dataset(dir, 8, 2, 64, 8);
    let work = dir.join("w");
    let master = format!("127.0.0.1:{}", port_base(6));
    let mut o = tiny(dir, RETINANET, 2);
    o.push("runner.max_epochs=50".into());
    let node = |rank: &str| {
        spawn(&args(
            "dist-train",
            RETINANET,
            &work,
            &[
                "--devices",
                "cpu",
                "--nnodes",
                "2",
                "--node-rank",
                rank,
                "--master",
                &master,
                "--timeout",
                "5",
            ],
            &o,
        ))
    };
    let (n0, mut n1) = (node("0"), node("1"));
    // wait for the first checkpoint, then kill node 1
    let start = Instant::now();
    while !work.join("epoch_1/state.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint within 300 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    n1.kill().unwrap();
    let _ = n1.wait();
    let killed = Instant::now();
    let out = n0.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "node 0 took {:?}",
        killed.elapsed()
    );
    assert!(err.contains("node 1"), "{err}");
    assert!(work.join("epoch_1/model.mpk").exists());
}

/// Bad `--devices`, node and master arguments exit 2 with a message naming the flag.
#[test]
fn bad_arguments_exit_2() {
    let tmp = TempDir::new("dist-bad");
    let dir = tmp.path();
    synth_dataset(dir, 2, 1, 64, 9);
    let o = tiny(dir, RETINANET, 1);
    let port = port_base(8);
    let _taken = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    let taken = format!("127.0.0.1:{port}");
    for (extra, needle) in [
        (vec!["--devices", "cpu,gpu"], "unknown device `gpu`"),
        (vec!["--devices", ""], "--devices"),
        (vec!["--devices", "cpu,cuda:0"], "mixes"),
        (vec!["--devices", "cpu", "--nnodes", "2"], "--master"),
        (
            vec![
                "--devices",
                "cpu",
                "--nnodes",
                "2",
                "--node-rank",
                "2",
                "--master",
                "127.0.0.1:1",
            ],
            "--node-rank",
        ),
        (
            vec![
                "--devices",
                "cpu",
                "--nnodes",
                "2",
                "--master",
                "no-such-host.invalid:29500",
            ],
            "--master",
        ),
        (
            vec!["--devices", "cpu", "--nnodes", "2", "--master", &taken],
            "cannot be used",
        ),
        (
            vec![
                "--devices",
                "cpu",
                "--nnodes",
                "2",
                "--node-rank",
                "1",
                "--master",
                "127.0.0.1:9",
                "--timeout",
                "2",
            ],
            "node 0 did not answer",
        ),
    ] {
        let out = run_args(&args("dist-train", RETINANET, &dir.join("w"), &extra, &o));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}

/// Two processes on localhost, one CPU replica each, train as one device with the global batch; only node 0
/// writes.
#[test]
fn two_nodes_equal_one_device() {
    let tmp = TempDir::new("dist-nodes");
    let dir = tmp.path();
    synth_dataset(dir, 14, 2, 64, 5);
    let one = dir.join("one");
    ok(&run_args(&args(
        "train",
        RETINANET,
        &one,
        &[],
        &tiny(dir, RETINANET, 4),
    )));
    let reference = losses(&one);
    // two processes on localhost, one CPU replica each; only node 0 writes
    let nodes = dir.join("nodes");
    let master = format!("127.0.0.1:{}", port_base(0));
    let node = |rank: &str| {
        spawn(&args(
            "dist-train",
            RETINANET,
            &nodes,
            &[
                "--devices",
                "cpu",
                "--nnodes",
                "2",
                "--node-rank",
                rank,
                "--master",
                &master,
                "--timeout",
                "120",
            ],
            &tiny(dir, RETINANET, 2),
        ))
    };
    let (n0, n1) = (node("0"), node("1"));
    let (o1, o0) = (n1.wait_with_output().unwrap(), n0.wait_with_output().unwrap());
    ok(&o0);
    ok(&o1);
    assert_same_losses(&reference, &losses(&nodes), "2 nodes vs 1 device");
    assert_same_weights(&one.join("epoch_2"), &nodes.join("epoch_2"));
}

/// A corrupt image on one node stops both, each naming the file.
#[test]
fn a_corrupt_image_on_one_node_stops_both() {
    let tmp = TempDir::new("dist-corrupt-nodes");
    let dir = tmp.path();
    synth_dataset(dir, 6, 2, 64, 7);
    let bad = corrupt_first_train_image(dir);
    let name = bad.file_name().unwrap().to_string_lossy().to_string();
    let master = format!("127.0.0.1:{}", port_base(3));
    let node = |rank: &str| {
        spawn(&args(
            "dist-train",
            RETINANET,
            &dir.join("n"),
            &[
                "--devices",
                "cpu",
                "--nnodes",
                "2",
                "--node-rank",
                rank,
                "--master",
                &master,
                "--timeout",
                "60",
            ],
            &tiny(dir, RETINANET, 2),
        ))
    };
    let (n0, n1) = (node("0"), node("1"));
    for o in [n0.wait_with_output().unwrap(), n1.wait_with_output().unwrap()] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(err.contains(&name), "every node names the file: {err}");
    }
}

/// `src`'s synthetic set (`synth_dataset`) with only its `k`-th training image, written to `dst`.
fn one_image_set(src: &Path, dst: &Path, k: usize) {
    let (from, to) = (src.join("data"), dst.join("data"));
    std::fs::create_dir_all(to.join("annotations")).unwrap();
    for sub in ["train", "val"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(
        from.join("annotations/instances_val.json"),
        to.join("annotations/instances_val.json"),
    )
    .unwrap();
    let ann = from.join("annotations/instances_train.json");
    let mut coco: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ann).unwrap()).unwrap();
    let image = coco["images"][k].clone();
    let id = image["id"].clone();
    coco["images"] = serde_json::Value::Array(vec![image]);
    let kept: Vec<serde_json::Value> = coco["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["image_id"] == id)
        .cloned()
        .collect();
    coco["annotations"] = serde_json::Value::Array(kept);
    std::fs::write(
        to.join("annotations/instances_train.json"),
        serde_json::to_string(&coco).unwrap(),
    )
    .unwrap();
}

/// With BatchNorm training (`norm_eval` off), each replica keeps running statistics of its own batches, and
/// the checkpoint holds replica 0's, as a PyTorch DDP checkpoint holds rank 0's buffers. One iteration over
/// 2 images on 2 replicas of 1 image, at a learning rate too small to move a weight (1e-12): the checkpoint
/// must then equal a one-device run on replica 0's image alone (running mean 0.1 x that image's mean), and
/// differ from the run on both images (the mean of the two), which is what replicas sharing one running
/// state wrote before.
#[test]
fn training_batch_norm_keeps_replica_0s_running_statistics() {
    let tmp = TempDir::new("dist-running-stats");
    let dir = tmp.path();
    synth_dataset(dir, 2, 1, 64, 11);
    let overrides = |set: &Path, batch: usize| {
        let mut o = tiny(set, RETINANET, batch);
        o.retain(|s| !s.starts_with("model.backbone.norm_eval") && !s.starts_with("optimizer="));
        o.extend([
            "model.backbone.norm_eval=false".to_string(),
            r#"optimizer={"type": "SGD", "lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0}"#.into(),
            "runner.max_epochs=1".into(),
            "data.pipeline.flip_prob=0".into(),
        ]);
        o
    };
    let two = dir.join("two");
    ok(&run_args(&args(
        "dist-train",
        RETINANET,
        &two,
        &["--devices", "cpu,cpu"],
        &overrides(dir, 1),
    )));
    assert_eq!(losses(&two).len(), 1, "one iteration");
    let both = dir.join("both");
    ok(&run_args(&args(
        "train",
        RETINANET,
        &both,
        &[],
        &overrides(dir, 2),
    )));
    let dist = weights(&two.join("epoch_1"));
    let worst = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let mixed = worst(&dist, &weights(&both.join("epoch_1")));
    let mut alone = Vec::new();
    for k in 0..2 {
        let set = dir.join(format!("image{k}"));
        one_image_set(dir, &set, k);
        let work = set.join("work");
        ok(&run_args(&args(
            "train",
            RETINANET,
            &work,
            &[],
            &overrides(&set, 1),
        )));
        alone.push(worst(&dist, &weights(&work.join("epoch_1"))));
    }
    let best = alone.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(
        best <= 1e-6,
        "replica 0's running statistics are neither image's alone: {alone:?} (both images: {mixed})"
    );
    assert!(
        mixed > 1e3 * best.max(1e-7),
        "the test cannot tell one image's statistics from both: {mixed} vs {best}"
    );
}
