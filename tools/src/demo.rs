//! `attndet demo`: the whole loop on a fresh machine, CPU only, no downloads. Generates the synthetic shapes
//! dataset, trains a small detector (RetinaNet, Faster, Mask or Cascade R-CNN on a ResNet-18 FPN) from scratch,
//! evaluates it on the val split with the COCO metric, draws a few val images with their detections, and prints
//! the COCO table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use attndet_coco::synth::{self, SynthConfig};
use clap::{Args, ValueEnum};

use crate::device::DeviceArg;
use crate::errors::bad_input;
use attndet_detectors::engine::evaluate::summary_text;

use crate::train::{
    TrainArgs, TrainJob, eval_kinds, evaluate_val, load_checkpoint_model, load_split, prepare,
};

/// The shared bases of the demo configs, compiled into the binary (paths relative to `configs/`).
const SHARED_BASES: [(&str, &str); 3] = [
    (
        "_base_/datasets/synth_shapes.json",
        include_str!("../../configs/_base_/datasets/synth_shapes.json"),
    ),
    (
        "_base_/schedules/schedule_1x.json",
        include_str!("../../configs/_base_/schedules/schedule_1x.json"),
    ),
    (
        "_base_/default_runtime.json",
        include_str!("../../configs/_base_/default_runtime.json"),
    ),
];

/// RetinaNet's demo config and its model base.
const RETINANET_FILES: [(&str, &str); 2] = [
    (
        "retinanet/retinanet_r18_fpn_synth_demo.json",
        include_str!("../../configs/retinanet/retinanet_r18_fpn_synth_demo.json"),
    ),
    (
        "_base_/models/retinanet_r50_fpn.json",
        include_str!("../../configs/_base_/models/retinanet_r50_fpn.json"),
    ),
];

/// Faster R-CNN's demo config and its model bases.
const FASTER_RCNN_FILES: [(&str, &str); 3] = [
    (
        "faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json",
        include_str!("../../configs/faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json"),
    ),
    (
        "_base_/models/faster_rcnn_r50_fpn.json",
        include_str!("../../configs/_base_/models/faster_rcnn_r50_fpn.json"),
    ),
    (
        "_base_/models/rpn_r50_fpn.json",
        include_str!("../../configs/_base_/models/rpn_r50_fpn.json"),
    ),
];

/// Mask R-CNN's demo config and its model bases.
const MASK_RCNN_FILES: [(&str, &str); 4] = [
    (
        "mask_rcnn/mask_rcnn_r18_fpn_synth_demo.json",
        include_str!("../../configs/mask_rcnn/mask_rcnn_r18_fpn_synth_demo.json"),
    ),
    (
        "_base_/models/mask_rcnn_r50_fpn.json",
        include_str!("../../configs/_base_/models/mask_rcnn_r50_fpn.json"),
    ),
    (
        "_base_/models/faster_rcnn_r50_fpn.json",
        include_str!("../../configs/_base_/models/faster_rcnn_r50_fpn.json"),
    ),
    (
        "_base_/models/rpn_r50_fpn.json",
        include_str!("../../configs/_base_/models/rpn_r50_fpn.json"),
    ),
];

/// Cascade R-CNN's demo config and its model bases.
const CASCADE_RCNN_FILES: [(&str, &str); 3] = [
    (
        "cascade_rcnn/cascade_rcnn_r18_fpn_synth_demo.json",
        include_str!("../../configs/cascade_rcnn/cascade_rcnn_r18_fpn_synth_demo.json"),
    ),
    (
        "_base_/models/cascade_rcnn_r50_fpn.json",
        include_str!("../../configs/_base_/models/cascade_rcnn_r50_fpn.json"),
    ),
    (
        "_base_/models/rpn_r50_fpn.json",
        include_str!("../../configs/_base_/models/rpn_r50_fpn.json"),
    ),
];

/// Detectors the demo can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoDetector {
    /// RetinaNet with a ResNet-18 FPN.
    Retinanet,
    /// Faster R-CNN with a ResNet-18 FPN.
    #[value(name = "faster_rcnn", alias = "faster-rcnn")]
    FasterRcnn,
    /// Mask R-CNN with a ResNet-18 FPN (boxes and masks).
    #[value(name = "mask_rcnn", alias = "mask-rcnn")]
    MaskRcnn,
    /// Cascade R-CNN with a ResNet-18 FPN (three box stages).
    #[value(name = "cascade_rcnn", alias = "cascade-rcnn")]
    CascadeRcnn,
}

