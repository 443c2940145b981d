//! `attndet flops`: exact parameter count and FLOPs of a backbone, in the seed papers' convention.

use attndet_backbones::BackboneArch;
use attndet_backbones::cost::parameter_count;
use burn::backend::Flex;
use clap::Args;
use serde_json::json;

/// Largest `--input-size` side: the counts stay far from overflowing 64 bits.
const MAX_INPUT_SIDE: usize = 16384;

/// Arguments of `attndet flops`.
#[derive(Args, Debug)]
#[command(
    long_about = "Count the parameters (exact, as PyTorch's model.parameters()) and the FLOPs of a \
backbone with its 1000-class head, in the convention of the DCANet repository's flops_counter.py that the seed \
papers report (ptflops): multiply-accumulates of Conv2d (plus bias) and Linear, 2 per element for BatchNorm, 1 \
per element for ReLU and for pooling inputs; sigmoid, softmax, LayerNorm, Conv1d and element-wise products are \
free. FLOPs are in MACs (1 GMac = 1e9).\n\n\
The table lists each stem layer, block and head with its parameters, MACs and share. With --json, stdout is \
one JSON object: {\"model\", \"input\": [3, H, W], \"params\", \"flops\" (MACs), \"layers\": [{\"name\", \
\"params\", \"flops\"}]}.\n\n\
With a detector CONFIG instead of --model: parameters and MACs per part (backbone without its classifier, \
neck, RPN / dense head, RoI head for test_cfg.rpn.max_per_img proposals), in mmdetection's get_flops \
convention (the same counting; RoIAlign and NMS free), at the config's test scale (short x long side of \
data.pipeline.img_scale, e.g. 800 x 1333) unless --input-size is given.",
    after_help = "Examples:\n  attndet flops --model resnet50\n  attndet flops --model dca_se_resnet50 --input-size 800 1216 --json\n  \
attndet flops configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json"
)]
pub struct FlopsArgs {
    /// A detector config: count the whole detector, part by part.
    #[arg(required_unless_present = "model", conflicts_with = "model")]
    pub config: Option<std::path::PathBuf>,
    /// Zoo name, e.g. resnet50, se_resnet50, eca_resnet50_k3557, dca_cbam_resnet50, mobilenet_v2.
    #[arg(long)]
    pub model: Option<String>,
    /// Input height and width [default: 224 224 for a backbone, the config's test scale for a detector].
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    pub input_size: Option<Vec<usize>>,
    /// Rows of the table: name components kept (1: stem layers and stages, 2: blocks, 3: layers).
    #[arg(long, default_value_t = 2)]
    pub depth: usize,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn giga(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.3} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.3} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.3} K", v / 1e3)
    } else {
        format!("{v}")
    }
}

/// Run `attndet flops`.
pub fn run(args: &FlopsArgs) -> anyhow::Result<()> {
    if let Some(config) = &args.config {
        return run_detector(config, args);
    }
    let arch = BackboneArch::parse(args.model.as_deref().unwrap_or_default())?;
    let [h, w] = input_size(args.input_size.as_deref(), [224, 224])?;
    // Counting needs shapes only: the model is built lazily and its weights are never created.
    let model = arch.build_lazy::<Flex>(&Default::default())?;
    let cost = model.cost(h, w);
    let params = parameter_count(&model);
    let layers = cost.grouped(args.depth.max(1));
    if args.json {
        let layers: Vec<_> = layers
            .iter()
            .map(|(name, p, f)| json!({"name": name, "params": p, "flops": f}))
            .collect();
        let doc = json!({
            "model": arch.name(),
            "input": [3, h, w],
            "params": params,
            "flops": cost.flops,
            "layers": layers,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let width = layers.iter().map(|(n, _, _)| n.len()).max().unwrap_or(5).max(5);
    println!("{} at 3x{h}x{w} (MACs, DCANet/ptflops convention)", arch.name());
    println!(
        "{:<width$}  {:>12}  {:>14}  {:>7}",
        "layer", "params", "MACs", "share"
    );
    for (name, p, f) in &layers {
        let share = if cost.flops > 0 {
            100.0 * *f as f64 / cost.flops as f64
        } else {
            0.0
        };
        println!("{name:<width$}  {p:>12}  {f:>14}  {share:>6.2}%");
    }
    println!("{:<width$}  {:>12}  {:>14}", "total", params, cost.flops);
    println!(
        "params {} ({}), FLOPs {}Mac",
        params,
        giga(params as f64),
        giga(cost.flops as f64)
    );
    Ok(())
}

/// `--input-size`, checked, or `default`.
fn input_size(given: Option<&[usize]>, default: [usize; 2]) -> anyhow::Result<[usize; 2]> {
    let [h, w] = match given {
        Some(&[h, w]) => [h, w],
        _ => default,
    };
    if !(1..=MAX_INPUT_SIDE).contains(&h) || !(1..=MAX_INPUT_SIDE).contains(&w) {
        return Err(crate::errors::bad_input(format!(
            "--input-size {h} {w}: each side must be between 1 and {MAX_INPUT_SIDE}"
        )));
    }
    Ok([h, w])
}

/// `attndet flops CONFIG`: the detector's parts.
fn run_detector(config: &std::path::Path, args: &FlopsArgs) -> anyhow::Result<()> {
    use attndet_detectors::models::AnyDetector;
    use attndet_detectors::models::cost::detector_cost;
    let (cfg, _) = crate::config_cmd::load_config(config, &[])?;
    let scale = cfg.data.pipeline.img_scale;
    let [h, w] = input_size(
        args.input_size.as_deref(),
        [scale[0].min(scale[1]), scale[0].max(scale[1])],
    )?;
    let rois = cfg.model.test_proposals();
    let model = AnyDetector::<Flex>::from_config(&cfg.model, &Default::default())
        .map_err(|e| crate::errors::bad_input(e.to_string()))?;
    let parts = detector_cost(&model, [h, w], rois);
    let params: usize = parts.iter().map(|p| p.params).sum();
    let flops: u64 = parts.iter().map(|p| p.flops).sum();
    if args.json {
        let doc = json!({
            "config": config,
            "detector": model.type_name(),
            "input": [3, h, w],
            "rois": rois,
            "params": params,
            "flops": flops,
            "parts": parts,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{} ({}) at 3x{h}x{w}{} (MACs, mmdetection get_flops convention)",
        config.display(),
        model.type_name(),
        if rois > 0 {
            format!(", {rois} proposals")
        } else {
            String::new()
        }
    );
    println!("{:<10}  {:>12}  {:>16}  {:>7}", "part", "params", "MACs", "share");
    for p in &parts {
        let share = 100.0 * p.flops as f64 / flops.max(1) as f64;
        println!("{:<10}  {:>12}  {:>16}  {share:>6.2}%", p.part, p.params, p.flops);
    }
    println!("{:<10}  {:>12}  {:>16}", "total", params, flops);
    println!(
        "params {} ({}), FLOPs {}Mac",
        params,
        giga(params as f64),
        giga(flops as f64)
    );
    Ok(())
}
