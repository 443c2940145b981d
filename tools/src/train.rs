//! `attndet train CONFIG`: train a detector from a config, with checkpoints, resume, evaluation, a progress
//! bar, a JSON-lines log and loss/AP plots in the work dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use attndet_coco::CocoDataset;
use attndet_detectors::config::ExperimentConfig;
use attndet_detectors::data::coco::{DetDataset, records_with_class_ids};
use attndet_detectors::engine::checkpoint;
use attndet_detectors::engine::evaluate::{
    EvalResults, evaluate_kinds_on, predict_records, summary_text, test_loader_options,
};
use attndet_detectors::engine::log::IterRecord;
use attndet_detectors::engine::trainer::{TrainError, TrainHooks, TrainSetup, train};
use attndet_detectors::models::{AnyDetector, DetBackend, Detector, EvalKind};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config_cmd::load_config;
use crate::device::{BackendJob, DeviceArg, DeviceOpt};
use crate::errors::bad_input;

/// Arguments of `attndet train`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
attndet train configs/retinanet/retinanet_r50_fpn_1x_coco.json --work-dir work_dirs/r50 \\\n      \
--cfg-options data.data_root=data/coco model.backbone.init_checkpoint=resnet50.pth\n  \
attndet train configs/retinanet/retinanet_r50_fpn_1x_coco.json --work-dir work_dirs/r50 --resume\n  \
attndet train CONFIG --resume work_dirs/r50/epoch_3 --cfg-options optimizer.lr=0.005   # the log says what changed")]
pub struct TrainArgs {
    /// The config (JSON), e.g. configs/retinanet/retinanet_r50_fpn_1x_coco.json.
    pub config: PathBuf,
    /// Where checkpoints, `log.jsonl`, `config.json` and plots go [default: work_dirs/<config name>].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Continue a run exactly: from CKPT (a checkpoint directory such as WORK_DIR/epoch_3), or without a value
    /// from the newest checkpoint of the work dir.
    #[arg(long, value_name = "CKPT", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Config overrides `a.b.c=VALUE` (e.g. optimizer.lr=0.005 lr_config.step=8,11).
    #[arg(long = "cfg-options", value_name = "KEY=VALUE", num_args = 1..)]
    pub cfg_options: Vec<String>,
    /// Seed of initialisation, data order and flips (overrides the config's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Scale the learning rate linearly with the batch size (base batch from `auto_scale_lr.base_batch_size`).
    #[arg(long)]
    pub auto_scale_lr: bool,
    /// Stop after this many iterations (smoke tests); the schedule is still the config's.
    #[arg(long, hide = true)]
    pub max_iters: Option<usize>,
    /// No progress bar (logs still go to the work dir).
    #[arg(long)]
    pub quiet: bool,
    /// Mixed precision (f16 compute, f32 master weights, loss scaling): refused in this version, with the reason
    /// (burn 0.21 offers no autocast; see the README's GPU section).
    #[arg(long)]
    pub amp: bool,
    /// The compute device.
    #[command(flatten)]
    pub device: DeviceOpt,
}

/// A config with `--seed` applied, its resolved JSON, and the data it names.
pub struct Prepared {
    /// Typed config.
    pub cfg: ExperimentConfig,
    /// Resolved JSON.
    pub resolved: serde_json::Value,
}

/// Load a config and apply `--seed`.
pub fn prepare(config: &Path, overrides: &[String], seed: Option<u64>) -> anyhow::Result<Prepared> {
    let (cfg, resolved) = load_config(config, overrides)?;
    Ok(with_seed(Prepared { cfg, resolved }, seed))
}

/// Apply `--seed` to a loaded config (typed and resolved alike).
pub fn with_seed(mut p: Prepared, seed: Option<u64>) -> Prepared {
    if let Some(s) = seed {
        p.cfg.seed = s;
        p.resolved["seed"] = serde_json::json!(s);
    }
    p
}

