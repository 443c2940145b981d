//! The training loop: SGD or AdamW (PyTorch semantics), warmup + step schedule, optional no-decay-on-norm/bias
//! and global-norm clipping, a checkpoint per epoch, evaluation every N epochs with the best checkpoint kept,
//! a JSON-lines log, and an exact resume (same batches, same flips, same weights and momentum).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::checkpoint::{self, CheckpointError, TrainState};
use super::grads;
use super::lock::{self, LockError};
use super::log::{EvalRecord, EventRecord, IterRecord, JsonLog, LogLine, resident_memory_mb};
use super::schedule::{LrSchedule, auto_scaled_lr};
use crate::config::{ExperimentConfig, OptimizerConfig};
use crate::data::{Batch, DetRecord, EpochLoader, ImageError, LoaderOptions};
use crate::engine::evaluate::EvalResults;
use crate::models::{Detector, ModelError};

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An image could not be read.
    #[error(transparent)]
    Data(#[from] ImageError),
    /// The model rejected its input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A loss became NaN or infinite.
    #[error(
        "loss is not finite at epoch {epoch}, iteration {iter} ({terms}); training stopped. {}",
        match checkpoint { Some(c) => format!("The last good checkpoint is {}", c.display()), None => "No checkpoint was written yet".into() }
    )]
    NonFiniteLoss {
        /// Epoch (1-based).
        epoch: usize,
        /// Iteration in the epoch (1-based).
        iter: usize,
        /// The loss terms, formatted.
        terms: String,
        /// The last checkpoint written, left untouched.
        checkpoint: Option<PathBuf>,
    },
    /// The global gradient norm became NaN or infinite while the loss was finite: the step was not taken.
    #[error(
        "gradient norm is not finite ({norm}) at epoch {epoch}, iteration {iter}; training stopped before the \
         optimizer step. {}",
        match checkpoint { Some(c) => format!("The last good checkpoint is {}", c.display()), None => "No checkpoint was written yet".into() }
    )]
    NonFiniteGradNorm {
        /// Epoch (1-based).
        epoch: usize,
        /// Iteration in the epoch (1-based).
        iter: usize,
        /// The norm.
        norm: f64,
        /// The last checkpoint written, left untouched.
        checkpoint: Option<PathBuf>,
    },
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The work dir is locked by another run (or the lock cannot be written).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The work dir or the log could not be written.
    #[error("work dir {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The evaluation hook failed.
    #[error("evaluation failed: {0}")]
    Eval(String),
    /// A config value does not fit the model (named in the message).
    #[error("{0}")]
    Config(String),
    /// The work dir holds checkpoints of an earlier run and this run does not resume it: starting afresh would
    /// mix the two runs' checkpoints (and their `best/`).
    #[error(
        "work dir {} already holds a run (latest checkpoint {}): pass --resume to continue it, choose another \
         --work-dir, or remove the directory to start over",
        work_dir.display(), latest.display()
    )]
    WorkDirReused {
        /// The work dir.
        work_dir: PathBuf,
        /// Its newest checkpoint.
        latest: PathBuf,
    },
    /// Data-parallel training failed here: the all-reduce, a replica's registration or a panic.
    #[error("data-parallel training: {0}")]
    Distributed(String),
    /// Another replica failed (its process reports why); this one stopped with it.
    #[error("{0}")]
    Peer(String),
    /// The resume checkpoint belongs to a different setup.
    #[error("cannot resume from {path}: {message}")]
    Resume {
        /// The checkpoint.
        path: PathBuf,
        /// What does not match.
        message: String,
    },
}

/// Everything a run needs besides the model.
#[derive(Debug, Clone)]
pub struct TrainSetup {
    /// The typed config.
    pub cfg: ExperimentConfig,
    /// The resolved config (saved with every checkpoint and as `config.json`).
    pub resolved: serde_json::Value,
    /// Where checkpoints and logs go.
    pub work_dir: PathBuf,
    /// Training images.
    pub train_records: Arc<Vec<DetRecord>>,
    /// Resume from this checkpoint directory.
    pub resume_from: Option<PathBuf>,
    /// Class names in label order, saved with every checkpoint (so that `test` and `infer` need no annotations).
    pub classes: Vec<String>,
    /// Scale the learning rate by `batch_size / auto_scale_lr.base_batch_size`.
    pub auto_scale_lr: bool,
    /// Stop after this many iterations in total (tests and smoke runs); `None`: the full schedule.
    pub max_iters: Option<usize>,
    /// What the caller found while preparing the run (images left out, boxes dropped): shown and recorded in
    /// `log.jsonl` when the run starts.
    pub notices: Vec<String>,
}

