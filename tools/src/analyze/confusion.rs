//! `attndet analyze confusion`: the confusion matrix of mmdetection's
//! `tools/analysis_tools/confusion_matrix.py`, from a COCO results file.
//!
//! A `(C + 1) x (C + 1)` matrix of counts, rows the ground-truth class, columns the predicted class, the last
//! row and column `background`. Per image, every detection with score >= `score_thr` is compared with every
//! ground-truth box (crowd and degenerate boxes left out, as mmdetection's dataset does):
//! - each ground truth it overlaps with IoU >= `tp_iou_thr` adds 1 at (that box's class, the detection's
//!   class), so one detection may count several times;
//! - a detection overlapping none adds 1 at (background, its class): a false positive on background;
//! - a ground truth that no detection of its own class overlaps adds 1 at (its class, background): missed.
//!
//! The figure shows each row normalised to percent of its sum (a row without entries stays empty).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_coco::draw::{draw_text, text_size};
use attndet_coco::{CocoDataset, Detection};
use clap::Args;
use image::{Rgb, RgbImage};
use serde_json::json;

use super::GroundTruthArgs;
use crate::errors::bad_input;
use crate::plot::{draw_text_vertical, save};

/// Arguments of `attndet analyze confusion`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  attndet test CONFIG work_dirs/x/best --out results.json\n  \
attndet analyze confusion work_dirs/x/best results.json   # the checkpoint's config\n  \
attndet analyze confusion CONFIG results.json --score-thr 0.5 --tp-iou-thr 0.75 --out cm.png --json"
)]
pub struct ConfusionArgs {
    #[command(flatten)]
    pub gt: GroundTruthArgs,
    /// Detections below this score are left out (the reference's default).
    #[arg(long, default_value_t = 0.3)]
    pub score_thr: f64,
    /// IoU at which a detection counts as overlapping a ground-truth box.
    #[arg(long, default_value_t = 0.5)]
    pub tp_iou_thr: f64,
    /// Where the figure goes [default: confusion_matrix.png beside the results file].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object instead of the table: {"classes": [C names + "background"], "matrix": [[counts,
    /// rows ground truth, columns predictions]], "normalized": [[percent of the row]], "score_thr",
    /// "tp_iou_thr", "figure"}.
    #[arg(long)]
    pub json: bool,
}

/// IoU of two `[x1, y1, x2, y2]` boxes (mmdetection's `bbox_overlaps`, no +1, union at least 1e-6).
fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    inter / union.max(1e-6)
}

fn xyxy(b: &[f64]) -> [f64; 4] {
    [b[0], b[1], b[0] + b[2], b[1] + b[3]]
}

/// The `(C + 1) x (C + 1)` count matrix (row-major) for the categories of `gt` in id order.
pub fn confusion_matrix(
    gt: &CocoDataset,
    dets: &[Detection],
    score_thr: f64,
    tp_iou_thr: f64,
) -> Vec<Vec<u64>> {
    let cat_ids = gt.sorted_category_ids();
    let c = cat_ids.len();
    let label: HashMap<u64, usize> = cat_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut m = vec![vec![0u64; c + 1]; c + 1];
    let mut by_image: HashMap<u64, Vec<&Detection>> = HashMap::new();
    for d in dets.iter().filter(|d| d.score >= score_thr) {
        by_image.entry(d.image_id).or_default().push(d);
    }
    for img in gt.images() {
        // mmdetection's CocoDataset: crowd boxes are ignored, boxes under 1 px or without area dropped
        let gts: Vec<([f64; 4], usize)> = gt
            .annotations_of(img.id)
            .filter(|a| a.iscrowd == 0 && a.area > 0.0 && a.bbox[2] >= 1.0 && a.bbox[3] >= 1.0)
            .filter_map(|a| Some((xyxy(&a.bbox), *label.get(&a.category_id)?)))
            .collect();
        let mut matched = vec![false; gts.len()];
        for d in by_image.get(&img.id).map(Vec::as_slice).unwrap_or_default() {
            let Some(&dl) = label.get(&d.category_id) else {
                continue;
            };
            let db = xyxy(&d.bbox);
            let mut any = false;
            for (j, &(gb, gl)) in gts.iter().enumerate() {
                if iou(db, gb) >= tp_iou_thr {
                    any = true;
                    if gl == dl {
                        matched[j] = true;
                    }
                    m[gl][dl] += 1;
                }
            }
            if !any {
                m[c][dl] += 1;
            }
        }
        for (j, &(_, gl)) in gts.iter().enumerate() {
            if !matched[j] {
                m[gl][c] += 1;
            }
        }
    }
    m
}

/// Each row as percent of its sum (NaN for an empty row, as the reference's division gives).
pub fn normalized(m: &[Vec<u64>]) -> Vec<Vec<f64>> {
    m.iter()
        .map(|row| {
            let s: u64 = row.iter().sum();
            row.iter().map(|&v| v as f64 * 100.0 / s as f64).collect()
        })
        .collect()
}

