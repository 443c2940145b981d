//! `attndet`: object detection and instance segmentation research on attention-enhanced backbones.
//!
//! One module per subcommand; this file only parses the command line, dispatches, and maps errors to exit
//! codes (0 ok, 1 runtime failure, 2 bad usage or bad input).

mod analyze;
mod benchmark;
mod ckpt;
mod classify;
mod config_cmd;
mod convert;
mod dataset;
mod demo;
mod device;
mod dist_train;
mod errors;
mod eval;
mod flops;
mod infer;
mod models;
mod plot;
mod sigpipe;
mod swap;
mod test;
mod train;

use clap::{Parser, Subcommand};

/// The long version's line about CUDA support.
#[cfg(feature = "cuda")]
macro_rules! cuda_line {
    () => {
        "cuda: yes"
    };
}
#[cfg(not(feature = "cuda"))]
macro_rules! cuda_line {
    () => {
        "cuda: no (rebuild with --features cuda)"
    };
}
/// The long version's line about wgpu support.
#[cfg(feature = "wgpu")]
macro_rules! wgpu_line {
    () => {
        "wgpu: yes"
    };
}
#[cfg(not(feature = "wgpu"))]
macro_rules! wgpu_line {
    () => {
        "wgpu: no (rebuild with --features wgpu)"
    };
}
/// Long version string: the crate version and which GPU backends are compiled in.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\n",
    cuda_line!(),
    "\n",
    wgpu_line!(),
    "\nburn: 0.21.0"
);

#[derive(Parser, Debug)]
#[command(
    name = "attndet",
    version = env!("CARGO_PKG_VERSION"),
    long_version = LONG_VERSION,
    about = "Object detection and instance segmentation research on attention-enhanced backbones",
    long_about = "attndet trains and evaluates detectors (RetinaNet, R-CNN family) with attention-enhanced \
backbones (SE, ECA, CBAM, GC, SK, GE, DCA, SDA) and evaluates them with a COCO metric identical to \
pycocotools.\n\nEvery subcommand that computes (train, dist-train, test, infer, demo, classify, benchmark, swap,\
devices) takes --device cpu|cuda:N|wgpu[:N] (default cpu).\n\
Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (the message names the file or field).",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show which compute devices this build can use (`--json` for scripts).
    #[command(
        after_help = "Examples:\n  attndet devices\n  attndet devices --json\n  attndet devices --device wgpu:0   # exit 2 when it cannot be used"
    )]
    Devices(device::DevicesArgs),
    /// Inspect configs: `attndet config show CONFIG [--cfg-options KEY=VALUE ...]`.
    #[command(
        subcommand,
        after_help = "Examples:\n  attndet config show configs/retinanet/retinanet_r50_fpn_1x_coco.json\n  \
attndet config show CONFIG --cfg-options data.batch_size=4"
    )]
    Config(config_cmd::ConfigCommand),
    /// COCO evaluation of a results file (bbox or segm), identical to pycocotools: `attndet eval --ann GT.json
    /// --results DT.json --iou-type bbox|segm [--json] [--per-class]`.
    #[command(long_about = eval::LONG_ABOUT, after_help = eval::EXAMPLES)]
    Eval(eval::EvalArgs),
    /// COCO datasets: `stats ANN.json`, `synth --out DIR`, `browse ANN.json --images DIR --out DIR`.
    #[command(
        subcommand,
        after_help = "Examples:\n  attndet dataset stats instances_val2017.json\n  \
attndet dataset synth --out data/shapes\n  \
attndet dataset browse instances_val.json --images data/shapes/val --out browse/"
    )]
    Dataset(dataset::DatasetCommand),
    /// ImageNet classification with a zoo model: `attndet classify --model NAME --checkpoint FILE [--no-resize]
    /// [--topk K] [--json] IMAGE...`.
    Classify(classify::ClassifyArgs),
    /// Parameters and FLOPs (MACs, ptflops convention) of a zoo model: `attndet flops --model NAME
    /// [--input-size H W] [--json]`.
    Flops(flops::FlopsArgs),
    /// Reference checkpoint to ours, strictly checked: `attndet convert --model NAME --from FILE.pth --out
    /// FILE.safetensors` (a backbone), or `--config CONFIG --from FILE.pth --out DIR` (a whole mmdetection
    /// detector to a checkpoint directory).
    Convert(convert::ConvertArgs),
    /// Train a detector: `attndet train CONFIG [--work-dir DIR] [--resume [CKPT]] [--cfg-options ...] [--seed S]`.
    Train(train::TrainArgs),
    /// Data-parallel training over several devices and nodes, equal to one device with the global batch:
    /// `attndet dist-train CONFIG --devices cpu,cpu|cuda:0,cuda:1,... [--nnodes N --node-rank R --master
    /// HOST:PORT] [train options]`.
    DistTrain(dist_train::DistTrainArgs),
    /// Evaluate a checkpoint on the val split: `attndet test [CONFIG] CKPT [--out results.json] [--json]`.
    Test(test::TestArgs),
    /// Detect objects in images: `attndet infer [CONFIG] CKPT IMAGE|DIR|GLOB... [--out dets.json] [--show-dir DIR]`.
    Infer(infer::InferArgs),
    /// Generate the synthetic dataset, train a small detector on it from scratch (RetinaNet, Faster, Mask or
    /// Cascade R-CNN), evaluate, show.
    Demo(demo::DemoArgs),
    /// Draw loss and AP curves of a work dir as PNG: `attndet plot WORK_DIR`.
    Plot(plot::PlotArgs),
    /// The zoo: every backbone and every detector config, with parameters and FLOPs: `attndet models [--json]`.
    Models(models::ModelsArgs),
    /// Analyse a results file: `analyze confusion|errors|results CONFIG RESULTS`.
    #[command(subcommand)]
    Analyze(analyze::AnalyzeCommand),
    /// Inference speed per stage (data, backbone, neck, heads, post-processing): `attndet benchmark CONFIG CKPT`.
    Benchmark(benchmark::BenchmarkArgs),
    /// Train and test one detector with several backbones and compare them: `attndet swap CONFIG --backbones
    /// a,b,c [--init DIR_OR_LIST] [--work-dir DIR]`, or `attndet swap --report DIR`.
    Swap(swap::SwapArgs),
}

fn main() {
    sigpipe::restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(args) => device::print_devices(&args, &args.device.device),
        Command::Config(cmd) => config_cmd::run(&cmd),
        Command::Eval(args) => eval::run(&args),
        Command::Dataset(cmd) => dataset::run(&cmd),
        Command::Classify(args) => classify::run(&args, &args.device.device),
        Command::Flops(args) => flops::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Train(args) => train::run(&args, &args.device.device),
        Command::DistTrain(args) => dist_train::run(&args),
        Command::Test(args) => test::run(&args, &args.device.device),
        Command::Infer(args) => infer::run(&args, &args.device.device),
        Command::Demo(args) => demo::run(&args, &args.device.device),
        Command::Plot(args) => plot::run(&args),
        Command::Models(args) => models::run(&args),
        Command::Analyze(cmd) => analyze::run(&cmd),
        Command::Benchmark(args) => benchmark::run(&args, &args.device.device),
        Command::Swap(args) => swap::run(&args, &args.device.device),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(errors::exit_code(&err));
    }
}