/// Callbacks of the loop: progress display and evaluation live with the caller.
pub trait TrainHooks<M> {
    /// An epoch starts with `iters` iterations (`first_iter` > 0 when resuming inside it).
    fn on_epoch_start(&mut self, _epoch: usize, _iters: usize) {}
    /// An iteration finished.
    fn on_iter(&mut self, _rec: &IterRecord) {}
    /// Evaluate `model` after `epoch`; returns the stats of each evaluated kind (or `None` to skip).
    fn evaluate(&mut self, _model: &M, _epoch: usize) -> Result<Option<EvalResults>, String> {
        Ok(None)
    }
    /// A checkpoint was written.
    fn on_checkpoint(&mut self, _dir: &Path) {}
    /// A message for the user (resume, skipped images, best checkpoint).
    fn on_message(&mut self, _msg: &str) {}
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Epochs completed.
    pub epochs: usize,
    /// Iterations completed.
    pub iters: usize,
    /// Last checkpoint.
    pub last_checkpoint: Option<PathBuf>,
    /// Best value of the `evaluation.save_best` figure and its epoch.
    pub best: Option<(f64, usize)>,
    /// Loss of every iteration run in this process (for tests of exact resume).
    pub losses: Vec<f64>,
    /// The last evaluation's stats.
    pub last_eval: Option<EvalResults>,
}

/// Loader options of the training split.
pub fn train_loader_options(cfg: &ExperimentConfig) -> LoaderOptions {
    LoaderOptions {
        batch_size: cfg.data.batch_size,
        num_workers: cfg.data.num_workers,
        prefetch: cfg.data.prefetch,
        shuffle: true,
        group_by_aspect_ratio: cfg.data.group_by_aspect_ratio,
        skip_bad_images: cfg.data.skip_bad_images,
        flip_prob: cfg.data.pipeline.flip_prob,
        pipeline: cfg.data.pipeline.clone(),
        seed: cfg.seed,
        with_masks: cfg.model.trains_masks(),
    }
}

/// Upload a batch's pixels.
pub fn batch_tensor<B: Backend>(batch: &Batch, device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape), device)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A computation run with the configured optimizer (whose type depends on the config).
pub trait OptimizerJob<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// What the job returns.
    type Output;

    /// Run with `optim`; `manual_decay`: coupled weight decay to add to the gradients of conv and linear
    /// weights only (the optimizer then has none of its own).
    fn run<O: Optimizer<M, B>>(self, optim: O, manual_decay: Option<f64>) -> Self::Output;
}

/// Build the optimizer of `cfg` (SGD or AdamW with PyTorch semantics) and run `job` with it.
pub fn with_optimizer<B, M, J>(cfg: &OptimizerConfig, job: J) -> J::Output
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    J: OptimizerJob<B, M>,
{
    match cfg {
        OptimizerConfig::Sgd(sgd) => {
            let builtin_decay = (!sgd.no_decay_on_norm_and_bias && sgd.weight_decay > 0.0)
                .then(|| burn::optim::decay::WeightDecayConfig::new(sgd.weight_decay as f32));
            let optim = SgdConfig::new()
                // torch's SGD has no dampening; burn's default is 0.1
                .with_momentum(Some(
                    MomentumConfig::new()
                        .with_momentum(sgd.momentum)
                        .with_dampening(0.0),
                ))
                .with_weight_decay(builtin_decay)
                .init::<B, M>();
            // decay restricted to weights is added to the gradients by hand (burn's applies to every parameter)
            let manual_decay =
                (sgd.no_decay_on_norm_and_bias && sgd.weight_decay > 0.0).then_some(sgd.weight_decay);
            job.run(optim, manual_decay)
        }
        OptimizerConfig::AdamW(adamw) => {
            let optim = AdamWConfig::new()
                .with_beta_1(adamw.betas[0] as f32)
                .with_beta_2(adamw.betas[1] as f32)
                .with_epsilon(adamw.eps as f32)
                .with_weight_decay(adamw.weight_decay as f32)
                .init::<B, M>();
            job.run(optim, None)
        }
    }
}

