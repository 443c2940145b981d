//! Data-parallel training: one replica per device, in one process or over several nodes, with the result of
//! a single device that trains with the global batch.
//!
//! Every replica runs the loop of [`super::trainer`] (its optimizer, step, log records and epoch end) on its
//! share of each global batch ([`Shard`]). Per iteration the replicas agree through burn-collective's
//! all-reduce on three things, in this order:
//!
//! 1. a status vector: each replica's failure code (a corrupt image, a model error, a panic), its number of
//!    images, and the [`Normaliser`](crate::models::Normaliser) count of each loss term. A failure anywhere
//!    stops every replica at the same iteration; the counts summed over replicas are the single-device
//!    normalisers, by which each replica rescales its terms ([`Normaliser::rescale`]);
//! 2. the rescaled term values (the logged losses, and the one non-finite check every replica agrees on);
//! 3. the gradients of the rescaled loss, flattened in the model's parameter order into one tensor and
//!    summed: the gradient of the single-device loss, whatever the split.
//!
//! Then every replica takes the same optimizer step (clipping, decay and the norm check on identical
//! gradients). Only replica 0 writes the work dir: checkpoints, log, progress, evaluation.
//!
//! Parameters are reduced in the order the model visits them, not by [`burn::module::ParamId`]: ids are drawn
//! at random when a model is built, so they differ between the processes of a multi-node run.
//!
//! Each sum has two levels: the replicas of one process add up through burn-collective's local all-reduce;
//! over several nodes, each node's first replica then sends that local sum to node 0 and receives the
//! total ([`super::internode`], plain TCP; burn-collective's own global level stalls, see there), which it
//! hands to the other replicas of its node.
//!
//! [`Normaliser::rescale`]: crate::models::Normaliser::rescale

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use attndet_backbones::panics::panic_text;
use burn::collective::{CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective, register};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;

use super::internode::{LinkError, NodeLink};
use super::log::{IterRecord, resident_memory_mb};
use super::schedule::LrSchedule;
use super::trainer::{
    OptimizerJob, RunFiles, TrainError, TrainHooks, TrainSetup, TrainSummary, batch_tensor, best_rule,
    check_loss, end_epoch, eval_due, open_work_dir, optimizer_step, record_iter, start_state,
    train_loader_options, with_optimizer,
};
use crate::data::{EpochLoader, Shard};
use crate::models::Detector;

/// Loss terms a detector may have (the slots of the status vector).
pub const MAX_TERMS: usize = 32;

/// The nodes of a multi-node run: this node's link to the others, used by its first replica, and the
/// hand-over of each inter-node sum to the node's other replicas.
#[derive(Debug)]
pub struct NodeSetup {
    /// Number of nodes (processes).
    pub num_nodes: u32,
    /// This node's rank (0 sets up the ring and writes the work dir).
    pub rank: u32,
    link: Mutex<NodeLink>,
    posted: Mutex<Posted>,
    ready: Condvar,
}

/// The latest inter-node sum of this node: `done` exchanges are finished, the last one's result.
#[derive(Debug, Default)]
struct Posted {
    done: u64,
    result: Option<Result<Arc<Vec<f32>>, LinkError>>,
}

impl NodeSetup {
    /// The setup of a node joined to the others through `link`.
    pub fn new(link: NodeLink) -> Self {
        Self {
            num_nodes: link.nnodes(),
            rank: link.rank(),
            link: Mutex::new(link),
            posted: Mutex::new(Posted::default()),
            ready: Condvar::new(),
        }
    }

    fn posted(&self) -> MutexGuard<'_, Posted> {
        self.posted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exchange number `k` (counted by each replica) of local replica `local`: replica 0 sums `values` over
    /// the nodes and posts the result; the others wait for it (their `values` are not needed: every local
    /// replica holds the same local sum).
    fn exchange(
        &self,
        local: usize,
        k: u64,
        values: impl FnOnce() -> Result<Vec<f32>, LinkError>,
        unbounded: bool,
    ) -> Result<Arc<Vec<f32>>, LinkError> {
        if local == 0 {
            let r = values().and_then(|v| {
                self.link
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .all_reduce_sum(v, unbounded)
                    .map(Arc::new)
            });
            let mut p = self.posted();
            p.done = k + 1;
            p.result = Some(r.clone());
            self.ready.notify_all();
            return r;
        }
        let mut p = self.posted();
        while p.done <= k {
            p = self.ready.wait(p).unwrap_or_else(|p| p.into_inner());
        }
        // the first replica cannot start exchange k + 1 before every replica of the node joined the local
        // all-reduce k + 1, so the posted result is this one
        if p.done != k + 1 {
            return Err(LinkError(format!(
                "replicas of this node out of step: exchange {} posted, {} awaited",
                p.done,
                k + 1
            )));
        }
        p.result.clone().expect("posted with the count")
    }
}

