//! `attndet dist-train CONFIG --devices LIST`: data-parallel training over several devices and nodes, with
//! the result of one device that trains with the global batch (see `engine::distributed`).

use std::net::{TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use attndet_coco::CocoDataset;
use attndet_detectors::data::coco::DetDataset;
use attndet_detectors::engine::distributed::{NodeSetup, Topology, train_distributed};
use attndet_detectors::engine::evaluate::{
    EvalResults, evaluate_kinds, predict_records, summary_text, test_loader_options,
};
use attndet_detectors::engine::internode::{Hello, NodeLink};
use attndet_detectors::engine::log::IterRecord;
use attndet_detectors::engine::trainer::TrainHooks;
use attndet_detectors::models::{AnyDetector, DetBackend};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::Backend;
use clap::Args;

use crate::device::DeviceArg;
use crate::errors::bad_input;
use crate::train::{
    CliHooks, Prepared, TrainArgs, build_model, eval_kinds, prepare, train_error, train_setup,
};

/// Arguments of `attndet dist-train`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
  attndet dist-train configs/retinanet/retinanet_r50_fpn_1x_coco.json --devices cuda:0,cuda:1,cuda:2,cuda:3\n  \
  attndet dist-train CONFIG --devices cpu,cpu --cfg-options data.batch_size=2   # 2 CPU replicas, global batch 4\n\n\
Two nodes with two GPUs each (run one command per node; the others join node 0 at --master):\n  \
  node0$ attndet dist-train CONFIG --devices cuda:0,cuda:1 --nnodes 2 --node-rank 0 --master node0:29500\n  \
  node1$ attndet dist-train CONFIG --devices cuda:0,cuda:1 --nnodes 2 --node-rank 1 --master node0:29500\n\n\
data.batch_size is per replica: the global batch is batch_size x replicas, and iteration i sees the images \
(and flips) of iteration i of `attndet train` with data.batch_size set to the global batch.")]
pub struct DistTrainArgs {
    /// Everything `attndet train` takes.
    #[command(flatten)]
    pub train: TrainArgs,
    /// The devices of this node, one replica each: `cpu,cpu,...` or `cuda:0,cuda:1,...` (every node lists
    /// as many).
    #[arg(long, value_name = "LIST", required = true)]
    pub devices: String,
    /// Number of nodes (processes) of the run.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nnodes: u32,
    /// This node's rank, 0..N-1 (node 0 listens on the master port, sets up the ring and writes the work
    /// dir).
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub node_rank: u32,
    /// HOST:PORT of node 0, where the other nodes join it (needed with --nnodes > 1).
    #[arg(long, value_name = "HOST:PORT")]
    pub master: Option<String>,
    /// Seconds to wait for the other replicas in one exchange (and for the master to answer) before
    /// stopping with an error.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
}

/// Parse `--devices`: a non-empty list of one kind.
pub fn parse_devices(list: &str) -> anyhow::Result<Vec<DeviceArg>> {
    let devices = list
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<DeviceArg>()
                .map_err(|e| bad_input(format!("--devices {list}: {e}")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kind = std::mem::discriminant(&devices[0]);
    if devices.iter().any(|d| std::mem::discriminant(d) != kind) {
        return Err(bad_input(format!(
            "--devices {list}: mixes kinds of devices (cpu, cuda, wgpu); one kind per run"
        )));
    }
    let mut seen = Vec::new();
    if let Some(d) = devices.iter().find(|d| {
        let twice = matches!(d, DeviceArg::Cuda(_) | DeviceArg::Wgpu(Some(_))) && seen.contains(*d);
        seen.push(**d);
        twice
    }) {
        return Err(bad_input(format!("--devices {list}: {d} is listed twice")));
    }
    Ok(devices)
}

/// `HOST:PORT` to its first socket address, or a bad-input error naming `flag`.
fn socket_addr(flag: &str, s: &str) -> anyhow::Result<std::net::SocketAddr> {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            bad_input(format!(
                "{flag} {s}: not a reachable HOST:PORT (e.g. node0:29500)"
            ))
        })
}

/// The multi-node link: node 0 listens on the master port and waits for the others; every other node
/// joins it there (each within `--timeout`).
fn node_setup(args: &DistTrainArgs, local_replicas: usize) -> anyhow::Result<Option<NodeSetup>> {
    if args.nnodes == 0 {
        return Err(bad_input("--nnodes: must be at least 1"));
    }
    if args.node_rank >= args.nnodes {
        return Err(bad_input(format!(
            "--node-rank {}: must be below --nnodes {}",
            args.node_rank, args.nnodes
        )));
    }
    if args.nnodes == 1 {
        return Ok(None);
    }
    let master = args
        .master
        .as_deref()
        .ok_or_else(|| bad_input("--master HOST:PORT is needed with --nnodes > 1"))?;
    let master_addr = socket_addr("--master", master)?;
    let timeout = Duration::from_secs(args.timeout);
    let link = if args.node_rank == 0 {
        let listener = TcpListener::bind(("0.0.0.0", master_addr.port())).map_err(|e| {
            bad_input(format!(
                "--master {master}: port {} cannot be used on this node: {e}",
                master_addr.port()
            ))
        })?;
        NodeLink::accept(listener, args.nnodes, local_replicas as u32, timeout)
            .map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        let hello = Hello {
            rank: args.node_rank,
            nnodes: args.nnodes,
            local_replicas: local_replicas as u32,
        };
        NodeLink::connect(master_addr, hello, timeout)
            .map_err(|e| bad_input(format!("--master {master}: {e}")))?
    };
    Ok(Some(NodeSetup::new(link)))
}

/// The command line's hooks, with the evaluation sharded over the local devices.
struct DistHooks<'a, B: Backend> {
    cli: CliHooks<'a, B>,
    cfg: &'a attndet_detectors::config::ExperimentConfig,
    val: Option<&'a (CocoDataset, DetDataset)>,
    devices: &'a [B::Device],
    quiet: bool,
}