/// Train `model` (already built, with its backbone initialised and frozen as configured).
pub fn train<B, M, H>(
    model: M,
    setup: &TrainSetup,
    device: &B::Device,
    hooks: &mut H,
) -> Result<(M, TrainSummary), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Detector<B>,
    H: TrainHooks<M::InnerModule>,
{
    struct Single<'a, B: AutodiffBackend, M, H> {
        model: M,
        setup: &'a TrainSetup,
        device: &'a B::Device,
        hooks: &'a mut H,
    }
    impl<B, M, H> OptimizerJob<B, M> for Single<'_, B, M, H>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + Detector<B>,
        H: TrainHooks<M::InnerModule>,
    {
        type Output = Result<(M, TrainSummary), TrainError>;
        fn run<O: Optimizer<M, B>>(self, optim: O, manual_decay: Option<f64>) -> Self::Output {
            train_with(
                self.model,
                optim,
                manual_decay,
                self.setup,
                self.device,
                self.hooks,
            )
        }
    }
    with_optimizer(
        &setup.cfg.optimizer,
        Single {
            model,
            setup,
            device,
            hooks,
        },
    )
}

/// The files only the writing process keeps: the work-dir lock (held while it lives) and the log.
pub struct RunFiles {
    _lock: super::lock::WorkDirLock,
    /// `log.jsonl`.
    pub log: JsonLog,
}

/// Take the work dir: create it, lock it, write `config.json`.
pub fn open_work_dir<M>(setup: &TrainSetup, hooks: &mut dyn TrainHooks<M>) -> Result<RunFiles, TrainError> {
    std::fs::create_dir_all(&setup.work_dir).map_err(io_err(&setup.work_dir))?;
    let lock = lock::lock_for_training(&setup.work_dir, &mut |m: &str| hooks.on_message(m))?;
    if setup.resume_from.is_none()
        && let Some(latest) = previous_run(&setup.work_dir)
    {
        return Err(TrainError::WorkDirReused {
            work_dir: setup.work_dir.clone(),
            latest,
        });
    }
    let config_path = setup.work_dir.join("config.json");
    write_atomic(
        &config_path,
        &serde_json::to_string_pretty(&setup.resolved).expect("JSON value"),
    )?;
    let log = if setup.cfg.log_config.tensorboard {
        let dir = setup.work_dir.join("tf_logs");
        JsonLog::with_tensorboard(&setup.work_dir).map_err(io_err(&dir))?
    } else {
        JsonLog::new(&setup.work_dir)
    };
    Ok(RunFiles { _lock: lock, log })
}

/// Where a run starts: the model and optimizer (the resume checkpoint's when resuming), the state, the resume
/// checkpoint (the last good one), and the messages for the user (the resume report, a scaled learning rate).
pub type Start<M, O> = (M, O, TrainState, Option<PathBuf>, Vec<String>);

/// The state a run starts from: fresh (learning rate scaled to `global_batch` images per iteration when
/// asked), or the resume checkpoint's, whose model and optimizer are loaded into `model` and `optim`. On
/// resume, this run's config is compared with the checkpoint's: a difference that changes the model's tensors
/// is an error naming both the fields and the tensors; any other applies from now on and is reported.
pub fn start_state<B, M, O>(
    setup: &TrainSetup,
    global_batch: usize,
    model: M,
    optim: O,
    device: &B::Device,
) -> Result<Start<M, O>, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let cfg = &setup.cfg;
    let base_lr = if setup.auto_scale_lr || cfg.auto_scale_lr.enable {
        auto_scaled_lr(
            cfg.optimizer.lr(),
            global_batch,
            cfg.auto_scale_lr.base_batch_size,
        )
    } else {
        cfg.optimizer.lr()
    };
    let state = TrainState {
        epoch: 0,
        global_iter: 0,
        seed: cfg.seed,
        base_lr,
        best: None,
        config: setup.resolved.clone(),
        classes: setup.classes.clone(),
    };
    let Some(dir) = &setup.resume_from else {
        let mut notices = Vec::new();
        if base_lr != cfg.optimizer.lr() {
            notices.push(format!(
                "learning rate scaled to {base_lr} (optimizer.lr {} x {global_batch} images per iteration / \
                 auto_scale_lr.base_batch_size {})",
                cfg.optimizer.lr(),
                cfg.auto_scale_lr.base_batch_size
            ));
        }
        return Ok((model, optim, state, None, notices));
    };
    let saved = checkpoint::load_state(dir)?;
    if saved.seed != cfg.seed {
        return Err(TrainError::Resume {
            path: dir.clone(),
            message: format!(
                "it was trained with seed {}, this run has seed {}",
                saved.seed, cfg.seed
            ),
        });
    }
    let differences = if saved.config.is_null() {
        Vec::new()
    } else {
        checkpoint::config_diff(&saved.config, &setup.resolved)
    };
    let listed = || {
        differences
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let model = match checkpoint::load_model(dir, model, device) {
        Ok(m) => m,
        Err(CheckpointError::Mismatch { mismatch, .. }) => {
            return Err(TrainError::Resume {
                path: dir.clone(),
                message: if differences.is_empty() {
                    mismatch.to_string()
                } else {
                    format!(
                        "the config differs from the checkpoint's in {} field(s): {}; {mismatch}",
                        differences.len(),
                        listed()
                    )
                },
            });
        }
        Err(e) => return Err(e.into()),
    };
    let optim = checkpoint::load_optimizer::<B, M, _>(dir, optim, device)?;
    let mut report = format!(
        "resumed from {} (epoch {}, iteration {}): weights, optimizer state, schedule position, seed and best \
         figure from the checkpoint",
        dir.display(),
        saved.epoch,
        saved.global_iter
    );
    if differences.is_empty() {
        report.push_str("; the config is the checkpoint's");
    } else {
        report.push_str(&format!(
            "; from this run's config and --cfg-options ({} field(s) changed, recorded in config.json): {}",
            differences.len(),
            listed()
        ));
    }
    if saved.base_lr != base_lr {
        report.push_str(&format!(
            "; base lr {} in the checkpoint, {base_lr} from iteration {} on",
            saved.base_lr,
            saved.global_iter + 1
        ));
    }
    let state = TrainState {
        config: setup.resolved.clone(),
        classes: setup.classes.clone(),
        base_lr,
        ..saved
    };
    Ok((model, optim, state, Some(dir.clone()), vec![report]))
}