/// Where this process's replicas sit among all replicas.
#[derive(Debug)]
pub struct Topology {
    /// Global id of this process's first replica (replica ids are unique over all nodes).
    pub first_replica: usize,
    /// Replicas over all nodes.
    pub world: usize,
    /// `None`: a single process.
    pub nodes: Option<NodeSetup>,
    /// Longest wait for the other replicas in one all-reduce; past it the process exits with an error.
    pub timeout: Duration,
}

impl Topology {
    /// All replicas in this process.
    pub fn single_process(replicas: usize, timeout: Duration) -> Self {
        Self {
            first_replica: 0,
            world: replicas,
            nodes: None,
            timeout,
        }
    }
}

/// Failure codes in the status vector (an image error is `1 + the record's index`, so every node can name
/// the file).
const CODE_MODEL: f32 = -1.0;
const CODE_OTHER: f32 = -2.0;

/// Train `model` (built and materialised, the same weights for every replica) on one replica per device of
/// `devices`, the local replicas `topo.first_replica..` of `topo.world`. `hooks` serve the writing replica
/// (global replica 0); `data.batch_size` is per replica. Returns the trained model and the summary of this
/// process's first replica; an error of any replica stops all of them and is returned (this process's own error first).
pub fn train_distributed<B, M, H>(
    model: M,
    setup: &TrainSetup,
    devices: &[B::Device],
    topo: &Topology,
    hooks: &mut H,
) -> Result<(M, TrainSummary), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Detector<B> + Send,
    H: TrainHooks<M::InnerModule>,
{
    if devices.is_empty() {
        return Err(TrainError::Config("--devices: no device given".into()));
    }
    if setup.cfg.data.batch_size == 0 {
        return Err(TrainError::Config("data.batch_size: must be at least 1".into()));
    }
    let nodes = topo.nodes.as_ref().map(|n| (n.rank, n.num_nodes));
    let watchdog = Watchdog::start(devices.len(), topo.timeout, nodes);
    let results: Vec<Result<(M, TrainSummary), TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .skip(1)
            .map(|(local, device)| {
                let model = own_copy(&model);
                let watchdog = &watchdog;
                scope.spawn(move || {
                    let replica = Replica {
                        local,
                        global: topo.first_replica + local,
                        device,
                        setup,
                        topo,
                        watchdog,
                        local_count: devices.len(),
                        exchanges: Cell::new(0),
                    };
                    let global = replica.global;
                    stop_on_panic(global, || {
                        with_optimizer(
                            &setup.cfg.optimizer,
                            ReplicaJob::<B, M, NoHooks> {
                                replica,
                                model,
                                hooks: None,
                            },
                        )
                    })
                })
            })
            .collect();
        let lead = Replica {
            local: 0,
            global: topo.first_replica,
            device: &devices[0],
            setup,
            topo,
            watchdog: &watchdog,
            local_count: devices.len(),
            exchanges: Cell::new(0),
        };
        let global = lead.global;
        let first = stop_on_panic(global, || {
            with_optimizer(
                &setup.cfg.optimizer,
                ReplicaJob::<B, M, H> {
                    replica: lead,
                    model: own_copy(&model),
                    hooks: Some(hooks),
                },
            )
        });
        let mut all = vec![first];
        for h in handles {
            all.push(h.join().unwrap_or_else(|p| {
                Err(TrainError::Distributed(format!(
                    "a replica thread panicked: {}",
                    panic_text(&*p)
                )))
            }));
        }
        all
    });
    watchdog.stop();
    // this process's own failure explains more than the report of a peer's
    let mut first_err = None;
    let mut summary = None;
    for r in results {
        match r {
            Ok(s) => {
                summary.get_or_insert(s);
            }
            Err(e) => {
                let own = !matches!(e, TrainError::Peer(_));
                match &first_err {
                    None => first_err = Some(e),
                    Some(TrainError::Peer(_)) if own => first_err = Some(e),
                    _ => {}
                }
            }
        }
    }
    match (first_err, summary) {
        (Some(e), _) => Err(e),
        (None, Some(s)) => Ok(s),
        (None, None) => Err(TrainError::Distributed("no replica ran".into())),
    }
}