/// Load a split of the config's dataset.
pub fn load_split(cfg: &ExperimentConfig, train: bool) -> anyhow::Result<(CocoDataset, DetDataset)> {
    let root = Path::new(&cfg.data.data_root);
    let split = if train { &cfg.data.train } else { &cfg.data.val };
    let ann = root.join(&split.ann_file);
    let coco = CocoDataset::load(&ann).map_err(|e| {
        bad_input(format!(
            "data.{}.ann_file: {e}",
            if train { "train" } else { "val" }
        ))
    })?;
    let det = records_with_class_ids(
        &coco,
        &root.join(&split.img_dir),
        train,
        cfg.model.class_ids(),
        cfg.model.num_classes(),
    );
    Ok((coco, det))
}

/// Build the configured detector on backend `B`.
pub fn build_model<B: DetBackend>(
    cfg: &ExperimentConfig,
    device: &B::Device,
) -> anyhow::Result<AnyDetector<B>> {
    AnyDetector::from_config(&cfg.model, device).map_err(|e| bad_input(e.to_string()))
}

/// Progress bar style shared by training and evaluation.
pub fn bar(len: u64, template: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// The evaluations of each kind and the per-image detections.
pub type EvalOutput = (
    Vec<attndet_detectors::engine::evaluate::KindEvaluation>,
    Vec<(u64, attndet_detectors::models::Detections)>,
);

/// The kinds to evaluate: the config's `evaluation.metric`, else what the model predicts.
pub fn eval_kinds<B: Backend, M: Detector<B>>(model: &M, cfg: &ExperimentConfig) -> Vec<EvalKind> {
    if cfg.evaluation.metric.is_empty() {
        model.eval_kinds()
    } else {
        cfg.evaluation.metric.clone()
    }
}

/// Run inference over the val split and evaluate each of `kinds`; shows a progress bar unless quiet.
pub fn evaluate_val<B: Backend, M: Detector<B>>(
    model: &M,
    cfg: &ExperimentConfig,
    val: &(CocoDataset, DetDataset),
    kinds: &[EvalKind],
    device: &B::Device,
    quiet: bool,
) -> anyhow::Result<EvalOutput> {
    let records = Arc::new(val.1.records.clone());
    let pb = bar(
        records.len() as u64,
        "  eval  [{bar:30}] {pos}/{len} images, {elapsed} < {eta}",
        quiet,
    );
    let preds = predict_records(
        model,
        records,
        &test_loader_options(cfg),
        device,
        &mut |done, _| pb.set_position(done as u64),
    )?;
    pb.finish_and_clear();
    // images skipped as unreadable (`data.skip_bad_images`) are left out of the evaluation, not scored as
    // images where every object was missed
    let scored: Option<Vec<u64>> =
        (preds.len() < val.1.records.len()).then(|| preds.iter().map(|(id, _)| *id).collect());
    let evals = evaluate_kinds_on(&val.0, &preds, &val.1.category_ids, kinds, scored)?;
    Ok((evals, preds))
}

/// The training hooks of the command line: an indicatif bar with the losses when stderr is a terminal, a
/// plain line every `log_config.interval` iterations otherwise (logs, CI), and the checkpoint, resume and
/// best-checkpoint messages on both.
pub(crate) struct CliHooks<'a, B: Backend> {
    cfg: &'a ExperimentConfig,
    val: Option<&'a (CocoDataset, DetDataset)>,
    quiet: bool,
    /// stderr is not a terminal: plain lines instead of the bar.
    plain: bool,
    pub(crate) bar: ProgressBar,
    device: &'a B::Device,
    /// `--max-iters`, which may end the run before the schedule does.
    max_iters: Option<usize>,
    /// Seconds of the latest iterations (for the ETA of the whole run).
    recent: std::collections::VecDeque<f64>,
}