/// Record `message` in `log.jsonl` at the run's current position.
pub fn record_event(log: &JsonLog, state: &TrainState, message: &str) -> Result<(), TrainError> {
    log.append(&LogLine::Event(EventRecord {
        epoch: state.epoch,
        global_iter: state.global_iter,
        message: message.to_string(),
    }))
    .map_err(io_err(log.path()))
}

/// Show `message` to the user and record it in `log.jsonl`: what a person looks for after a run (resumed,
/// best, removed checkpoints, the scaled learning rate) is in the log as well as on the terminal.
pub fn announce<M>(
    hooks: &mut dyn TrainHooks<M>,
    log: &JsonLog,
    state: &TrainState,
    message: &str,
) -> Result<(), TrainError> {
    hooks.on_message(message);
    record_event(log, state, message)
}

/// The figure that decides the best checkpoint: `(kind, stat index, name)`.
pub type BestRule = Option<(crate::models::EvalKind, usize, String)>;

/// The best-checkpoint rule of `cfg` for a model evaluated as `kinds` (`evaluation.metric` when set).
pub fn best_rule(
    cfg: &ExperimentConfig,
    model_kinds: Vec<crate::models::EvalKind>,
) -> Result<BestRule, TrainError> {
    let kinds = if cfg.evaluation.metric.is_empty() {
        model_kinds
    } else {
        cfg.evaluation.metric.clone()
    };
    cfg.evaluation
        .save_best
        .target(&kinds)
        .map_err(TrainError::Config)
}

/// The error of a non-finite loss (`values`: the terms), or their finite total.
pub fn check_loss(
    values: &[(String, f64)],
    epoch: usize,
    iter: usize,
    checkpoint: &Option<PathBuf>,
) -> Result<f64, TrainError> {
    let total: f64 = values.iter().map(|(_, v)| v).sum();
    if total.is_finite() {
        return Ok(total);
    }
    let terms = values
        .iter()
        .map(|(n, v)| format!("{n} = {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(TrainError::NonFiniteLoss {
        epoch: epoch + 1,
        iter: iter + 1,
        terms,
        checkpoint: checkpoint.clone(),
    })
}