/// A copy of `model` that shares no state with it: the same parameter values and trainability, and running
/// statistics of its own. A clone would share its BatchNorm running statistics (burn's `RunningState` is one
/// shared cell that averages the updates of every thread using it), so that in-process replicas with
/// training BatchNorm would mix their updates in whatever order the threads ran, and replicas on several
/// devices would move one shared tensor between them. With a copy each, replica 0's running statistics
/// follow its own batches alone, which are what a PyTorch DDP checkpoint holds (rank 0's buffers), and
/// the result no longer depends on thread timing.
fn own_copy<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> M {
    M::from_inner(model.valid())
}

/// Hooks of the replicas that do not write.
struct NoHooks;
impl<M> TrainHooks<M> for NoHooks {}

/// One replica: where it runs and what it shares with the others.
struct Replica<'a, B: AutodiffBackend> {
    local: usize,
    global: usize,
    device: &'a B::Device,
    setup: &'a TrainSetup,
    topo: &'a Topology,
    watchdog: &'a Watchdog,
    local_count: usize,
    /// Inter-node exchanges this replica took part in.
    exchanges: Cell<u64>,
}

struct ReplicaJob<'a, B: AutodiffBackend, M, H> {
    replica: Replica<'a, B>,
    model: M,
    hooks: Option<&'a mut H>,
}

impl<B, M, H> OptimizerJob<B, M> for ReplicaJob<'_, B, M, H>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Detector<B>,
    H: TrainHooks<M::InnerModule>,
{
    type Output = Result<(M, TrainSummary), TrainError>;

    fn run<O: Optimizer<M, B>>(self, optim: O, manual_decay: Option<f64>) -> Self::Output {
        let r = self.replica;
        let model = self.model.fork(r.device);
        match self.hooks {
            Some(h) => r.train(model, optim, manual_decay, h),
            None => r.train(model, optim, manual_decay, &mut NoHooks),
        }
    }
}