impl DemoDetector {
    /// The embedded demo config first, then the bases it needs beyond the shared ones.
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Retinanet => &RETINANET_FILES,
            Self::FasterRcnn => &FASTER_RCNN_FILES,
            Self::MaskRcnn => &MASK_RCNN_FILES,
            Self::CascadeRcnn => &CASCADE_RCNN_FILES,
        }
    }

    /// How the demo names the model it trains.
    fn title(self) -> &'static str {
        match self {
            Self::Retinanet => "RetinaNet (ResNet-18 FPN)",
            Self::FasterRcnn => "Faster R-CNN (ResNet-18 FPN)",
            Self::MaskRcnn => "Mask R-CNN (ResNet-18 FPN)",
            Self::CascadeRcnn => "Cascade R-CNN (ResNet-18 FPN)",
        }
    }

    /// The `--detector` value.
    fn name(self) -> &'static str {
        match self {
            Self::Retinanet => "retinanet",
            Self::FasterRcnn => "faster_rcnn",
            Self::MaskRcnn => "mask_rcnn",
            Self::CascadeRcnn => "cascade_rcnn",
        }
    }
}

/// Write the embedded demo config of `detector` and its bases under `dir`; returns the demo config's path.
fn write_embedded_config(dir: &Path, detector: DemoDetector) -> anyhow::Result<PathBuf> {
    for (rel, text) in detector.files().iter().chain(&SHARED_BASES) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir.join(detector.files()[0].0))
}

/// Arguments of `attndet demo`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
attndet demo                                   # RetinaNet, about 11 minutes on 2 cores\n  \
attndet demo --detector faster_rcnn --work-dir work_dirs/demo_frcnn --json\n  \
attndet demo --train-images 96 --val-images 16 --cfg-options runner.max_epochs=2   # a quick look")]
pub struct DemoArgs {
    /// Which detector to train.
    #[arg(long, value_enum, default_value = "retinanet")]
    pub detector: DemoDetector,
    /// Where the dataset, checkpoints, logs, plots and drawn images go.
    #[arg(long, default_value = "work_dirs/demo")]
    pub work_dir: PathBuf,
    /// The config to train [default: the built-in demo config of the detector
    /// (configs/<detector>/<detector>_r18_fpn_synth_demo.json), written with its bases to WORK_DIR/configs].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Config overrides `a.b.c=VALUE` (e.g. runner.max_epochs=4).
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
    /// Training images to generate.
    #[arg(long, default_value_t = 960)]
    pub train_images: usize,
    /// Validation images to generate.
    #[arg(long, default_value_t = 100)]
    pub val_images: usize,
    /// Side of the generated (square) images in pixels.
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    /// Seed of the dataset and of training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print a JSON object as the last line of stdout: `{"bbox": {"iou_type", "stats": [12], "AP", ...},
    /// "seconds": S, ...}` (each kind's object as `attndet eval --json` prints it).
    #[arg(long)]
    pub json: bool,
    /// Stop training after this many iterations (smoke tests).
    #[arg(long, hide = true)]
    pub max_iters: Option<usize>,
    /// The compute device.
    #[command(flatten)]
    pub device: crate::device::DeviceOpt,
}