/// matplotlib's `plasma` colour map at `t` in [0, 1] (linear between five of its colours).
fn plasma(t: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 5] = [
        [13.0, 8.0, 135.0],
        [126.0, 3.0, 168.0],
        [204.0, 71.0, 120.0],
        [248.0, 149.0, 64.0],
        [240.0, 249.0, 33.0],
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        *o = (STOPS[i][c] + (STOPS[i + 1][c] - STOPS[i][c]) * f).round() as u8;
    }
    out
}

/// The figure: normalised cells in `plasma` with their percent, class names on both axes, a colour bar.
pub fn draw(names: &[String], norm: &[Vec<f64>], title: &str) -> RgbImage {
    let n = norm.len().max(1);
    let cell = (900 / n as u32).clamp(12, 56);
    let px = (cell as f32 * 0.4).clamp(9.0, 14.0);
    let label_px = 13.0;
    let name_w = names.iter().map(|s| text_size(label_px, s).0).max().unwrap_or(0);
    let (_, lh) = text_size(label_px, "Ag");
    let (_, th) = text_size(18.0, "Ag");
    let left = 10 + lh + 10 + name_w + 6;
    let top = 10 + th + 10 + lh + 8;
    let grid = cell * n as u32;
    let bottom = 6 + name_w + 10 + lh + 10;
    let bar_x = left + grid + 24;
    let (w, h) = (
        bar_x + 18 + 8 + text_size(12.0, "100").0 + 12,
        top + grid + bottom,
    );
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let tw = text_size(18.0, title).0;
    draw_text(
        &mut img,
        (w.saturating_sub(tw) / 2) as i32,
        10,
        18.0,
        [30, 30, 30],
        title,
    );
    let pw = text_size(label_px, "Prediction").0;
    draw_text(
        &mut img,
        (left + grid / 2) as i32 - pw as i32 / 2,
        (10 + th + 10) as i32,
        label_px,
        [30, 30, 30],
        "Prediction",
    );
    draw_text_vertical(
        &mut img,
        (10 + lh / 2) as i32,
        (top + grid / 2) as i32,
        label_px,
        [30, 30, 30],
        "Ground Truth",
    );
    for (r, row) in norm.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let (x0, y0) = (left + c as u32 * cell, top + r as u32 * cell);
            let colour = if v.is_finite() {
                plasma(v / 100.0)
            } else {
                [255, 255, 255]
            };
            for y in y0..y0 + cell {
                for x in x0..x0 + cell {
                    img.put_pixel(x, y, Rgb(colour));
                }
            }
            if v.is_finite() && cell >= 20 {
                let t = format!("{}", v.round() as i64);
                let (tw, tth) = text_size(px, &t);
                let luma = 0.299 * colour[0] as f64 + 0.587 * colour[1] as f64 + 0.114 * colour[2] as f64;
                let fg = if luma > 140.0 { [0, 0, 0] } else { [255, 255, 255] };
                draw_text(
                    &mut img,
                    (x0 + cell / 2) as i32 - tw as i32 / 2,
                    (y0 + cell / 2) as i32 - tth as i32 / 2,
                    px,
                    fg,
                    &t,
                );
            }
        }
    }
    // grid lines between cells
    for k in 0..=n as u32 {
        for t in 0..grid {
            img.put_pixel(
                left + t.min(grid - 1),
                top + (k * cell).min(grid - 1),
                Rgb([255, 255, 255]),
            );
            img.put_pixel(
                left + (k * cell).min(grid - 1),
                top + t.min(grid - 1),
                Rgb([255, 255, 255]),
            );
        }
    }
    for (i, name) in names.iter().enumerate() {
        let nw = text_size(label_px, name).0;
        let cy = top + i as u32 * cell + cell / 2;
        draw_text(
            &mut img,
            (left - 6 - nw) as i32,
            cy as i32 - lh as i32 / 2,
            label_px,
            [30, 30, 30],
            name,
        );
        // column names read bottom to top under the grid
        let cx = left + i as u32 * cell + cell / 2;
        draw_text_vertical(
            &mut img,
            cx as i32,
            (top + grid + 6 + nw / 2) as i32,
            label_px,
            [30, 30, 30],
            name,
        );
    }
    // colour bar, 0 at the bottom
    for y in 0..grid {
        let colour = plasma(1.0 - y as f64 / (grid - 1).max(1) as f64);
        for x in bar_x..bar_x + 18 {
            img.put_pixel(x, top + y, Rgb(colour));
        }
    }
    for v in [0, 25, 50, 75, 100] {
        let y = top + ((100 - v) as f64 / 100.0 * (grid - 1) as f64) as u32;
        let t = v.to_string();
        draw_text(
            &mut img,
            (bar_x + 24) as i32,
            y as i32 - 7,
            12.0,
            [30, 30, 30],
            &t,
        );
    }
    img
}