/// The optimizer step on the gradients of the batch (of every replica, already reduced): dense layout,
/// manual weight decay, global-norm measure and clipping, then the step at `lr`. A non-finite norm stops
/// training before the step. Returns the stepped model and the norm.
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step<B, M, O>(
    model: M,
    optim: &mut O,
    mut g: GradientsParams,
    manual_decay: Option<f64>,
    cfg: &ExperimentConfig,
    lr: f64,
    (epoch, iter): (usize, usize),
    checkpoint: &Option<PathBuf>,
) -> Result<(M, f64), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    grads::make_contiguous::<B, M>(&model, &mut g);
    if let Some(wd) = manual_decay {
        grads::add_weight_decay_to_weights::<B, M>(&model, &mut g, wd);
    }
    let max_norm = cfg.optimizer.grad_clip().map(|c| c.max_norm);
    let norm = grads::grad_norm_step::<B, M>(&model, &mut g, max_norm);
    if !norm.is_finite() {
        return Err(TrainError::NonFiniteGradNorm {
            epoch: epoch + 1,
            iter: iter + 1,
            norm,
            checkpoint: checkpoint.clone(),
        });
    }
    Ok((optim.step(lr, model, g), norm))
}

/// Report an iteration to the hooks, and to the log every `log_config.interval` iterations and at the end of
/// the epoch.
pub fn record_iter<M>(
    rec: IterRecord,
    cfg: &ExperimentConfig,
    log: &JsonLog,
    hooks: &mut dyn TrainHooks<M>,
) -> Result<(), TrainError> {
    hooks.on_iter(&rec);
    if rec.iter.is_multiple_of(cfg.log_config.interval.max(1)) || rec.iter == rec.iters_per_epoch {
        log.append(&LogLine::Train(rec)).map_err(io_err(log.path()))?;
    }
    Ok(())
}

/// Whether evaluation runs after `done` epochs.
pub fn eval_due(cfg: &ExperimentConfig, done: usize) -> bool {
    cfg.evaluation.interval > 0
        && (done.is_multiple_of(cfg.evaluation.interval) || done == cfg.runner.max_epochs)
}

/// What happens after an epoch (`state.epoch` already counts it): the epoch's checkpoint when due (first: a
/// failing evaluation loses no training), evaluation when due, and the best checkpoint when it improved.
#[allow(clippy::too_many_arguments)]
pub fn end_epoch<B, M, O>(
    model: &M,
    optim: &O,
    state: &mut TrainState,
    setup: &TrainSetup,
    log: &JsonLog,
    best_rule: &BestRule,
    hooks: &mut dyn TrainHooks<M::InnerModule>,
    last_checkpoint: &mut Option<PathBuf>,
    last_eval: &mut Option<EvalResults>,
) -> Result<(), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let cfg = &setup.cfg;
    let done = state.epoch;
    let checkpoint_due =
        done.is_multiple_of(cfg.checkpoint_config.interval.max(1)) || done == cfg.runner.max_epochs;
    let mut epoch_dir = None;
    if checkpoint_due {
        let dir = setup.work_dir.join(format!("epoch_{done}"));
        checkpoint::save::<B, M, _>(&dir, model, optim, state)?;
        checkpoint::mark_latest(&setup.work_dir, &dir)?;
        hooks.on_checkpoint(&dir);
        record_event(log, state, &format!("saved {}", dir.display()))?;
        if let Some(keep) = cfg.checkpoint_config.max_keep_ckpts {
            let protected: Vec<PathBuf> = setup.resume_from.iter().cloned().collect();
            for old in checkpoint::prune_epochs(&setup.work_dir, keep, &protected)? {
                let message = format!(
                    "removed {} (checkpoint_config.max_keep_ckpts = {keep})",
                    old.display()
                );
                announce(hooks, log, state, &message)?;
            }
        }
        *last_checkpoint = Some(dir.clone());
        epoch_dir = Some(dir);
    }
    let mut improved = false;
    if eval_due(cfg, done) {
        let inner = model.valid();
        if let Some(stats) = hooks.evaluate(&inner, done).map_err(TrainError::Eval)? {
            log.append(&LogLine::Val(EvalRecord {
                epoch: done,
                stats: stats.clone(),
            }))
            .map_err(io_err(log.path()))?;
            if let Some((kind, index, _)) = best_rule {
                let value = stats
                    .get(kind)
                    .and_then(|s| s.get(*index))
                    .copied()
                    .unwrap_or(0.0);
                if state.best.is_none_or(|(best, _)| value > best) {
                    state.best = Some((value, done));
                    improved = true;
                }
            }
            *last_eval = Some(stats);
        }
    }
    if let Some(dir) = epoch_dir.filter(|_| improved) {
        checkpoint::update_state(&dir, state)?; // the new best AP, for an exact resume
    }
    if improved {
        let dir = setup.work_dir.join("best");
        checkpoint::save::<B, M, _>(&dir, model, optim, state)?;
        if let (Some((value, e)), Some((_, _, name))) = (state.best, best_rule) {
            let message = format!("best {name} {value:.4} at epoch {e}: saved {}", dir.display());
            announce(hooks, log, state, &message)?;
        }
    }
    Ok(())
}

