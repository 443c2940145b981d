//! `attndet eval`: COCO evaluation of a results file, numbers identical to pycocotools 2.0.11.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use attndet_coco::eval::STAT_NAMES;
use attndet_coco::{CocoDataset, EvalParams, Evaluation, IouType, evaluate, load_results};
use attndet_detectors::engine::evaluate::PROPOSAL_STAT_NAMES;
use attndet_detectors::models::EvalKind;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

/// Which IoU the evaluation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IouTypeArg {
    /// Boxes `[x, y, w, h]`.
    Bbox,
    /// Masks (RLE or polygons).
    Segm,
}

/// The long help of `attndet eval`.
pub const LONG_ABOUT: &str = "Evaluate detection results against COCO ground truth, exactly like pycocotools 2.0.11 \
(COCOeval: evaluate, accumulate, summarize), and much faster.\n\n\
Prints the familiar 12-line summary (AP@[.50:.95], AP50, AP75, AP small/medium/large, AR@1/10/100, AR \
small/medium/large). With --json, stdout is one JSON object: {\"iou_type\", \"stats\": [12 numbers in \
pycocotools' order], \"AP\", \"AP50\", ..., \"ARl\"} plus \"per_class\" with --per-class; with --proposals the six proposal figures instead: {\"iou_type\", \"stats\": [6], \"AR@100\", \"AR@300\", \"AR@1000\", \"AR_s@1000\", \"AR_m@1000\", \"AR_l@1000\"}. `attndet test --json` prints the same object for each evaluated kind.\n\n\
The results file is a JSON list of {image_id, category_id, bbox: [x, y, w, h], score} (and \"segmentation\" as \
compressed RLE for segm), read with pycocotools' loadRes rules: every image must be in the ground truth; \
detections of unknown categories are dropped; an empty list gives AP 0.";

/// The examples at the end of `attndet eval --help`.
pub const EXAMPLES: &str = "Examples:\n  \
attndet eval --ann instances_val2017.json --results dets.json --iou-type bbox --per-class\n  \
attndet eval --ann instances_val2017.json --results res.segm.json --iou-type segm --json\n  \
attndet eval --ann instances_val2017.json --results proposals.json --proposals";

/// Arguments of `attndet eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Ground truth: a COCO instances JSON file.
    #[arg(long, value_name = "GT.json")]
    pub ann: PathBuf,
    /// Detections: a COCO results JSON file.
    #[arg(long, value_name = "DT.json")]
    pub results: PathBuf,
    /// Compare boxes or masks.
    #[arg(long, value_enum, default_value = "bbox")]
    pub iou_type: IouTypeArg,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also report AP per category (IoU .50:.95, all areas, 100 detections).
    #[arg(long)]
    pub per_class: bool,
    /// Class-agnostic proposal recall (AR@100/300/1000, categories pooled) instead of the 12 stats.
    #[arg(long)]
    pub proposals: bool,
}

/// Run `attndet eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let gt = CocoDataset::load(&args.ann).context("loading the ground truth")?;
    let dets = load_results(&args.results, &gt).context("loading the results")?;
    let t_load = t0.elapsed();
    let iou_type = match args.iou_type {
        IouTypeArg::Bbox => IouType::Bbox,
        IouTypeArg::Segm => IouType::Segm,
    };
    let params = if args.proposals {
        EvalParams {
            iou_type,
            ..EvalParams::proposals()
        }
    } else {
        EvalParams::new(iou_type)
    };
    let ev = evaluate(&gt, &dets, &params).context("evaluating")?;
    let t_eval = t0.elapsed() - t_load;
    if args.json {
        println!("{}", serde_json::to_string(&to_json(&ev, args))?);
        return Ok(());
    }
    eprintln!(
        "{} images, {} ground-truth objects, {} detections: loaded in {:.2}s, evaluated ({iou_type}) in {:.2}s",
        gt.images().len(),
        gt.annotations().len(),
        dets.len(),
        t_load.as_secs_f64(),
        t_eval.as_secs_f64()
    );
    if args.proposals {
        for (m, ar) in ev.average_recall() {
            println!(" Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets={m:>4} ] = {ar:.3}");
        }
    } else {
        print!("{}", ev.summary());
    }
    if args.per_class {
        println!("{}", per_class_table(&ev));
    }
    Ok(())
}

/// The one JSON shape of a kind's stats, in `eval --json`, `test --json` and `demo --json`:
/// `{"iou_type": "bbox", "stats": [numbers in pycocotools' order], "AP": .., "AP50": .., ...}` (the list and
/// the same numbers by name; -1 where pycocotools gives -1, a non-finite value as null).
pub fn stats_json(iou_type: &str, stats: &[f64], names: &[&str]) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("iou_type".into(), json!(iou_type));
    obj.insert(
        "stats".into(),
        Value::Array(stats.iter().map(|v| finite_or_null(*v)).collect()),
    );
    for (name, v) in names.iter().zip(stats) {
        obj.insert((*name).into(), finite_or_null(*v));
    }
    Value::Object(obj)
}

/// [`stats_json`] of one evaluated kind: the 12 COCO stats for bbox and segm, the six proposal figures
/// (box IoU) for proposals.
pub fn kind_stats_json(kind: EvalKind, stats: &[f64]) -> Value {
    match kind {
        EvalKind::Proposal => stats_json("bbox", stats, &PROPOSAL_STAT_NAMES),
        _ => stats_json(kind.name(), stats, &STAT_NAMES),
    }
}

fn finite_or_null(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

fn to_json(ev: &Evaluation, args: &EvalArgs) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("iou_type".into(), json!(ev.params.iou_type.to_string()));
    let (stats, names): (Vec<f64>, &[&str]) = if args.proposals {
        (ev.proposal_stats(), &PROPOSAL_STAT_NAMES)
    } else {
        (ev.stats.clone(), &STAT_NAMES)
    };
    if let Value::Object(named) = stats_json(&ev.params.iou_type.to_string(), &stats, names) {
        obj.extend(named);
    }
    if args.per_class {
        let rows: Vec<Value> = ev
            .per_category_ap()
            .into_iter()
            .map(|(id, name, ap)| json!({"id": id, "name": name, "AP": finite_or_null(ap)}))
            .collect();
        obj.insert("per_class".into(), Value::Array(rows));
    }
    Value::Object(obj)
}

/// mmdetection-style classwise table: three (category, AP) column pairs per row.
fn per_class_table(ev: &Evaluation) -> String {
    let cells: Vec<(String, String)> = ev
        .per_category_ap()
        .into_iter()
        .map(|(_, name, ap)| {
            (
                name,
                if ap.is_nan() {
                    "nan".into()
                } else {
                    format!("{ap:.3}")
                },
            )
        })
        .collect();
    let name_w = cells.iter().map(|c| c.0.len()).max().unwrap_or(8).max(8);
    let cols = 3.min(cells.len().max(1));
    let mut out = String::new();
    let header: Vec<String> = (0..cols)
        .map(|_| format!("{:<name_w$} | {:>5}", "category", "AP"))
        .collect();
    let sep = "-".repeat(header.join(" | ").len());
    out.push_str(&sep);
    out.push('\n');
    out.push_str(&header.join(" | "));
    out.push('\n');
    out.push_str(&sep);
    for row in cells.chunks(cols) {
        out.push('\n');
        let line: Vec<String> = row
            .iter()
            .map(|(n, ap)| format!("{n:<name_w$} | {ap:>5}"))
            .collect();
        out.push_str(&line.join(" | "));
    }
    out.push('\n');
    out.push_str(&sep);
    out
}