impl<'a, B: Backend> CliHooks<'a, B> {
    pub(crate) fn new(
        cfg: &'a ExperimentConfig,
        val: Option<&'a (CocoDataset, DetDataset)>,
        quiet: bool,
        device: &'a B::Device,
        max_iters: Option<usize>,
    ) -> Self {
        use std::io::IsTerminal;
        Self {
            cfg,
            val,
            quiet,
            plain: !std::io::stderr().is_terminal(),
            bar: ProgressBar::hidden(),
            device,
            max_iters,
            recent: std::collections::VecDeque::new(),
        }
    }

    /// Print a message above the bar, or as a plain line (nothing when quiet).
    pub(crate) fn say(&self, msg: &str) {
        if self.quiet {
            return;
        }
        // a hidden bar (no terminal, or before the first epoch) would swallow the line
        if self.plain || self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }

    /// Seconds left in the whole run, from the mean time of the latest iterations (evaluation not counted).
    fn run_eta(&mut self, r: &IterRecord) -> f64 {
        self.recent.push_back(r.time);
        if self.recent.len() > 20 {
            self.recent.pop_front();
        }
        let per_iter = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        let total =
            (self.cfg.runner.max_epochs * r.iters_per_epoch).min(self.max_iters.unwrap_or(usize::MAX));
        total.saturating_sub(r.global_iter) as f64 * per_iter
    }
}

/// The number of evaluated images and, when some were skipped as unreadable, a note saying how many.
pub fn evaluated_images(records: usize, predicted: usize) -> (usize, String) {
    let skipped = records.saturating_sub(predicted);
    let note = if skipped > 0 {
        format!(" ({skipped} unreadable image(s) skipped, data.skip_bad_images)")
    } else {
        String::new()
    };
    (predicted, note)
}

/// `h:mm:ss` of a number of seconds.
fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl<'a, B: Backend, M: Detector<B>> TrainHooks<M> for CliHooks<'a, B> {
    fn on_epoch_start(&mut self, epoch: usize, iters: usize) {
        let h = self;
        h.bar.finish_and_clear();
        h.bar = bar(
            iters as u64,
            &format!(
                "epoch {epoch}/{} [{{bar:25}}] {{pos}}/{{len}} {{elapsed}} < {{eta}} {{msg}}",
                h.cfg.runner.max_epochs
            ),
            h.quiet || h.plain,
        );
    }

    fn on_iter(&mut self, r: &IterRecord) {
        let eta = hms(self.run_eta(r));
        if self.quiet {
            return;
        }
        let terms: Vec<String> = r
            .terms
            .iter()
            .map(|(n, v)| format!("{}={v:.4}", n.trim_start_matches("loss_")))
            .collect();
        let stats = format!(
            "loss={:.4} ({}) lr={:.2e} {:.2}s/it data={:.3}s mem={:.0}MiB",
            r.loss,
            terms.join(" "),
            r.lr,
            r.time,
            r.data_time,
            r.memory_mb
        );
        if self.plain {
            // the same iterations as log.jsonl
            if r.iter.is_multiple_of(self.cfg.log_config.interval.max(1)) || r.iter == r.iters_per_epoch {
                eprintln!(
                    "epoch {}/{} iter {}/{} {stats} eta {eta}",
                    r.epoch, self.cfg.runner.max_epochs, r.iter, r.iters_per_epoch
                );
            }
        } else {
            self.bar.set_message(format!("{stats} | run eta {eta}"));
            self.bar.set_position(r.iter as u64);
        }
    }

    fn evaluate(&mut self, model: &M, epoch: usize) -> Result<Option<EvalResults>, String> {
        let Some(val) = self.val else { return Ok(None) };
        self.bar.finish_and_clear();
        let kinds = eval_kinds(model, self.cfg);
        let (evals, preds) = evaluate_val(model, self.cfg, val, &kinds, self.device, self.quiet)
            .map_err(|e| format!("{e:#}"))?;
        if !self.quiet {
            let (evaluated, skipped) = evaluated_images(val.1.records.len(), preds.len());
            for e in &evals {
                eprintln!(
                    "epoch {epoch}: {} evaluation on {evaluated} val images{skipped}\n{}",
                    e.kind,
                    summary_text(e)
                );
            }
        }
        Ok(Some(evals.into_iter().map(|e| (e.kind, e.stats)).collect()))
    }

    fn on_checkpoint(&mut self, dir: &Path) {
        self.say(&format!("saved {}", dir.display()));
    }

    fn on_message(&mut self, msg: &str) {
        self.say(msg);
    }
}