/// The count table, rows ground truth, columns predictions.
fn table(names: &[String], m: &[Vec<u64>]) -> String {
    let w = names.iter().map(|n| n.len()).max().unwrap_or(2).max(12);
    let cw = names.iter().map(|n| n.len()).max().unwrap_or(2).max(6);
    let mut out = format!("{:<w$}", "GT \\ predicted");
    for n in names {
        out.push_str(&format!(" {n:>cw$}"));
    }
    out.push('\n');
    for (n, row) in names.iter().zip(m) {
        out.push_str(&format!("{n:<w$}"));
        for v in row {
            out.push_str(&format!(" {v:>cw$}"));
        }
        out.push('\n');
    }
    out
}

fn check_thresholds(args: &ConfusionArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.score_thr) {
        return Err(bad_input(format!(
            "--score-thr {}: must be in [0, 1]",
            args.score_thr
        )));
    }
    if !(args.tp_iou_thr > 0.0 && args.tp_iou_thr <= 1.0) {
        return Err(bad_input(format!(
            "--tp-iou-thr {}: must be in (0, 1]",
            args.tp_iou_thr
        )));
    }
    Ok(())
}

/// Run `attndet analyze confusion`.
pub fn run(args: &ConfusionArgs) -> anyhow::Result<()> {
    check_thresholds(args)?;
    let (gt, dets) = args.gt.load()?;
    let m = confusion_matrix(&gt, &dets, args.score_thr, args.tp_iou_thr);
    let mut names: Vec<String> = gt
        .sorted_category_ids()
        .iter()
        .map(|&id| {
            gt.category(id)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| id.to_string())
        })
        .collect();
    names.push("background".into());
    let norm = normalized(&m);
    let out = args.out.clone().unwrap_or_else(|| {
        args.gt
            .results
            .parent()
            .unwrap_or(Path::new("."))
            .join("confusion_matrix.png")
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let title = format!(
        "Normalized Confusion Matrix (score >= {}, IoU >= {})",
        args.score_thr, args.tp_iou_thr
    );
    save(&draw(&names, &norm, &title), &out)?;
    if args.json {
        let finite: Vec<Vec<Option<f64>>> = norm
            .iter()
            .map(|r| r.iter().map(|v| v.is_finite().then_some(*v)).collect())
            .collect();
        let doc = json!({
            "classes": names,
            "matrix": m,
            "normalized": finite,
            "score_thr": args.score_thr,
            "tp_iou_thr": args.tp_iou_thr,
            "figure": out,
        });
        println!("{doc}");
        return Ok(());
    }
    println!(
        "confusion matrix of {} ({} images, {} detections with score >= {}, IoU >= {}): rows ground truth, columns \
predictions",
        args.gt.results.display(),
        gt.images().len(),
        dets.iter().filter(|d| d.score >= args.score_thr).count(),
        args.score_thr,
        args.tp_iou_thr
    );
    print!("{}", table(&names, &m));
    println!("figure: {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use attndet_coco::CocoJson;

    fn dataset() -> CocoDataset {
        let json: CocoJson = serde_json::from_value(json!({
            "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"},
                       {"id": 2, "width": 100, "height": 100, "file_name": "b.png"}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "area": 100, "iscrowd": 0},
                {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
                {"id": 4, "image_id": 2, "category_id": 1, "bbox": [60, 60, 20, 20], "area": 400, "iscrowd": 1}
            ]
        }))
        .unwrap();
        CocoDataset::from_json(json, "test.json").unwrap()
    }

    #[test]
    fn counts_follow_the_reference_rules() {
        let gt = dataset();
        let dets = vec![
            // image 1: a on a (TP), b predicted on a's box (confusion a->b), a far from everything (BG FP)
            Detection::from_bbox(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
            Detection::from_bbox(1, 2, [1.0, 0.0, 10.0, 10.0], 0.8),
            Detection::from_bbox(1, 1, [30.0, 30.0, 5.0, 5.0], 0.7),
            // below the score threshold: ignored
            Detection::from_bbox(1, 2, [50.0, 50.0, 10.0, 10.0], 0.1),
            // image 2: a on b's box; the crowd box is not ground truth, so a detection on it is background
            Detection::from_bbox(2, 1, [0.0, 0.0, 20.0, 20.0], 0.9),
            Detection::from_bbox(2, 2, [60.0, 60.0, 20.0, 20.0], 0.9),
        ];
        let m = confusion_matrix(&gt, &dets, 0.3, 0.5);
        // rows gt a, b, background; columns predicted a, b, background
        // a: 1 TP, 1 confused as b; b in image 1 missed (its only detection is under the threshold),
        // b in image 2 confused as a and missed; background: the far a and the b on the crowd box
        assert_eq!(m, vec![vec![1, 1, 0], vec![1, 0, 2], vec![1, 1, 0]]);
        let n = normalized(&m);
        assert_eq!(n[0], vec![50.0, 50.0, 0.0]);
        assert!(normalized(&[vec![0, 0]])[0][0].is_nan());
    }

    #[test]
    fn no_detections_count_every_object_missed() {
        let gt = dataset();
        let m = confusion_matrix(&gt, &[], 0.3, 0.5);
        assert_eq!(m, vec![vec![0, 0, 1], vec![0, 0, 2], vec![0, 0, 0]]);
        assert!((iou([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-12);
    }
}