/// Run `attndet demo`.
pub fn run(args: &DemoArgs, device: &DeviceArg) -> anyhow::Result<()> {
    device.check_usable()?;
    // training refuses a work dir holding another run; say so before generating the data, in the demo's terms
    let previous = attndet_detectors::engine::checkpoint::latest(&args.work_dir).or_else(|| {
        attndet_detectors::engine::checkpoint::epoch_checkpoints(&args.work_dir)
            .pop()
            .map(|(_, d)| d)
    });
    if let Some(ckpt) = previous {
        return Err(bad_input(format!(
            "demo: {} holds a previous run (checkpoint {}): remove the directory or give another --work-dir",
            args.work_dir.display(),
            ckpt.display()
        )));
    }
    let started = Instant::now();
    let config = match &args.config {
        Some(path) if !path.exists() => {
            return Err(bad_input(format!("demo config {} not found", path.display())));
        }
        Some(path) => path.clone(),
        None => write_embedded_config(&args.work_dir.join("configs"), args.detector)?,
    };
    let data_dir = args.work_dir.join("data");
    let synth_cfg = SynthConfig {
        train: args.train_images,
        val: args.val_images,
        size: args.image_size,
        seed: args.seed,
        max_objects: 3,
    };
    eprintln!(
        "demo: generating {} + {} synthetic {}x{} images in {}",
        args.train_images,
        args.val_images,
        args.image_size,
        args.image_size,
        data_dir.display()
    );
    let out = synth::generate(&data_dir, &synth_cfg).context("generating the synthetic dataset")?;
    let rel = |p: &Path| p.strip_prefix(&data_dir).unwrap_or(p).display().to_string();
    let mut overrides = vec![
        format!("data.data_root={}", json_string(&data_dir.display().to_string())),
        format!("data.train.ann_file={}", json_string(&rel(&out.train_ann))),
        format!("data.train.img_dir={}", json_string(&rel(&out.train_images))),
        format!("data.val.ann_file={}", json_string(&rel(&out.val_ann))),
        format!("data.val.img_dir={}", json_string(&rel(&out.val_images))),
        format!("data.pipeline.img_scale=[{0}, {0}]", args.image_size),
    ];
    overrides.extend(args.cfg_options.iter().cloned());
    let p = prepare(&config, &overrides, Some(args.seed))?;
    let train_args = TrainArgs {
        config: config.clone(),
        work_dir: Some(args.work_dir.clone()),
        resume: None,
        cfg_options: overrides,
        seed: Some(args.seed),
        auto_scale_lr: false,
        max_iters: args.max_iters,
        quiet: false,
        device: crate::device::DeviceOpt { device: *device },
        amp: false,
    };
    let train_started = Instant::now();
    let outcome = device.run(TrainJob {
        args: &train_args,
        prepared: &p,
    })?;
    let train_seconds = train_started.elapsed().as_secs_f64();
    let ckpt = outcome
        .last_checkpoint
        .clone()
        .ok_or_else(|| anyhow::anyhow!("training wrote no checkpoint"))?;
    let model = load_checkpoint_model::<burn::backend::Flex>(&p.cfg, &ckpt, &Default::default())?;
    let val = load_split(&p.cfg, false)?;
    let kinds = eval_kinds(&model, &p.cfg);
    let (evals, preds) = evaluate_val(&model, &p.cfg, &val, &kinds, &Default::default(), false)?;
    let show = args.work_dir.join("show");
    let files: std::collections::HashMap<u64, &Path> = val
        .1
        .records
        .iter()
        .map(|r| (r.image_id, r.file.as_path()))
        .collect();
    for (id, d) in preds.iter().take(6) {
        crate::test::save_drawn(files[id], d, &val.1.category_names, 0.3, &show)?;
    }
    let results = args.work_dir.join("val_results.json");
    for e in &evals {
        let path = crate::test::results_path(&results, e.kind, evals.len());
        attndet_coco::write_results(&path, &e.results)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{} trained from scratch on {} synthetic images, evaluated on {}:",
        args.detector.title(),
        args.train_images,
        val.1.records.len()
    );
    for e in &evals {
        print!("{}", summary_text(e));
    }
    println!(
        "iterations {}, training {:.0} s, total {:.0} s; checkpoint {}, results {}, curves {}, drawn images {}",
        outcome.losses.len(),
        train_seconds,
        started.elapsed().as_secs_f64(),
        ckpt.display(),
        results.display(),
        outcome.work_dir.join("loss.png").display(),
        show.display()
    );
    if args.json {
        let mut v = serde_json::json!({
                "seconds": started.elapsed().as_secs_f64(),
                "train_seconds": train_seconds,
                "iterations": outcome.losses.len(),
                "final_loss": outcome.losses.last(),
                "detector": args.detector.name(),
                "work_dir": args.work_dir,
                "checkpoint": ckpt,
        });
        for e in &evals {
            v[e.kind.name()] = crate::eval::kind_stats_json(e.kind, &e.stats);
        }
        println!("{v}");
    }
    Ok(())
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use attndet_detectors::config::{ExperimentConfig, load_typed};

    /// Each embedded demo config resolves with the embedded bases alone (a base left out of its file list
    /// fails here) to exactly the config of the source tree.
    #[test]
    fn embedded_configs_resolve_to_the_source_trees() {
        for detector in [
            DemoDetector::Retinanet,
            DemoDetector::FasterRcnn,
            DemoDetector::MaskRcnn,
            DemoDetector::CascadeRcnn,
        ] {
            let dir = std::env::temp_dir().join(format!(
                "attndet-demo-config-{}-{}",
                detector.name(),
                std::process::id()
            ));
            let embedded = write_embedded_config(&dir, detector).unwrap();
            let source = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../configs")
                .join(detector.files()[0].0);
            let (cfg, embedded): (ExperimentConfig, _) = load_typed(&embedded, &[]).unwrap();
            let (_, source): (ExperimentConfig, _) = load_typed(&source, &[]).unwrap();
            std::fs::remove_dir_all(&dir).ok();
            assert_eq!(embedded, source, "{}", detector.name());
            let epochs = match detector {
                DemoDetector::Retinanet => 18,
                DemoDetector::FasterRcnn => 12,
                DemoDetector::MaskRcnn => 8,
                DemoDetector::CascadeRcnn => 12,
            };
            assert_eq!(cfg.runner.max_epochs, epochs, "{}", detector.name());
        }
    }
}