/// The outcome of a training run for callers (demo).
pub struct TrainOutcome {
    /// Work dir.
    pub work_dir: PathBuf,
    /// Last checkpoint.
    pub last_checkpoint: Option<PathBuf>,
    /// Losses of the iterations run.
    pub losses: Vec<f64>,
}

/// A run's setup, what its training split left out, and the val split when evaluation is on.
pub type RunSetup = (TrainSetup, Skipped, Option<(CocoDataset, DetDataset)>);

/// What the training split left out: images without usable boxes, and boxes wholly outside their image.
#[derive(Debug, Clone, Copy)]
pub struct Skipped {
    /// Images left out because they had no usable box.
    pub images_without_boxes: usize,
    /// Boxes dropped because they lie wholly outside their image.
    pub boxes_outside_image: usize,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} without boxes skipped", self.images_without_boxes)?;
        if self.boxes_outside_image > 0 {
            write!(
                f,
                ", {} box(es) wholly outside their image dropped",
                self.boxes_outside_image
            )?;
        }
        Ok(())
    }
}

/// A run's setup from its arguments: the work dir, the resume checkpoint, the training split (and the
/// number of its images without boxes) and the val split when evaluation is on.
pub fn train_setup(args: &TrainArgs, p: &Prepared) -> anyhow::Result<RunSetup> {
    let cfg = &p.cfg;
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        PathBuf::from("work_dirs").join(
            args.config
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        )
    });
    let resume_from = match &args.resume {
        None => None,
        Some(None) => Some(checkpoint::latest(&work_dir).ok_or_else(|| {
            bad_input(format!(
                "--resume: no checkpoint in {} (no `latest` file)",
                work_dir.display()
            ))
        })?),
        Some(Some(p)) => {
            if !p.join("state.json").exists() {
                return Err(bad_input(format!(
                    "--resume {}: not a checkpoint directory (no state.json)",
                    p.display()
                )));
            }
            Some(p.clone())
        }
    };
    let train_set = load_split(cfg, true)?;
    if train_set.1.records.is_empty() {
        return Err(bad_input(format!(
            "data.train: {} has no image with a usable box",
            cfg.data.train.ann_file
        )));
    }
    let val = if cfg.evaluation.interval > 0 {
        Some(load_split(cfg, false)?)
    } else {
        None
    };
    let skipped = Skipped {
        images_without_boxes: train_set.1.images_without_boxes,
        boxes_outside_image: train_set.1.boxes_outside_image,
    };
    let notice = format!(
        "training {} on {} images ({skipped}), work dir {}",
        args.config.display(),
        train_set.1.records.len(),
        work_dir.display()
    );
    let setup = TrainSetup {
        cfg: cfg.clone(),
        resolved: p.resolved.clone(),
        work_dir: work_dir.clone(),
        train_records: Arc::new(train_set.1.records.clone()),
        resume_from,
        classes: train_set.1.category_names.clone(),
        auto_scale_lr: args.auto_scale_lr,
        max_iters: args.max_iters,
        notices: vec![notice],
    };
    Ok((setup, skipped, val))
}