/// The loop itself, for any optimizer; `manual_decay`: coupled weight decay added to the gradients of conv
/// and linear weights only.
fn train_with<B, M, O, H>(
    model: M,
    optim: O,
    manual_decay: Option<f64>,
    setup: &TrainSetup,
    device: &B::Device,
    hooks: &mut H,
) -> Result<(M, TrainSummary), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Detector<B>,
    O: Optimizer<M, B>,
    H: TrainHooks<M::InnerModule>,
{
    let cfg = &setup.cfg;
    let files = open_work_dir::<M::InnerModule>(setup, hooks)?;
    let log = &files.log;
    let (mut model, mut optim, mut state, mut last_checkpoint, notices) =
        start_state::<B, M, O>(setup, cfg.data.batch_size, model, optim, device)?;
    for message in setup.notices.iter().chain(&notices) {
        announce(hooks, log, &state, message)?;
    }
    let best_rule = best_rule(cfg, model.eval_kinds())?;
    let schedule = LrSchedule::new(state.base_lr, &cfg.lr_config);
    let opts = train_loader_options(cfg);
    let mut losses = Vec::new();
    let mut last_eval = None;
    let max_iters = setup.max_iters.unwrap_or(usize::MAX);

    'epochs: while state.epoch < cfg.runner.max_epochs {
        let epoch = state.epoch; // 0-based
        let mut loader = EpochLoader::start(setup.train_records.clone(), &opts, epoch, 0);
        let iters = loader.len();
        hooks.on_epoch_start(epoch + 1, iters);
        let mut t_prev = Instant::now();
        for (i, batch) in loader.by_ref().enumerate() {
            if state.global_iter >= max_iters {
                break 'epochs;
            }
            let batch = batch?;
            let data_time = t_prev.elapsed().as_secs_f64();
            let images = batch_tensor::<B>(&batch, device);
            let parts = model.losses(images, &batch.samples)?;
            let values: Vec<(String, f64)> = parts
                .terms
                .iter()
                .map(|t| (t.name.to_string(), t.value.clone().into_scalar().elem::<f64>()))
                .collect();
            let total = check_loss(&values, epoch, i, &last_checkpoint)?;
            let g = GradientsParams::from_grads(parts.total().backward(), &model);
            let lr = schedule.lr(epoch, state.global_iter);
            let (stepped, norm) = optimizer_step::<B, M, O>(
                model,
                &mut optim,
                g,
                manual_decay,
                cfg,
                lr,
                (epoch, i),
                &last_checkpoint,
            )?;
            model = stepped;
            state.global_iter += 1;
            losses.push(total);
            let rec = IterRecord {
                epoch: epoch + 1,
                iter: i + 1,
                iters_per_epoch: iters,
                global_iter: state.global_iter,
                lr,
                loss: total,
                terms: values,
                grad_norm: Some(norm),
                time: t_prev.elapsed().as_secs_f64(),
                data_time,
                memory_mb: resident_memory_mb(),
            };
            record_iter::<M::InnerModule>(rec, cfg, log, hooks)?;
            t_prev = Instant::now();
        }
        let unreadable = loader.skipped_images();
        drop(loader);
        state.epoch += 1;
        if unreadable > 0 {
            let message = format!(
                "epoch {}: {unreadable} unreadable image(s) skipped (data.skip_bad_images)",
                state.epoch
            );
            announce(hooks, log, &state, &message)?;
        }
        end_epoch::<B, M, O>(
            &model,
            &optim,
            &mut state,
            setup,
            log,
            &best_rule,
            hooks,
            &mut last_checkpoint,
            &mut last_eval,
        )?;
    }
    let summary = TrainSummary {
        epochs: state.epoch,
        iters: state.global_iter,
        last_checkpoint,
        best: state.best,
        losses,
        last_eval,
    };
    Ok((model, summary))
}

/// The newest checkpoint of an earlier run in `work_dir` (`latest`, else any `epoch_N` or `best/`), if any.
fn previous_run(work_dir: &Path) -> Option<PathBuf> {
    checkpoint::latest(work_dir)
        .or_else(|| checkpoint::epoch_checkpoints(work_dir).pop().map(|(_, d)| d))
        .or_else(|| {
            let best = work_dir.join("best");
            best.join("state.json").exists().then_some(best)
        })
}

/// Write a text file through a temporary file and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), TrainError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