impl<B: DetBackend> TrainHooks<AnyDetector<B>> for DistHooks<'_, B> {
    fn on_epoch_start(&mut self, epoch: usize, iters: usize) {
        TrainHooks::<AnyDetector<B>>::on_epoch_start(&mut self.cli, epoch, iters);
    }

    fn on_iter(&mut self, rec: &IterRecord) {
        TrainHooks::<AnyDetector<B>>::on_iter(&mut self.cli, rec);
    }

    fn evaluate(&mut self, model: &AnyDetector<B>, epoch: usize) -> Result<Option<EvalResults>, String> {
        let Some(val) = self.val else { return Ok(None) };
        self.cli.bar.finish_and_clear();
        let kinds = eval_kinds(model, self.cfg);
        let records = &val.1.records;
        let per = records.len().div_ceil(self.devices.len()).max(1);
        let opts = test_loader_options(self.cfg);
        // each local device predicts a contiguous share of the val images; gathered in order
        let shares: Vec<Result<Vec<_>, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = records
                .chunks(per)
                .zip(self.devices)
                .map(|(chunk, device)| {
                    let (model, opts) = (model.clone().fork(device), opts.clone());
                    s.spawn(move || {
                        predict_records(&model, Arc::new(chunk.to_vec()), &opts, device, &mut |_, _| {})
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("an evaluation thread panicked".into()))
                })
                .collect()
        });
        let mut preds = Vec::with_capacity(records.len());
        for share in shares {
            preds.extend(share?);
        }
        let evals = evaluate_kinds(&val.0, &preds, &val.1.category_ids, &kinds).map_err(|e| e.to_string())?;
        if !self.quiet {
            for e in &evals {
                eprintln!(
                    "epoch {epoch}: {} evaluation on {} val images ({} devices)\n{}",
                    e.kind,
                    records.len(),
                    self.devices.len(),
                    summary_text(e)
                );
            }
        }
        Ok(Some(evals.into_iter().map(|e| (e.kind, e.stats)).collect()))
    }

    fn on_checkpoint(&mut self, dir: &std::path::Path) {
        TrainHooks::<AnyDetector<B>>::on_checkpoint(&mut self.cli, dir);
    }

    fn on_message(&mut self, msg: &str) {
        TrainHooks::<AnyDetector<B>>::on_message(&mut self.cli, msg);
    }
}