/// Train on backend `B`.
pub fn run_on<B: AutodiffBackend + DetBackend>(
    args: &TrainArgs,
    p: &Prepared,
    device: &B::Device,
) -> anyhow::Result<TrainOutcome>
where
    B::InnerBackend: DetBackend,
    AnyDetector<B>: AutodiffModule<B, InnerModule = AnyDetector<B::InnerBackend>>,
{
    let cfg = &p.cfg;
    let (setup, _, val) = train_setup(args, p)?;
    let work_dir = setup.work_dir.clone();
    B::seed(device, cfg.seed);
    let model = build_model::<B>(cfg, device)?;
    let mut hooks = CliHooks::<B::InnerBackend>::new(cfg, val.as_ref(), args.quiet, device, args.max_iters);
    let result = train::<B, AnyDetector<B>, _>(model, &setup, device, &mut hooks);
    hooks.bar.finish_and_clear();
    let (_, summary) = result.map_err(train_error)?;
    if let Err(e) = crate::plot::plot_work_dir(&work_dir) {
        eprintln!("warning: could not draw the curves: {e:#}");
    }
    Ok(TrainOutcome {
        work_dir,
        last_checkpoint: summary.last_checkpoint,
        losses: summary.losses,
    })
}

/// A training error for the command line: a bad config, resume checkpoint or model input exits 2.
pub fn train_error(e: TrainError) -> anyhow::Error {
    match e {
        TrainError::Resume { .. } | TrainError::Config(_) | TrainError::WorkDirReused { .. } => {
            bad_input(e.to_string())
        }
        TrainError::Model(m) => bad_input(m.to_string()),
        other => anyhow::Error::new(other),
    }
}

/// Training on the autodiff version of whichever backend `--device` names.
pub struct TrainJob<'a> {
    /// The training arguments.
    pub args: &'a TrainArgs,
    /// The resolved config and its paths.
    pub prepared: &'a Prepared,
}

impl BackendJob for TrainJob<'_> {
    type Output = TrainOutcome;

    fn run<B: DetBackend>(self, device: &B::Device) -> anyhow::Result<TrainOutcome> {
        run_on::<burn::backend::Autodiff<B>>(self.args, self.prepared, device)
    }
}

/// Run `attndet train`.
pub fn run(args: &TrainArgs, device: &DeviceArg) -> anyhow::Result<()> {
    if args.amp {
        return Err(crate::device::amp_refused(device));
    }
    device.check_usable()?;
    let mut p = prepare(&args.config, &args.cfg_options, args.seed)?;
    if args.auto_scale_lr {
        // recorded in config.json and the checkpoints: what runs, and what a resume recomputes the lr from
        p.cfg.auto_scale_lr.enable = true;
        p.resolved["auto_scale_lr"]["enable"] = serde_json::json!(true);
    }
    let out = device.run(TrainJob { args, prepared: &p })?;
    println!(
        "done: {} iterations; last checkpoint {}",
        out.losses.len(),
        out.last_checkpoint
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into())
    );
    Ok(())
}

/// Load a checkpoint's model into a freshly built model on `B` (inference). `ckpt` is a checkpoint directory,
/// a work dir (its newest checkpoint), or a file: a whole mmdetection or torchvision detector (`.pth`, as `model.layout`), read strictly.
pub fn load_checkpoint_model<B: DetBackend>(
    cfg: &ExperimentConfig,
    ckpt: &Path,
    device: &B::Device,
) -> anyhow::Result<AnyDetector<B>> {
    if ckpt.is_file() {
        return Ok(crate::convert::load_foreign_model::<B>(cfg, ckpt, device)?.0);
    }
    let dir = if ckpt.join("state.json").exists() {
        ckpt.to_path_buf()
    } else if let Some(latest) = checkpoint::latest(ckpt) {
        latest
    } else {
        return Err(bad_input(format!(
            "{}: not a checkpoint directory (no state.json) nor a work dir with one",
            ckpt.display()
        )));
    };
    let model = build_model::<B>(cfg, device)?;
    checkpoint::load_model(&dir, model, device)
        .with_context(|| format!("loading {}", dir.display()))
        .map_err(|e| bad_input(format!("{e:#}")))
}
