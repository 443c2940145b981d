//! `attndet analyze results`: the best and the worst images of a results file by per-image AP, as
//! mmdetection's `tools/analysis_tools/analyze_results.py`, each saved with its ground truth (left) beside the
//! predictions (right).
//!
//! The per-image AP is COCO's AP@[.50:.95] (maxDets 100) of that image alone, from our pycocotools-identical
//! evaluator. Images without ground truth have no AP and are left out of the ranking.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_coco::draw::{Instance, draw_instances, draw_label, enlarge_small, palette};
use attndet_coco::{CocoDataset, Detection, EvalParams, IouType, evaluate};
use clap::Args;
use image::{Rgb, RgbImage};
use rayon::prelude::*;
use serde_json::json;

use super::GroundTruthArgs;
use crate::errors::bad_input;

/// Arguments of `attndet analyze results`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  attndet test CONFIG work_dirs/x/best --out results.json\n  \
attndet analyze results CONFIG results.json --out-dir work_dirs/x/analysis --topk 10\n  \
attndet analyze results CONFIG results.json --ann gt.json --img-dir images/ --show-score-thr 0.5 --json"
)]
pub struct ResultsArgs {
    #[command(flatten)]
    pub gt: GroundTruthArgs,
    /// Where the drawings go: OUT_DIR/best/ and OUT_DIR/worst/, named `RANK_AP_FILE` [default: the results
    /// file's directory + `/analysis`].
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Directory of the images [default: the config's `data.data_root` + `data.val.img_dir`].
    #[arg(long)]
    pub img_dir: Option<PathBuf>,
    /// Images kept at each end of the ranking.
    #[arg(long, default_value_t = 20)]
    pub topk: usize,
    /// Minimum score of a drawn prediction (all are scored).
    #[arg(long, default_value_t = 0.3)]
    pub show_score_thr: f64,
    /// Print one JSON object: {"ranked": images with an AP, "best": [{"image_id", "file_name", "ap",
    /// "drawing"}], "worst": [...]}.
    #[arg(long)]
    pub json: bool,
}

/// AP@[.50:.95] of image `id` for its detections `dets`; `None` without ground truth.
fn image_ap(gt: &CocoDataset, id: u64, dets: &[Detection]) -> Result<Option<f64>, attndet_coco::CocoError> {
    let params = EvalParams {
        image_ids: Some(vec![id]),
        ..EvalParams::new(IouType::Bbox)
    };
    let ap = evaluate(gt, dets, &params)?.stats[0];
    Ok((ap >= 0.0).then_some(ap))
}

/// AP@[.50:.95] of each image with ground truth, best first (ties: smaller image id first).
pub fn per_image_ap(
    gt: &CocoDataset,
    dets: &[Detection],
) -> Result<Vec<(u64, f64)>, attndet_coco::CocoError> {
    let mut by_image: std::collections::HashMap<u64, Vec<Detection>> = std::collections::HashMap::new();
    for d in dets {
        by_image.entry(d.image_id).or_default().push(d.clone());
    }
    let ids = gt.sorted_image_ids();
    let mut aps: Vec<(u64, f64)> = ids
        .par_iter()
        .map(|&id| {
            let own = by_image.get(&id).map(Vec::as_slice).unwrap_or_default();
            Ok(image_ap(gt, id, own)?.map(|ap| (id, ap)))
        })
        .collect::<Result<Vec<_>, attndet_coco::CocoError>>()?
        .into_iter()
        .flatten()
        .collect();
    aps.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(aps)
}

/// The image with its ground truth drawn on the left and the predictions (score >= `thr`) on the right.
fn side_by_side(
    gt: &CocoDataset,
    dets: &[&Detection],
    image_id: u64,
    file: &Path,
    ap: Option<f64>,
    thr: f64,
) -> anyhow::Result<RgbImage> {
    let img = image::open(file)
        .with_context(|| format!("reading {}", file.display()))?
        .to_rgb8();
    let (img, k) = enlarge_small(img, 320);
    let k = k as f64;
    let name = |id: u64| {
        gt.category(id)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let colour = |id: u64| palette(gt.category_index(id).unwrap_or(0));
    let scaled = |b: &[f64]| [b[0] * k, b[1] * k, b[2] * k, b[3] * k];
    let truth: Vec<Instance> = gt
        .annotations_of(image_id)
        .map(|a| Instance {
            bbox: scaled(&a.bbox),
            mask: None,
            label: if a.iscrowd != 0 {
                format!("{} (crowd)", name(a.category_id))
            } else {
                name(a.category_id)
            },
            colour: colour(a.category_id),
        })
        .collect();
    let preds: Vec<Instance> = dets
        .iter()
        .filter(|d| d.score >= thr)
        .map(|d| Instance {
            bbox: scaled(&d.bbox),
            mask: None,
            label: format!("{} {:.2}", name(d.category_id), d.score),
            colour: colour(d.category_id),
        })
        .collect();
    let (w, h) = (img.width(), img.height());
    let head = 24;
    let mut out = RgbImage::from_pixel(2 * w + 8, h + head, Rgb([255, 255, 255]));
    for (x0, instances, title) in [
        (0, &truth, "ground truth".to_string()),
        (
            w + 8,
            &preds,
            match ap {
                Some(ap) => format!("predictions (AP {ap:.3})"),
                None => "predictions".into(),
            },
        ),
    ] {
        let mut panel = img.clone();
        draw_instances(&mut panel, instances);
        image::imageops::replace(&mut out, &panel, x0 as i64, head as i64);
        draw_label(&mut out, x0 as i32 + 2, 2, &title, [60, 60, 60], 16.0);
    }
    Ok(out)
}

/// `attndet test --show-dir DIR --show-gt`: the image `file` with its ground truth beside the detections
/// `dets` of image `id` (labels index `category_ids`), saved under `out_dir` with the same file name.
pub fn save_beside_ground_truth(
    gt: &CocoDataset,
    category_ids: &[u64],
    (id, dets): (u64, &attndet_detectors::models::Detections),
    file: &Path,
    score_thr: f64,
    out_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let coco = attndet_detectors::engine::evaluate::to_coco_detections(&[(id, dets.clone())], category_ids);
    let own: Vec<&Detection> = coco.iter().collect();
    let ap = image_ap(gt, id, &coco)?;
    let img = side_by_side(gt, &own, id, file, ap, score_thr)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "image.png".into());
    let out = out_dir.join(name);
    img.save(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// Run `attndet analyze results`.
pub fn run(args: &ResultsArgs) -> anyhow::Result<()> {
    if args.topk == 0 {
        return Err(bad_input("--topk must be at least 1"));
    }
    let (gt, dets) = args.gt.load()?;
    let img_dir = match &args.img_dir {
        Some(d) => d.clone(),
        None => {
            let cfg = crate::ckpt::config_of(&args.gt.config, &args.gt.cfg_options)?.cfg;
            Path::new(&cfg.data.data_root).join(&cfg.data.val.img_dir)
        }
    };
    let ranked = per_image_ap(&gt, &dets).context("evaluating each image")?;
    let out_dir = args.out_dir.clone().unwrap_or_else(|| {
        args.gt
            .results
            .parent()
            .unwrap_or(Path::new("."))
            .join("analysis")
    });
    let k = args.topk.min(ranked.len());
    let best = &ranked[..k];
    let worst: Vec<(u64, f64)> = ranked.iter().rev().take(k).copied().collect();
    let mut report = serde_json::Map::new();
    report.insert("ranked".into(), json!(ranked.len()));
    for (group, list) in [("best", best.to_vec()), ("worst", worst)] {
        let dir = out_dir.join(group);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut rows = Vec::new();
        for (rank, (id, ap)) in list.iter().enumerate() {
            let info = gt
                .image(*id)
                .ok_or_else(|| anyhow::anyhow!("image {id} vanished"))?;
            let own: Vec<&Detection> = dets.iter().filter(|d| d.image_id == *id).collect();
            let drawing = side_by_side(
                &gt,
                &own,
                *id,
                &img_dir.join(&info.file_name),
                Some(*ap),
                args.show_score_thr,
            )
            .map_err(|e| bad_input(format!("{e:#}")))?;
            let base = Path::new(&info.file_name)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| format!("{id}.png"));
            let stem = Path::new(&base)
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let path = dir.join(format!("{:02}_{ap:.3}_{stem}.png", rank + 1));
            drawing
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            rows.push(json!({"image_id": id, "file_name": info.file_name, "ap": ap, "drawing": path}));
        }
        report.insert(group.into(), json!(rows));
    }
    if args.json {
        println!("{}", serde_json::Value::Object(report));
        return Ok(());
    }
    println!("{} images ranked by AP@[.50:.95]", ranked.len());
    for group in ["best", "worst"] {
        println!("{group}:");
        for r in report[group].as_array().into_iter().flatten() {
            println!(
                "  {:.3}  {}  -> {}",
                r["ap"].as_f64().unwrap_or(0.0),
                r["file_name"].as_str().unwrap_or(""),
                r["drawing"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}