impl<B: AutodiffBackend> Replica<'_, B> {
    /// This replica writes the work dir.
    fn writes(&self) -> bool {
        self.global == 0
    }

    /// burn-collective within this process only: the inter-node step is ours ([`NodeSetup`]).
    fn collective_config(&self) -> CollectiveConfig {
        CollectiveConfig::default().with_num_devices(self.local_count)
    }

    /// Sum `values` over every replica, within the timeout unless `unbounded` (waiting for an evaluation).
    fn sum(&self, values: Vec<f32>, unbounded: bool) -> Result<Vec<f32>, TrainError> {
        let n = values.len();
        let t = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [n]), self.device);
        let out = self.reduce(t, unbounded)?;
        out.into_data()
            .to_vec::<f32>()
            .map_err(|e| TrainError::Distributed(format!("reading an all-reduce result: {e:?}")))
    }

    /// Sum a flat tensor over every replica: over this process's replicas (burn-collective), then over the
    /// nodes.
    fn reduce(
        &self,
        t: Tensor<B::InnerBackend, 1>,
        unbounded: bool,
    ) -> Result<Tensor<B::InnerBackend, 1>, TrainError> {
        let id = PeerId(self.global as u32);
        let local = || {
            if self.local_count == 1 {
                // a sum over one replica: no need to go through the collective's server
                return Ok(t);
            }
            all_reduce::<B::InnerBackend>(id, t.into_primitive().tensor(), ReduceOperation::Sum)
                .map(|r| Tensor::from_primitive(TensorPrimitive::Float(r)))
                .map_err(|e| TrainError::Distributed(format!("all-reduce within this process failed: {e:?}")))
        };
        let Some(nodes) = &self.topo.nodes else {
            return if unbounded {
                local()
            } else {
                self.watchdog.guard(self.local, local)
            };
        };
        let both = || -> Result<Tensor<B::InnerBackend, 1>, TrainError> {
            let local_sum = local()?;
            let n = local_sum.dims()[0];
            let k = self.exchanges.get();
            self.exchanges.set(k + 1);
            let values = || {
                local_sum
                    .into_data()
                    .to_vec::<f32>()
                    .map_err(|e| LinkError(format!("reading the local sum: {e:?}")))
            };
            let total = nodes
                .exchange(self.local, k, values, unbounded)
                .map_err(|e| TrainError::Distributed(format!("all-reduce between nodes failed: {e}")))?;
            Ok(Tensor::from_data(
                TensorData::new(total.to_vec(), [n]),
                self.device,
            ))
        };
        if unbounded {
            both()
        } else {
            self.watchdog.guard(self.local, both)
        }
    }

    /// Agree on the status of a phase: `code` is this replica's (0: fine), `extra` values are summed.
    /// Returns the summed extras, or the error of the first replica that failed (this replica's own error
    /// when it is the one, else a report naming the failing replica).
    fn agree(
        &self,
        code: f32,
        own: Option<TrainError>,
        extra: Vec<f32>,
        unbounded: bool,
        at: &str,
    ) -> Result<Vec<f32>, TrainError> {
        let world = self.topo.world;
        let mut v = vec![0.0; world];
        v[self.global] = code;
        v.extend(extra);
        let summed = self.sum(v, unbounded)?;
        if let Some(k) = summed[..world].iter().position(|&c| c != 0.0) {
            if let Some(e) = own {
                return Err(e);
            }
            let c = summed[k];
            let why = if c >= 1.0 {
                let idx = (c - 1.0).round() as usize;
                match self.setup.train_records.get(idx) {
                    Some(r) => format!("image {} could not be used", r.file.display()),
                    None => "an image could not be used".into(),
                }
            } else if c == CODE_MODEL {
                "the model rejected its batch".into()
            } else {
                "it failed".into()
            };
            return Err(TrainError::Peer(format!(
                "replica {k} stopped the run {at}: {why} (the process running it prints the details)"
            )));
        }
        Ok(summed[world..].to_vec())
    }

    fn train<M, O>(
        &self,
        model: M,
        optim: O,
        manual_decay: Option<f64>,
        hooks: &mut dyn TrainHooks<M::InnerModule>,
    ) -> Result<(M, TrainSummary), TrainError>
    where
        M: AutodiffModule<B> + Detector<B>,
        O: Optimizer<M, B>,
    {
        let setup = self.setup;
        let cfg = &setup.cfg;
        let world = self.topo.world;
        register::<B::InnerBackend>(
            PeerId(self.global as u32),
            self.device.clone(),
            self.collective_config(),
        )
        .map_err(|e| TrainError::Distributed(format!("registering replica {}: {e:?}", self.global)))?;

        // start: the writer takes the work dir; every replica loads the resume checkpoint itself
        let started = (|| {
            let files = if self.writes() {
                Some(open_work_dir::<M::InnerModule>(setup, hooks)?)
            } else {
                None
            };
            let s = start_state::<B, M, O>(setup, cfg.data.batch_size * world, model, optim, self.device)?;
            Ok::<_, TrainError>((files, s))
        })();
        let (code, own, started) = match started {
            Ok(s) => (0.0, None, Some(s)),
            Err(e) => (CODE_OTHER, Some(e), None),
        };
        self.agree(code, own, Vec::new(), false, "while starting")?;
        let (files, (model, optim, state, last_checkpoint, notices)) = started.expect("agreed: no failure");
        let (mut model, mut optim, mut state, mut last_checkpoint) = (model, optim, state, last_checkpoint);
        if let Some(files) = &files {
            for message in setup.notices.iter().chain(&notices) {
                super::trainer::announce(hooks, &files.log, &state, message)?;
            }
        }
        if self.topo.nodes.is_some() {
            // nodes build their models apart: from here on every replica holds the writer's weights
            model = self.broadcast_weights(model)?;
        }
        let files: Option<RunFiles> = files;
        let best_rule = best_rule(cfg, model.eval_kinds())?;
        let schedule = LrSchedule::new(state.base_lr, &cfg.lr_config);
        let mut opts = train_loader_options(cfg);
        opts.batch_size = cfg.data.batch_size * world;
        let shard = Shard {
            index: self.global,
            per_replica: cfg.data.batch_size,
        };
        let mut losses = Vec::new();
        let mut last_eval = None;
        let mut names: Vec<&'static str> = Vec::new();
        let max_iters = setup.max_iters.unwrap_or(usize::MAX);

        'epochs: while state.epoch < cfg.runner.max_epochs {
            let epoch = state.epoch;
            let mut loader =
                EpochLoader::start_sharded(setup.train_records.clone(), &opts, epoch, 0, Some(shard));
            let iters = loader.len();
            hooks.on_epoch_start(epoch + 1, iters);
            let mut t_prev = Instant::now();
            let mut i = 0;
            while let Some(slot) = loader.next_slot() {
                if state.global_iter >= max_iters {
                    break 'epochs;
                }
                let data_time = t_prev.elapsed().as_secs_f64();
                // forward on this replica's share
                let (mut code, mut own, mut parts, mut images) = (0.0, None, None, 0usize);
                match slot {
                    Ok(Some(batch)) => {
                        images = batch.samples.len();
                        let forward = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            model.losses(batch_tensor::<B>(&batch, self.device), &batch.samples)
                        }));
                        match forward {
                            Ok(Ok(p)) if p.terms.len() > MAX_TERMS => {
                                code = CODE_OTHER;
                                own = Some(TrainError::Config(format!(
                                    "the model has {} loss terms, data-parallel training handles {MAX_TERMS}",
                                    p.terms.len()
                                )));
                            }
                            Ok(Ok(p)) => parts = Some(p),
                            Ok(Err(e)) => {
                                code = CODE_MODEL;
                                own = Some(e.into());
                            }
                            Err(p) => {
                                code = CODE_OTHER;
                                own = Some(TrainError::Distributed(format!(
                                    "replica {} panicked in its forward pass: {}",
                                    self.global,
                                    panic_text(&*p)
                                )));
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        code = match setup.train_records.iter().position(|r| r.file == e.file) {
                            Some(idx) => 1.0 + idx as f32,
                            None => CODE_OTHER,
                        };
                        own = Some(e.into());
                    }
                }
                // 1. status, images and normaliser counts
                let mut extra = vec![0.0f32; 1 + MAX_TERMS];
                extra[0] = images as f32;
                if let Some(p) = &parts {
                    for (k, t) in p.terms.iter().enumerate() {
                        extra[1 + k] = t.normaliser.count as f32;
                    }
                }
                let at = format!("at epoch {}, iteration {}", epoch + 1, i + 1);
                let agreed = self.agree(code, own, extra, false, &at)?;
                if agreed[0] == 0.0 {
                    continue; // no image left anywhere in this batch: a single device skips it too
                }
                // 2. the terms rescaled to the global normalisers, summed over replicas
                let mut local_values = vec![0.0f32; MAX_TERMS];
                let loss = parts.map(|p| {
                    names = p.terms.iter().map(|t| t.name).collect();
                    let device = p.terms[0].value.device();
                    p.terms.into_iter().enumerate().fold(
                        Tensor::<B, 1>::zeros([1], &device),
                        |acc, (k, t)| {
                            let f = t.normaliser.rescale(f64::from(agreed[1 + k]));
                            let scaled = t.value.mul_scalar(f);
                            local_values[k] = scaled.clone().into_scalar().elem::<f32>();
                            acc + scaled
                        },
                    )
                });
                let summed = self.sum(local_values, false)?;
                let values: Vec<(String, f64)> = names
                    .iter()
                    .zip(&summed)
                    .map(|(n, v)| (n.to_string(), f64::from(*v)))
                    .collect();
                let total = check_loss(&values, epoch, i, &last_checkpoint)
                    .map(|_| summed.iter().map(|&v| f64::from(v)).sum::<f64>())?;
                // 3. the gradients, summed
                let g = match loss {
                    Some(l) => GradientsParams::from_grads(l.backward(), &model),
                    None => GradientsParams::new(),
                };
                let g = self.sum_grads(&model, g)?;
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
                if let Some(files) = &files {
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
                    record_iter::<M::InnerModule>(rec, cfg, &files.log, hooks)?;
                }
                i += 1;
                t_prev = Instant::now();
            }
            state.epoch += 1;
            let done = state.epoch;
            let ended = match &files {
                Some(files) => end_epoch::<B, M, O>(
                    &model,
                    &optim,
                    &mut state,
                    setup,
                    &files.log,
                    &best_rule,
                    hooks,
                    &mut last_checkpoint,
                    &mut last_eval,
                ),
                None => {
                    let checkpoint_due = done.is_multiple_of(cfg.checkpoint_config.interval.max(1))
                        || done == cfg.runner.max_epochs;
                    if checkpoint_due {
                        last_checkpoint = Some(setup.work_dir.join(format!("epoch_{done}")));
                    }
                    Ok(())
                }
            };
            let (code, own) = match ended {
                Ok(()) => (0.0, None),
                Err(e) => (CODE_OTHER, Some(e)),
            };
            // the writer may evaluate for longer than the timeout: this wait is not bounded
            self.agree(
                code,
                own,
                Vec::new(),
                eval_due(cfg, done),
                &format!("after epoch {done}"),
            )?;
        }
        let _ = finish_collective::<B::InnerBackend>(PeerId(self.global as u32));
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

    /// Sum the gradients of every replica: all trainable parameters in the model's order, a parameter
    /// without a gradient here (an empty share, an unused branch) counting as zeros, in one flat tensor.
    fn sum_grads<M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        let mut flat = Flatten::<B::InnerBackend> {
            grads: Some(&grads),
            device: self.device.clone(),
            parts: Vec::new(),
            zeros: false,
        };
        model.visit(&mut flat);
        if flat.parts.is_empty() {
            return Ok(grads);
        }
        let summed = self.reduce(Tensor::cat(flat.parts, 0), false)?;
        let mut out = GradientsParams::new();
        model.visit(&mut Unflatten {
            flat: summed,
            offset: 0,
            out: &mut out,
        });
        Ok(out)
    }

    /// Every replica takes the writer's parameter values: its values plus zeros from the others.
    fn broadcast_weights<M: AutodiffModule<B>>(&self, model: M) -> Result<M, TrainError> {
        let mut flat = Flatten::<B::InnerBackend> {
            grads: None,
            device: self.device.clone(),
            parts: Vec::new(),
            zeros: !self.writes(),
        };
        model.visit(&mut flat);
        if flat.parts.is_empty() {
            return Ok(model);
        }
        let summed = self.reduce(Tensor::cat(flat.parts, 0), false)?;
        Ok(model.map(&mut SetValues::<B> {
            flat: summed,
            offset: 0,
        }))
    }
}

