//! `attndet convert`: a reference checkpoint to ours, strictly checked against the architecture.
//!
//! Backbone mode (`--model NAME`): a PyTorch `.pth`/`.pth.tar` or PyTorch-named safetensors file to our
//! safetensors weights. Detector mode (`--config CONFIG`): a whole mmdetection detector (`.pth`) to our
//! checkpoint directory, which `attndet test CONFIG DIR` and `attndet infer CONFIG DIR` load.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_backbones::BackboneArch;
use attndet_detectors::config::ExperimentConfig;
use attndet_detectors::engine::checkpoint::{self, TrainState};
use attndet_detectors::models::foreign::{ForeignSummary, load_detector_checkpoint};
use attndet_detectors::models::{AnyDetector, DetBackend};
use burn::backend::Flex;
use clap::Args;

use crate::errors::bad_input;
use crate::train::{build_model, prepare};

/// Arguments of `attndet convert`.
#[derive(Args, Debug)]
#[command(
    long_about = "Convert released weights into attndet's formats.\n\n\
Backbone (--model NAME): the input is a PyTorch checkpoint (.pth or .pth.tar: a bare state_dict or a dict \
holding `state_dict`, keys with or without DataParallel's `module.` prefix; torchvision ResNet files load \
unchanged), a safetensors file with PyTorch naming, or one of our own files; the output is a safetensors file.\n\n\
Detector (--config CONFIG): the input is a whole mmdetection detector (RetinaNet, RPN or Faster R-CNN: its \
runner's {\"meta\", \"state_dict\"} file or a bare state dict) whose architecture the config describes, or, \
for a config with \"layout\": \"torchvision\" (configs/torchvision/), a torchvision RetinaNet, Faster R-CNN or \
Mask R-CNN state dict (91 classes, background first, rows reordered to ours); the \
output is a checkpoint directory for `attndet test CONFIG DIR` and `attndet infer CONFIG DIR` (which also \
take the .pth itself). A classifier with another number of classes than the config's is refused, naming the \
key; a checkpoint of the other layout than the config's is refused, naming its first key.\n\n\
Every tensor of the architecture must be present with its shape and every tensor of the file must be used: \
otherwise the missing, unexpected and mis-shaped keys are listed and the exit code is 2. The output is \
written atomically.",
    after_help = "Examples:\n  attndet convert --model dca_se_resnet50 --from dca_se_resnet50.pth.tar --out dca_se_resnet50.safetensors\n  \
attndet convert --config configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json \
--from faster_rcnn_r50_fpn_1x_coco_20200130-047c8118.pth --out work_dirs/faster_rcnn_mmdet\n  \
attndet convert --config configs/torchvision/fasterrcnn_resnet50_fpn.json \
--from fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --out work_dirs/fasterrcnn_tv"
)]
pub struct ConvertArgs {
    /// Zoo name of the checkpoint's backbone architecture (backbone mode).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub model: Option<String>,
    /// The detector's config (detector mode): the input is a whole mmdetection or torchvision detector.
    #[arg(long, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Config overrides `a.b.c=VALUE` (detector mode).
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1.., requires = "config")]
    pub cfg_options: Vec<String>,
    /// Checkpoint to read.
    #[arg(long = "from", value_name = "FILE.pth")]
    pub from: PathBuf,
    /// safetensors file (backbone mode) or checkpoint directory (detector mode) to write.
    #[arg(long, value_name = "FILE.safetensors|DIR")]
    pub out: PathBuf,
}

/// Run `attndet convert`.
pub fn run(args: &ConvertArgs) -> anyhow::Result<()> {
    if let Some(config) = &args.config {
        return convert_detector(config, &args.cfg_options, &args.from, &args.out);
    }
    let name = args.model.as_deref().unwrap_or_default();
    let arch = BackboneArch::parse(name)?;
    let mut model = arch.build_lazy::<Flex>(&Default::default())?;
    let summary = model.load_weights(&arch, &args.from)?;
    model
        .save_weights(&args.out)
        .with_context(|| format!("converting {}", args.from.display()))?;
    eprintln!(
        "{}: {} tensors from {} written to {}",
        arch.name(),
        summary.applied,
        args.from.display(),
        args.out.display()
    );
    Ok(())
}

/// Build the configured detector and read a whole foreign (mmdetection or torchvision) checkpoint into it,
/// strictly.
/// Every failure is bad input (exit 2).
pub fn load_foreign_model<B: DetBackend>(
    cfg: &ExperimentConfig,
    file: &Path,
    device: &B::Device,
) -> anyhow::Result<(AnyDetector<B>, ForeignSummary)> {
    let mut model = build_model::<B>(cfg, device)?;
    let summary =
        load_detector_checkpoint(&mut model, &cfg.model, file).map_err(|e| bad_input(e.to_string()))?;
    Ok((model, summary))
}

fn convert_detector(config: &Path, overrides: &[String], from: &Path, out: &Path) -> anyhow::Result<()> {
    let p = prepare(config, overrides, None)?;
    let (model, summary) = load_foreign_model::<Flex>(&p.cfg, from, &Default::default())?;
    let state = TrainState {
        epoch: 0,
        global_iter: 0,
        seed: p.cfg.seed,
        base_lr: p.cfg.optimizer.lr(),
        best: None,
        config: p.resolved.clone(),
        // the class names of the config's annotations when they can be read (test and infer show them)
        classes: crate::train::load_split(&p.cfg, false)
            .map(|(_, d)| d.category_names)
            .unwrap_or_default(),
    };
    checkpoint::save_model(out, &model, &state).with_context(|| format!("converting {}", from.display()))?;
    eprintln!(
        "{}: {} tensors of {} from {} written to {} (a checkpoint without optimizer state: for test and infer)",
        model.type_name(),
        summary.applied,
        summary.in_file,
        from.display(),
        out.display()
    );
    Ok(())
}
