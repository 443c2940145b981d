//! `attndet plot WORK_DIR`: loss and AP curves from `log.jsonl` as PNG images (`loss.png`, `ap.png`).
//!
//! The charts are drawn with plain lines (no text rendering): a light grid of 5 divisions on each axis, one
//! colour per series, the value range written into the file name's companion `curves.json` so the numbers
//! stay readable.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_detectors::engine::log::{LogLine, read_log};
use clap::Args;
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_hollow_rect_mut, draw_line_segment_mut};
use imageproc::rect::Rect;

use crate::errors::bad_input;

/// Arguments of `attndet plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A training work dir (holding `log.jsonl`).
    pub work_dir: PathBuf,
}

const COLOURS: [[u8; 3]; 5] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
];

/// One named series of (x, y) points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn chart(series: &[Series], path: &Path) -> anyhow::Result<()> {
    let (w, h, m) = (800u32, 480u32, 40f32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.1.is_finite())
        .collect();
    let (x0, x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all
        .iter()
        .fold((0f64, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (x1, y1) = (
        if x1 > x0 { x1 } else { x0 + 1.0 },
        if y1 > y0 { y1 } else { y0 + 1.0 },
    );
    let px = |x: f64| m + (x - x0) as f32 / (x1 - x0) as f32 * (w as f32 - 2.0 * m);
    let py = |y: f64| h as f32 - m - (y - y0) as f32 / (y1 - y0) as f32 * (h as f32 - 2.0 * m);
    for i in 0..=5 {
        let f = i as f32 / 5.0;
        let gx = m + f * (w as f32 - 2.0 * m);
        let gy = m + f * (h as f32 - 2.0 * m);
        draw_line_segment_mut(&mut img, (gx, m), (gx, h as f32 - m), Rgb([230, 230, 230]));
        draw_line_segment_mut(&mut img, (m, gy), (w as f32 - m, gy), Rgb([230, 230, 230]));
    }
    draw_hollow_rect_mut(
        &mut img,
        Rect::at(m as i32, m as i32).of_size(w - 2 * m as u32, h - 2 * m as u32),
        Rgb([0, 0, 0]),
    );
    for (s, colour) in series.iter().zip(COLOURS.iter().cycle()) {
        for pair in s.points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.1.is_finite() && b.1.is_finite() {
                draw_line_segment_mut(&mut img, (px(a.0), py(a.1)), (px(b.0), py(b.1)), Rgb(*colour));
            }
        }
        if s.points.len() == 1 {
            let (x, y) = (px(s.points[0].0), py(s.points[0].1));
            draw_hollow_rect_mut(
                &mut img,
                Rect::at(x as i32 - 2, y as i32 - 2).of_size(5, 5),
                Rgb(*colour),
            );
        }
    }
    let tmp = path.with_extension("tmp.png");
    img.save(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    // legend and axis ranges as data beside the picture (the chart itself has no text)
    let legend = serde_json::json!({
        "x_range": [x0, x1], "y_range": [y0, y1],
        "series": series.iter().zip(COLOURS.iter().cycle()).map(|(s, c)| serde_json::json!({"name": s.name, "rgb": c})).collect::<Vec<_>>(),
    });
    std::fs::write(
        path.with_extension("json"),
        serde_json::to_string_pretty(&legend)?,
    )?;
    Ok(())
}

/// Draw `loss.png` (total and terms per iteration) and `ap.png` (AP, AP50, AP75 per epoch) in `work_dir`.
/// Returns the files written.
pub fn plot_work_dir(work_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let log = work_dir.join("log.jsonl");
    let lines = read_log(&log).map_err(|e| bad_input(format!("{}: {e}", log.display())))?;
    let mut written = Vec::new();
    let train: Vec<_> = lines
        .iter()
        .filter_map(|l| if let LogLine::Train(r) = l { Some(r) } else { None })
        .collect();
    if !train.is_empty() {
        let mut series = vec![Series {
            name: "loss".into(),
            points: train.iter().map(|r| (r.global_iter as f64, r.loss)).collect(),
        }];
        for (k, (name, _)) in train[0].terms.iter().enumerate() {
            series.push(Series {
                name: name.clone(),
                points: train
                    .iter()
                    .filter_map(|r| r.terms.get(k).map(|t| (r.global_iter as f64, t.1)))
                    .collect(),
            });
        }
        let p = work_dir.join("loss.png");
        chart(&series, &p)?;
        written.push(p);
    }
    let val: Vec<_> = lines
        .iter()
        .filter_map(|l| if let LogLine::Val(r) = l { Some(r) } else { None })
        .collect();
    if !val.is_empty() {
        let series: Vec<Series> = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75"]
            .iter()
            .enumerate()
            .map(|(i, n)| Series {
                name: n.to_string(),
                points: val
                    .iter()
                    .filter_map(|r| {
                        r.stats
                            .get(&attndet_detectors::models::EvalKind::Bbox)
                            .and_then(|s| s.get(i))
                            .map(|v| (r.epoch as f64, *v))
                    })
                    .collect(),
            })
            .collect();
        let p = work_dir.join("ap.png");
        chart(&series, &p)?;
        written.push(p);
    }
    Ok(written)
}

/// Run `attndet plot`.
pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let files = plot_work_dir(&args.work_dir)?;
    if files.is_empty() {
        return Err(bad_input(format!(
            "{}: log.jsonl holds no training or evaluation line",
            args.work_dir.display()
        )));
    }
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