/// Collects, in visiting order, the gradients of the trainable parameters (`grads`: `Some`) or the values
/// of every parameter (`None`; as zeros when `zeros`), flattened.
struct Flatten<'a, B: Backend> {
    grads: Option<&'a GradientsParams>,
    device: B::Device,
    parts: Vec<Tensor<B, 1>>,
    zeros: bool,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let value = p.val();
        let n = value.shape().num_elements();
        let t = match self.grads {
            Some(g) => {
                if !value.is_require_grad() {
                    return;
                }
                g.get::<B::InnerBackend, D>(p.id)
                    .map(|t| t.reshape([n]))
                    .unwrap_or_else(|| Tensor::zeros([n], &self.device))
            }
            None if self.zeros => Tensor::zeros([n], &self.device),
            None => value.inner().reshape([n]),
        };
        self.parts.push(t);
    }
}

/// Splits a flat tensor back into the gradients of the trainable parameters, in visiting order.
struct Unflatten<'a, B: Backend> {
    flat: Tensor<B, 1>,
    offset: usize,
    out: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let value = p.val();
        if !value.is_require_grad() {
            return;
        }
        let dims = value.dims();
        let n = value.shape().num_elements();
        let g = self
            .flat
            .clone()
            .slice(self.offset..self.offset + n)
            .reshape(dims);
        self.offset += n;
        self.out.register::<B::InnerBackend, D>(p.id, g);
    }
}