/// Train on `devices` of backend `B` (autodiff added here).
fn run_on<B: DetBackend>(
    args: &DistTrainArgs,
    p: &Prepared,
    devices: Vec<B::Device>,
    nodes: Option<NodeSetup>,
) -> anyhow::Result<()>
where
    AnyDetector<burn::backend::Autodiff<B>>:
        AutodiffModule<burn::backend::Autodiff<B>, InnerModule = AnyDetector<B>>,
{
    type A<B> = burn::backend::Autodiff<B>;
    let cfg = &p.cfg;
    let (mut setup, skipped, val) = train_setup(&args.train, p)?;
    let local = devices.len();
    let rank = nodes.as_ref().map_or(0, |n| n.rank as usize);
    let topo = Topology {
        first_replica: rank * local,
        world: local * nodes.as_ref().map_or(1, |n| n.num_nodes as usize),
        nodes,
        timeout: Duration::from_secs(args.timeout),
    };
    let writer = topo.first_replica == 0;
    let quiet = args.train.quiet || !writer;
    <A<B> as Backend>::seed(&devices[0], cfg.seed);
    // built once and materialised: every local replica starts from these weights
    let model = build_model::<A<B>>(cfg, &devices[0])?;
    // the one-device notice, told with the replicas
    setup.notices = vec![format!(
        "training {} on {} images ({skipped}) with {} replicas ({} per node), global batch {}, work dir {}",
        args.train.config.display(),
        setup.train_records.len(),
        topo.world,
        local,
        cfg.data.batch_size * topo.world,
        setup.work_dir.display()
    )];
    let inner_devices: Vec<B::Device> = devices.clone();
    let mut hooks = DistHooks::<B> {
        cli: CliHooks::<B>::new(cfg, val.as_ref(), quiet, &inner_devices[0], args.train.max_iters),
        cfg,
        val: val.as_ref(),
        devices: &inner_devices,
        quiet,
    };
    let result = train_distributed::<A<B>, AnyDetector<A<B>>, _>(model, &setup, &devices, &topo, &mut hooks);
    hooks.cli.bar.finish_and_clear();
    let (_, summary) = result.map_err(train_error)?;
    if writer {
        if let Err(e) = crate::plot::plot_work_dir(&setup.work_dir) {
            eprintln!("warning: could not draw the curves: {e:#}");
        }
        println!(
            "done: {} iterations on {} replicas; last checkpoint {}",
            summary.losses.len(),
            topo.world,
            summary
                .last_checkpoint
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into())
        );
    }
    Ok(())
}

/// Run `attndet dist-train`.
pub fn run(args: &DistTrainArgs) -> anyhow::Result<()> {
    let devices = parse_devices(&args.devices)?;
    for d in &devices {
        d.check_usable()?;
    }
    if args.timeout == 0 {
        return Err(bad_input("--timeout: must be at least 1 second"));
    }
    let p = prepare(&args.train.config, &args.train.cfg_options, args.train.seed)?;
    let nodes = node_setup(args, devices.len())?;
    match devices[0] {
        DeviceArg::Cpu => {
            run_on::<burn::backend::Flex>(args, &p, vec![Default::default(); devices.len()], nodes)
        }
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda(_) => {
            let cuda = devices
                .iter()
                .map(|d| match d {
                    DeviceArg::Cuda(i) => burn::backend::cuda::CudaDevice::new(*i),
                    _ => unreachable!("parse_devices rejects mixed lists"),
                })
                .collect();
            run_on::<burn::backend::Cuda>(args, &p, cuda, nodes)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceArg::Cuda(_) => unreachable!("check_usable rejects CUDA without the feature"),
        #[cfg(feature = "wgpu")]
        DeviceArg::Wgpu(_) => {
            let adapters = devices
                .iter()
                .map(|d| match d {
                    DeviceArg::Wgpu(i) => crate::device::wgpu_adapters::device(*i),
                    _ => unreachable!("parse_devices rejects mixed lists"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            run_on::<burn::backend::Wgpu>(args, &p, adapters, nodes)
        }
        #[cfg(not(feature = "wgpu"))]
        DeviceArg::Wgpu(_) => unreachable!("check_usable rejects wgpu without the feature"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists() {
        assert_eq!(parse_devices("cpu,cpu").unwrap(), vec![DeviceArg::Cpu; 2]);
        assert_eq!(
            parse_devices("cuda:0, cuda:1").unwrap(),
            vec![DeviceArg::Cuda(0), DeviceArg::Cuda(1)]
        );
        let msg = |s: &str| parse_devices(s).unwrap_err().to_string();
        assert!(
            msg("cpu,gpu").contains("unknown device `gpu`"),
            "{}",
            msg("cpu,gpu")
        );
        assert!(msg("").contains("--devices"));
        assert!(msg("cpu,cuda:0").contains("mixes"));
        assert!(msg("cuda:1,cuda:1").contains("listed twice"));
    }
}