/// Replaces every parameter's value by its part of a flat tensor (visiting order), keeping ids and whether
/// it trains.
struct SetValues<B: AutodiffBackend> {
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for SetValues<B> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, value, mapper) = p.consume();
        let trains = value.is_require_grad();
        let dims = value.dims();
        let n = value.shape().num_elements();
        let inner = self
            .flat
            .clone()
            .slice(self.offset..self.offset + n)
            .reshape(dims);
        self.offset += n;
        let t = Tensor::<B, D>::from_inner(inner);
        Param::from_mapped_value(id, if trains { t.require_grad() } else { t }, mapper)
    }
}

/// Ends the process when an all-reduce waits longer than the timeout: a node that died or cannot be
/// reached must not leave the others hanging.
struct Watchdog {
    since: Arc<Mutex<Vec<Option<Instant>>>>,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    /// `nodes`: this node's rank and the number of nodes, for the message.
    fn start(replicas: usize, timeout: Duration, nodes: Option<(u32, u32)>) -> Self {
        let since = Arc::new(Mutex::new(vec![None; replicas]));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (since.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                let stuck = s
                    .lock()
                    .map(|v| v.iter().flatten().any(|t: &Instant| t.elapsed() > timeout))
                    .unwrap_or(false);
                if stuck && !st.load(Ordering::SeqCst) {
                    let who = match nodes {
                        Some((rank, num_nodes)) => other_nodes(rank, num_nodes),
                        None => "another replica of this process".into(),
                    };
                    eprintln!(
                        "error: no answer from {who} for {} s (--timeout): it died or cannot be reached; \
                         stopping. Checkpoints written so far are intact.",
                        timeout.as_secs()
                    );
                    std::process::exit(1);
                }
            }
        });
        Self { since, stop }
    }

    /// Run `f`, a wait for the other replicas, under the timeout.
    fn guard<T>(&self, local: usize, f: impl FnOnce() -> T) -> T {
        if let Ok(mut v) = self.since.lock() {
            v[local] = Some(Instant::now());
        }
        let out = f();
        if let Ok(mut v) = self.since.lock() {
            v[local] = None;
        }
        out
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The nodes other than node `rank` of `num_nodes`, in words.
fn other_nodes(rank: u32, num_nodes: u32) -> String {
    if num_nodes == 2 {
        format!("node {}", 1 - rank)
    } else {
        format!("one of the other {} nodes", num_nodes - 1)
    }
}

/// Run a replica; if it panics (a bug), say so and end the process at once: the other replicas would
/// otherwise wait for it until `--timeout` (300 s by default) in their next all-reduce. Checkpoints are
/// written atomically, so the last one is intact; the exit code is 1, as the watchdog's.
fn stop_on_panic<T>(replica: usize, run: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(out) => out,
        Err(p) => {
            eprintln!(
                "error: replica {replica} failed: {}; stopping every replica. Checkpoints written so far are \
                 intact.",
                panic_text(&*p)
            );
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attndet_backbones::norm::batch_norm_train;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};

    type A = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        bn: BatchNorm<B>,
        frozen: Linear<B>,
    }

    fn mean(bn: &BatchNorm<A>) -> Vec<f32> {
        bn.running_mean.value_sync().into_data().to_vec().unwrap()
    }

    /// A replica's copy keeps its own running statistics: a clone (what replicas were before) shares them,
    /// a copy does not; values and trainability are the original's.
    #[test]
    fn a_replica_copy_has_running_statistics_of_its_own() {
        let device = Default::default();
        let net = Net::<A> {
            bn: BatchNormConfig::new(2).init(&device),
            frozen: LinearConfig::new(2, 2).init::<A>(&device).no_grad(),
        };
        // channel 0 holds 1, 2, 3, 4 -> batch mean 2.5 -> running mean 0.9 * 0 + 0.1 * 2.5 = 0.25;
        // channel 1 holds 0 -> 0
        let x = Tensor::<A, 4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0], [2, 2, 2, 1]),
            &device,
        );
        let clone = net.clone();
        let copy = own_copy::<A, _>(&net);
        let _ = batch_norm_train(&net.bn, x);
        assert_eq!(mean(&net.bn), vec![0.25, 0.0]);
        assert_eq!(mean(&clone.bn), vec![0.25, 0.0], "a clone shares the state");
        assert_eq!(mean(&copy.bn), vec![0.0, 0.0], "the copy keeps its own");
        assert!(copy.bn.gamma.val().is_require_grad());
        assert!(!copy.frozen.weight.val().is_require_grad());
        assert_eq!(
            copy.frozen.weight.val().into_data(),
            net.frozen.weight.val().into_data()
        );
        // an empty network copies to an empty network
        let empty = own_copy::<A, _>(&Vec::<Linear<A>>::new());
        assert!(empty.is_empty());
    }
}
