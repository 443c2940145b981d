//! `attndet plot WORK_DIR`: charts of a training run from its `log.jsonl`, as PNG images in the work dir:
//!
//! - `loss.png`: one panel for the total loss and one per loss term, against the global iteration;
//! - `lr.png`: the learning rate against the global iteration;
//! - `ap.png`: every logged evaluation against the epoch (AP and AP50 of each IoU type, AR of proposals).
//!
//! Each chart has a title naming the work dir, axes with labels and round-valued ticks, a light grid and a
//! legend, with text set in the font embedded in `attndet-coco` (so it draws the same on a bare machine).
//! Long runs show the logged values faintly and a moving mean on top.
//!
//! Evaluation lines are read tolerantly: the 12 COCO stats may come as `"bbox_stats": [...]` or keyed by
//! IoU type as `"stats": {"bbox": [...], "segm": [...], "proposal": [...]}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_coco::draw::{draw_text, text_size};
use attndet_detectors::engine::log::IterRecord;
use clap::Args;
use image::{Rgb, RgbImage};

use crate::errors::bad_input;

/// Arguments of `attndet plot`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  attndet plot work_dirs/r50          # loss.png, lr.png, ap.png in the work dir\n  \
attndet plot work_dirs/demo"
)]
pub struct PlotArgs {
    /// A training work dir (holding `log.jsonl`).
    pub work_dir: PathBuf,
}

/// The matplotlib "tab10" colours.
const COLOURS: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

const WHITE: [u8; 3] = [255, 255, 255];
const TEXT: [u8; 3] = [30, 30, 30];
const SPINE: [u8; 3] = [70, 70, 70];
const GRID: [u8; 3] = [228, 228, 228];

const TITLE_PX: f32 = 20.0;
const PANEL_TITLE_PX: f32 = 15.0;
const LABEL_PX: f32 = 14.0;
const TICK_PX: f32 = 12.0;
const LEGEND_PX: f32 = 12.0;
/// Length of the line sample in front of each legend entry.
const LEGEND_SAMPLE: i32 = 24;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Style {
    /// A solid line 2 px wide.
    Line,
    /// A thin line in a faded colour (the raw values under a moving mean).
    Faint,
    /// A solid line with a dot at each point (few points, e.g. one per epoch).
    LineDots,
    /// The area between the curve and the bottom of the plot filled, opaque (stacked areas are drawn from
    /// the highest curve down, each covering the previous one below it).
    Area,
}

/// One named series of (x, y) points; non-finite values break the line.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) colour: [u8; 3],
    pub(crate) style: Style,
    pub(crate) points: Vec<(f64, f64)>,
}

/// One axes box: its series, labels and how its ranges are chosen.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub(crate) series: Vec<Series>,
    /// x ticks at whole numbers only (epochs).
    pub(crate) x_integer: bool,
    /// The y range includes 0.
    pub(crate) y_from_zero: bool,
    /// The legend goes right of the plot area instead of into a corner of it (many series).
    pub(crate) legend_outside: bool,
}

/// A figure: a title over a grid of panels.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) title: String,
    pub(crate) panels: Vec<Panel>,
    pub(crate) cols: usize,
    pub(crate) panel_w: u32,
    pub(crate) panel_h: u32,
}

/// Round tick positions covering `[lo, hi]`: the axis limits (the data range widened by a small margin),
/// the step (1, 2, 2.5 or 5 times a power of ten, giving about `target` ticks) and the tick values.
fn nice_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> (f64, f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
        (lo.min(hi), lo.max(hi))
    } else {
        (0.0, 1.0)
    };
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = if integer || lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= pad;
        hi += pad;
    } else {
        let pad = (hi - lo) * 0.04;
        lo -= pad;
        hi += pad;
    }
    // the step of 1, 2, 2.5 or 5 times a power of ten giving the tick count nearest `target` (ties: fewer)
    let count = |step: f64| ((hi / step).floor() - (lo / step).ceil() + 1.0).max(0.0);
    let mag = 10f64.powf(((hi - lo) / target.max(1) as f64).log10().floor());
    let mut step = [0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 20.0]
        .into_iter()
        .map(|m| m * mag)
        .filter(|s| !integer || (*s >= 1.0 - 1e-9 && (s - s.round()).abs() < 1e-9))
        .min_by(|a, b| {
            let (da, db) = (
                (count(*a) - target as f64).abs(),
                (count(*b) - target as f64).abs(),
            );
            da.total_cmp(&db).then(b.total_cmp(a))
        })
        .unwrap_or(1.0);
    if integer {
        step = step.max(1.0).round();
    }
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (lo, hi, step, ticks)
}

/// A tick label: as few decimals as the step needs; scientific notation for very small or large values.
fn format_tick(v: f64, step: f64, max_abs: f64) -> String {
    if v.abs() < step * 1e-6 {
        return "0".into();
    }
    if !(1e-2..1e6).contains(&max_abs) {
        return format!("{v:.1e}");
    }
    let decimals = (0..=6)
        .find(|d| {
            let s = step * 10f64.powi(*d);
            (s - s.round()).abs() < 1e-6 * s.max(1.0)
        })
        .unwrap_or(6) as usize;
    format!("{v:.decimals$}")
}

fn blend(px: &mut Rgb<u8>, colour: [u8; 3], alpha: f32) {
    let a = alpha.clamp(0.0, 1.0);
    for (v, &c) in px.0.iter_mut().zip(&colour) {
        *v = (*v as f32 * (1.0 - a) + c as f32 * a).round() as u8;
    }
}

fn fill_rect(img: &mut RgbImage, x0: i32, y0: i32, x1: i32, y1: i32, colour: [u8; 3], alpha: f32) {
    let (w, h) = (img.width() as i32, img.height() as i32);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            blend(img.get_pixel_mut(x as u32, y as u32), colour, alpha);
        }
    }
}

fn hline(img: &mut RgbImage, x0: i32, x1: i32, y: i32, colour: [u8; 3]) {
    fill_rect(img, x0, y, x1 + 1, y + 1, colour, 1.0);
}

fn vline(img: &mut RgbImage, x: i32, y0: i32, y1: i32, colour: [u8; 3]) {
    fill_rect(img, x, y0, x + 1, y1 + 1, colour, 1.0);
}

/// Text rotated a quarter turn counter-clockwise (read bottom to top), centred on (cx, cy); dark text on a
/// light background (blended by darkening).
pub(crate) fn draw_text_vertical(img: &mut RgbImage, cx: i32, cy: i32, px: f32, colour: [u8; 3], text: &str) {
    let (w, h) = text_size(px, text);
    if w == 0 {
        return;
    }
    let mut tmp = RgbImage::from_pixel(w + 2, h, Rgb(WHITE));
    draw_text(&mut tmp, 1, 0, px, colour, text);
    let rot = image::imageops::rotate270(&tmp);
    let (x0, y0) = (cx - rot.width() as i32 / 2, cy - rot.height() as i32 / 2);
    for (x, y, p) in rot.enumerate_pixels() {
        let (ix, iy) = (x0 + x as i32, y0 + y as i32);
        if ix >= 0 && iy >= 0 && (ix as u32) < img.width() && (iy as u32) < img.height() {
            let q = img.get_pixel_mut(ix as u32, iy as u32);
            for (a, b) in q.0.iter_mut().zip(p.0) {
                *a = (*a as u16 * b as u16 / 255) as u8;
            }
        }
    }
}

/// Anti-aliased drawing inside a plot area: a coverage buffer per series, so overlapping segments of one
/// line do not darken each other, and an ink mask of everything drawn (to place the legend).
struct Canvas {
    x0: i32,
    y0: i32,
    w: usize,
    h: usize,
    ink: Vec<bool>,
}

impl Canvas {
    fn new(x0: i32, y0: i32, w: u32, h: u32) -> Self {
        Self {
            x0,
            y0,
            w: w as usize,
            h: h as usize,
            ink: vec![false; w as usize * h as usize],
        }
    }

    /// Draw one polyline (and dots) of `s`, with points already in image pixels.
    fn draw(&mut self, img: &mut RgbImage, pts: &[Option<(f32, f32)>], colour: [u8; 3], style: Style) {
        let mut cover = vec![0f32; self.w * self.h];
        let (radius, dot): (f32, f32) = match style {
            Style::Line => (1.0, 0.0),
            Style::Faint => (0.6, 0.0),
            Style::LineDots => (1.0, 3.2),
            Style::Area => (0.5, 0.0),
        };
        let mut stamp = |a: (f32, f32), b: (f32, f32), r: f32| {
            let (minx, maxx) = (a.0.min(b.0) - r - 1.0, a.0.max(b.0) + r + 1.0);
            let (miny, maxy) = (a.1.min(b.1) - r - 1.0, a.1.max(b.1) + r + 1.0);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len2 = dx * dx + dy * dy;
            for y in
                (miny.floor() as i32).max(self.y0)..=(maxy.ceil() as i32).min(self.y0 + self.h as i32 - 1)
            {
                for x in
                    (minx.floor() as i32).max(self.x0)..=(maxx.ceil() as i32).min(self.x0 + self.w as i32 - 1)
                {
                    let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                    let t = if len2 > 0.0 {
                        (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let (qx, qy) = (a.0 + t * dx - px, a.1 + t * dy - py);
                    let c = (r + 0.5 - (qx * qx + qy * qy).sqrt()).clamp(0.0, 1.0);
                    let i = (y - self.y0) as usize * self.w + (x - self.x0) as usize;
                    if c > cover[i] {
                        cover[i] = c;
                    }
                }
            }
        };
        for pair in pts.windows(2) {
            if let (Some(a), Some(b)) = (pair[0], pair[1]) {
                stamp(a, b, radius);
            }
        }
        let finite: Vec<(f32, f32)> = pts.iter().flatten().copied().collect();
        if dot > 0.0 || finite.len() == 1 {
            for &p in &finite {
                stamp(p, p, dot.max(2.5));
            }
        }
        let (colour, opacity) = match style {
            Style::Faint => (colour, 0.35),
            _ => (colour, 1.0),
        };
        for (i, &c) in cover.iter().enumerate() {
            if c > 0.0 {
                let (x, y) = (self.x0 + (i % self.w) as i32, self.y0 + (i / self.w) as i32);
                blend(img.get_pixel_mut(x as u32, y as u32), colour, c * opacity);
                self.ink[i] = true;
            }
        }
    }

    /// Drawn pixels inside a rectangle of the image.
    fn ink_in(&self, x0: i32, y0: i32, x1: i32, y1: i32) -> usize {
        let mut n = 0;
        for y in y0.max(self.y0)..y1.min(self.y0 + self.h as i32) {
            for x in x0.max(self.x0)..x1.min(self.x0 + self.w as i32) {
                n += self.ink[(y - self.y0) as usize * self.w + (x - self.x0) as usize] as usize;
            }
        }
        n
    }
}

/// The range of the finite values of `vals`.
fn range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    vals.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((a, b)) => Some((a.min(v), b.max(v))),
    })
}

/// Where a panel's plot area lies in the image and the data ranges it spans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Axes {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
    x_lo: f64,
    x_hi: f64,
    y_lo: f64,
    y_hi: f64,
}

impl Axes {
    /// Image position of the data point (x, y).
    fn pixel(&self, x: f64, y: f64) -> (f32, f32) {
        (
            self.x0 as f32 + ((x - self.x_lo) / (self.x_hi - self.x_lo)) as f32 * (self.x1 - self.x0) as f32,
            self.y1 as f32 - ((y - self.y_lo) / (self.y_hi - self.y_lo)) as f32 * (self.y1 - self.y0) as f32,
        )
    }
}

/// The y axis of a panel: its limits, tick step, ticks and their labels.
fn y_axis(panel: &Panel) -> (f64, f64, Vec<f64>, Vec<String>) {
    let yr = range(panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1))).unwrap_or((0.0, 1.0));
    let yr = if panel.y_from_zero {
        (yr.0.min(0.0), yr.1.max(0.0))
    } else {
        yr
    };
    let (mut y_lo, y_hi, y_step, y_ticks) = nice_ticks(yr.0, yr.1, 6, false);
    if panel.y_from_zero && yr.0 >= 0.0 {
        y_lo = 0.0;
    }
    let y_max_abs = y_lo.abs().max(y_hi.abs());
    let y_labels = y_ticks
        .iter()
        .map(|&v| format_tick(v, y_step, y_max_abs))
        .collect();
    (y_lo, y_hi, y_ticks, y_labels)
}

/// Pixels left of a panel's plot area: the y label, the tick labels and the tick marks.
fn left_margin(panel: &Panel) -> i32 {
    let (_, label_h) = text_size(LABEL_PX, "Ag");
    let y_tick_w = y_axis(panel)
        .3
        .iter()
        .map(|l| text_size(TICK_PX, l).0)
        .max()
        .unwrap_or(0) as i32;
    8 + label_h as i32 + 8 + y_tick_w + 4 + 5
}

/// Draw `panel` into the rectangle (ox, oy, pw, ph) of `img`, its plot area `left` pixels from the
/// rectangle's left side (the same for panels above each other); returns its plot area.
fn draw_panel(img: &mut RgbImage, panel: &Panel, (ox, oy, pw, ph): (i32, i32, u32, u32), left: i32) -> Axes {
    let xr = range(panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.0))).unwrap_or((0.0, 1.0));
    let (x_lo, x_hi, x_step, x_ticks) = nice_ticks(xr.0, xr.1, 8, panel.x_integer);
    let (y_lo, y_hi, y_ticks, y_labels) = y_axis(panel);
    let x_max_abs = x_lo.abs().max(x_hi.abs());
    let x_labels: Vec<String> = x_ticks
        .iter()
        .map(|&v| format_tick(v, x_step, x_max_abs))
        .collect();
    let (_, tick_h) = text_size(TICK_PX, "0");
    let (_, label_h) = text_size(LABEL_PX, "Ag");
    let (_, ptitle_h) = text_size(PANEL_TITLE_PX, "Ag");
    // plot area
    let top = 6 + ptitle_h as i32 + 8;
    let bottom = 5 + 3 + tick_h as i32 + 6 + label_h as i32 + 8;
    let right = if panel.legend_outside {
        legend_size(&panel.series).0 + 12 + 16
    } else {
        24
    };
    let (ax0, ay0) = (ox + left, oy + top);
    let (aw, ah) = (
        (pw as i32 - left - right).max(10),
        (ph as i32 - top - bottom).max(10),
    );
    let (ax1, ay1) = (ax0 + aw, ay0 + ah);
    let axes = Axes {
        x0: ax0,
        y0: ay0,
        x1: ax1,
        y1: ay1,
        x_lo,
        x_hi,
        y_lo,
        y_hi,
    };
    let to_px = |x: f64| axes.pixel(x, y_lo).0;
    let to_py = |y: f64| axes.pixel(x_lo, y).1;
    // panel title, centred over the plot area
    let tw = text_size(PANEL_TITLE_PX, &panel.title).0 as i32;
    draw_text(
        img,
        ax0 + (aw - tw) / 2,
        oy + 6,
        PANEL_TITLE_PX,
        TEXT,
        &panel.title,
    );
    // grid and ticks
    for (&v, l) in y_ticks.iter().zip(&y_labels) {
        let y = to_py(v).round() as i32;
        if y < ay0 || y > ay1 {
            continue;
        }
        hline(img, ax0, ax1, y, GRID);
        hline(img, ax0 - 5, ax0 - 1, y, SPINE);
        let w = text_size(TICK_PX, l).0 as i32;
        draw_text(img, ax0 - 5 - 4 - w, y - tick_h as i32 / 2 - 1, TICK_PX, TEXT, l);
    }
    for (&v, l) in x_ticks.iter().zip(&x_labels) {
        let x = to_px(v).round() as i32;
        if x < ax0 || x > ax1 {
            continue;
        }
        vline(img, x, ay0, ay1, GRID);
        vline(img, x, ay1 + 1, ay1 + 5, SPINE);
        let w = text_size(TICK_PX, l).0 as i32;
        draw_text(img, x - w / 2, ay1 + 5 + 3, TICK_PX, TEXT, l);
    }
    // curves
    let mut canvas = Canvas::new(ax0 + 1, ay0 + 1, (aw - 1) as u32, (ah - 1) as u32);
    for s in panel.series.iter().filter(|s| s.style == Style::Area) {
        fill_area(img, &mut canvas, &axes, s);
    }
    for s in &panel.series {
        let pts: Vec<Option<(f32, f32)>> = s
            .points
            .iter()
            .map(|&(x, y)| (x.is_finite() && y.is_finite()).then(|| (to_px(x), to_py(y))))
            .collect();
        canvas.draw(img, &pts, s.colour, s.style);
    }
    // axes box
    hline(img, ax0, ax1, ay0, SPINE);
    hline(img, ax0, ax1, ay1, SPINE);
    vline(img, ax0, ay0, ay1, SPINE);
    vline(img, ax1, ay0, ay1, SPINE);
    // axis labels
    let xw = text_size(LABEL_PX, &panel.x_label).0 as i32;
    draw_text(
        img,
        ax0 + (aw - xw) / 2,
        ay1 + 5 + 3 + tick_h as i32 + 6,
        LABEL_PX,
        TEXT,
        &panel.x_label,
    );
    draw_text_vertical(
        img,
        ox + 8 + label_h as i32 / 2,
        ay0 + ah / 2,
        LABEL_PX,
        TEXT,
        &panel.y_label,
    );
    let outside = panel.legend_outside.then_some((ax1 + 12, ay0));
    draw_legend(img, &canvas, &panel.series, (ax0, ay0, ax1, ay1), outside);
    axes
}

/// Fill the plot area under the curve of `s` (x sorted; linear between points, nothing outside its x range)
/// down to the bottom of the plot area in its colour, marking the pixels as drawn.
fn fill_area(img: &mut RgbImage, canvas: &mut Canvas, axes: &Axes, s: &Series) {
    let pts: Vec<(f64, f64)> = s
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return;
    };
    let (cx0, cx1) = (canvas.x0, canvas.x0 + canvas.w as i32);
    for x in cx0..cx1 {
        let xd = axes.x_lo
            + (x as f64 + 0.5 - axes.x0 as f64) / (axes.x1 - axes.x0) as f64 * (axes.x_hi - axes.x_lo);
        if xd < first.0 || xd > last.0 {
            continue;
        }
        let j = pts.partition_point(|p| p.0 < xd).min(pts.len() - 1);
        let (a, b) = (pts[j.saturating_sub(1)], pts[j]);
        let yd = if b.0 > a.0 {
            a.1 + (b.1 - a.1) * (xd - a.0) / (b.0 - a.0)
        } else {
            b.1
        };
        let top = axes.pixel(xd, yd).1.round() as i32;
        for y in top.max(canvas.y0)..canvas.y0 + canvas.h as i32 {
            img.put_pixel(x as u32, y as u32, Rgb(s.colour));
            canvas.ink[(y - canvas.y0) as usize * canvas.w + (x - canvas.x0) as usize] = true;
        }
    }
}

/// Width and height of the legend box of `series` (those with a name).
fn legend_size(series: &[Series]) -> (i32, i32) {
    let named: Vec<&Series> = series.iter().filter(|s| !s.name.is_empty()).collect();
    let (_, line_h) = text_size(LEGEND_PX, "Ag");
    let text_w = named
        .iter()
        .map(|s| text_size(LEGEND_PX, &s.name).0)
        .max()
        .unwrap_or(0) as i32;
    (
        8 + LEGEND_SAMPLE + 6 + text_w + 8,
        6 + (line_h as i32 + 3) * named.len() as i32 + 3,
    )
}

/// A legend box at `at`, or else in the corner of the plot area that covers the fewest drawn pixels.
fn draw_legend(
    img: &mut RgbImage,
    canvas: &Canvas,
    series: &[Series],
    area: (i32, i32, i32, i32),
    at: Option<(i32, i32)>,
) {
    let named: Vec<&Series> = series.iter().filter(|s| !s.name.is_empty()).collect();
    if named.is_empty() {
        return;
    }
    let (_, line_h) = text_size(LEGEND_PX, "Ag");
    let row = line_h as i32 + 3;
    let sample = LEGEND_SAMPLE;
    let (bw, bh) = legend_size(series);
    let (ax0, ay0, ax1, ay1) = area;
    let m = 8;
    let corners = [
        (ax1 - m - bw, ay0 + m),
        (ax0 + m, ay0 + m),
        (ax1 - m - bw, ay1 - m - bh),
        (ax0 + m, ay1 - m - bh),
    ];
    let (bx, by) = at.unwrap_or_else(|| {
        corners
            .iter()
            .copied()
            .min_by_key(|&(x, y)| canvas.ink_in(x, y, x + bw, y + bh))
            .unwrap_or(corners[0])
    });
    fill_rect(img, bx, by, bx + bw, by + bh, WHITE, 0.88);
    let border = [200, 200, 200];
    hline(img, bx, bx + bw, by, border);
    hline(img, bx, bx + bw, by + bh, border);
    vline(img, bx, by, by + bh, border);
    vline(img, bx + bw, by, by + bh, border);
    let mut sample_canvas = Canvas::new(bx + 1, by + 1, (bw - 1) as u32, (bh - 1) as u32);
    for (k, s) in named.iter().enumerate() {
        let y = by + 6 + row * k as i32;
        let cy = y as f32 + line_h as f32 / 2.0;
        let (x0, x1) = ((bx + 8) as f32, (bx + 8 + sample) as f32);
        let pts = [Some((x0, cy)), Some(((x0 + x1) / 2.0, cy)), Some((x1, cy))];
        let pts: &[Option<(f32, f32)>] = if s.style == Style::LineDots {
            &pts
        } else {
            &[pts[0], pts[2]]
        };
        if s.style == Style::Area {
            let top = y + 2;
            fill_rect(
                img,
                bx + 8,
                top,
                bx + 8 + sample,
                top + line_h as i32 - 4,
                s.colour,
                1.0,
            );
            let dark = [60, 60, 60];
            hline(img, bx + 8, bx + 8 + sample, top, dark);
            hline(img, bx + 8, bx + 8 + sample, top + line_h as i32 - 4, dark);
            vline(img, bx + 8, top, top + line_h as i32 - 4, dark);
            vline(img, bx + 8 + sample, top, top + line_h as i32 - 4, dark);
        } else {
            sample_canvas.draw(img, pts, s.colour, s.style);
        }
        draw_text(img, bx + 8 + sample + 6, y, LEGEND_PX, TEXT, &s.name);
    }
}

/// Render a figure: the title centred on top, then the panels row by row; returns the image and the plot
/// area of each panel.
pub(crate) fn render(fig: &Figure) -> (RgbImage, Vec<Axes>) {
    let cols = fig.cols.max(1);
    let rows = fig.panels.len().div_ceil(cols).max(1);
    let (_, title_h) = text_size(TITLE_PX, "Ag");
    let head = 10 + title_h + 6;
    let (w, h) = (fig.panel_w * cols as u32, head + fig.panel_h * rows as u32 + 6);
    let mut img = RgbImage::from_pixel(w, h, Rgb(WHITE));
    let title = fit_text(&fig.title, TITLE_PX, w - 20);
    let tw = text_size(TITLE_PX, &title).0;
    draw_text(
        &mut img,
        (w.saturating_sub(tw) / 2) as i32,
        10,
        TITLE_PX,
        TEXT,
        &title,
    );
    // plot areas of one column start at the same x
    let lefts: Vec<i32> = (0..cols)
        .map(|c| {
            fig.panels
                .iter()
                .skip(c)
                .step_by(cols)
                .map(left_margin)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut axes = Vec::new();
    for (k, p) in fig.panels.iter().enumerate() {
        let (r, c) = (k / cols, k % cols);
        let rect = (
            (c as u32 * fig.panel_w) as i32,
            (head + r as u32 * fig.panel_h) as i32,
            fig.panel_w,
            fig.panel_h,
        );
        axes.push(draw_panel(&mut img, p, rect, lefts[c]));
    }
    (img, axes)
}

/// `text`, shortened from the left with "..." until it fits `max_w` pixels.
fn fit_text(text: &str, px: f32, max_w: u32) -> String {
    if text_size(px, text).0 <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    (1..chars.len())
        .map(|k| format!("...{}", chars[k..].iter().collect::<String>()))
        .find(|t| text_size(px, t).0 <= max_w)
        .unwrap_or_default()
}

pub(crate) fn save(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp.png");
    img.save(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Centred moving mean over `window` points (shorter at the ends); non-finite values are left out.
fn moving_mean(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    (0..points.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            let vals: Vec<f64> = points[a..b]
                .iter()
                .map(|p| p.1)
                .filter(|v| v.is_finite())
                .collect();
            let mean = if vals.is_empty() {
                f64::NAN
            } else {
                vals.iter().sum::<f64>() / vals.len() as f64
            };
            (points[i].0, mean)
        })
        .collect()
}

/// The series of one logged curve: the values as a line, or, for many points, the values faintly and a
/// moving mean over them.
fn curve(name: &str, colour: [u8; 3], points: Vec<(f64, f64)>) -> Vec<Series> {
    if points.len() < 60 {
        return vec![Series {
            name: name.to_string(),
            colour,
            style: Style::Line,
            points,
        }];
    }
    let window = (points.len() / 40).max(5) | 1;
    let mean = moving_mean(&points, window);
    vec![
        Series {
            name: format!("{name} (logged)"),
            colour,
            style: Style::Faint,
            points,
        },
        Series {
            name: format!("{name} (mean of {window})"),
            colour,
            style: Style::Line,
            points: mean,
        },
    ]
}

/// The run's name for titles: the work dir as given (its last components when long).
fn run_name(work_dir: &Path) -> String {
    let s = work_dir.display().to_string();
    let s = s.trim_end_matches('/');
    if s.is_empty() || s == "." {
        std::env::current_dir()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_else(|| ".".into())
    } else {
        s.to_string()
    }
}

/// The evaluations of a log: per IoU type, (epoch, 12 stats), in log order.
type Evals = BTreeMap<String, Vec<(f64, Vec<f64>)>>;

/// Parse `log.jsonl`: the training records and the evaluations (both `bbox_stats` and `stats` maps).
fn parse_log(text: &str) -> (Vec<IterRecord>, Evals) {
    let mut train = Vec::new();
    let mut evals = Evals::new();
    let nums = |v: &serde_json::Value| -> Option<Vec<f64>> {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
    };
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v.get("mode").and_then(|m| m.as_str()) {
            Some("train") => {
                if let Ok(r) = serde_json::from_value::<IterRecord>(v) {
                    train.push(r);
                }
            }
            Some("val") => {
                let Some(epoch) = v.get("epoch").and_then(|e| e.as_f64()) else {
                    continue;
                };
                if let Some(s) = v.get("bbox_stats").and_then(nums) {
                    evals.entry("bbox".into()).or_default().push((epoch, s));
                }
                if let Some(map) = v.get("stats").and_then(|s| s.as_object()) {
                    for (kind, s) in map {
                        if let Some(s) = nums(s) {
                            evals.entry(kind.clone()).or_default().push((epoch, s));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (train, evals)
}

/// The curves plotted of an IoU type's stats: (label, index into the 12 stats).
fn eval_curves(kind: &str) -> Vec<(String, usize)> {
    if kind == "proposal" {
        // proposal stats are [AR@100, AR@300, AR@1000, AR_s@1000, AR_m@1000, AR_l@1000]
        vec![
            ("proposal AR@100".into(), 0),
            ("proposal AR@300".into(), 1),
            ("proposal AR@1000".into(), 2),
        ]
    } else {
        vec![(format!("{kind} AP"), 0), (format!("{kind} AP50"), 1)]
    }
}

fn loss_figure(name: &str, train: &[IterRecord]) -> Figure {
    let mut term_names: Vec<String> = Vec::new();
    for r in train {
        for (n, _) in &r.terms {
            if !term_names.contains(n) {
                term_names.push(n.clone());
            }
        }
    }
    let total: Vec<(f64, f64)> = train.iter().map(|r| (r.global_iter as f64, r.loss)).collect();
    let mut panels = vec![Panel {
        title: "total loss".into(),
        x_label: "iteration".into(),
        y_label: "loss".into(),
        series: curve("loss", COLOURS[0], total),
        x_integer: true,
        y_from_zero: false,
        legend_outside: false,
    }];
    for (k, n) in term_names.iter().enumerate() {
        let points: Vec<(f64, f64)> = train
            .iter()
            .map(|r| {
                let v = r.terms.iter().find(|t| &t.0 == n).map_or(f64::NAN, |t| t.1);
                (r.global_iter as f64, v)
            })
            .collect();
        panels.push(Panel {
            title: n.clone(),
            x_label: "iteration".into(),
            y_label: n.clone(),
            series: curve(n, COLOURS[(k + 1) % COLOURS.len()], points),
            x_integer: true,
            y_from_zero: false,
            legend_outside: false,
        });
    }
    let cols = if panels.len() <= 3 { 1 } else { 2 };
    Figure {
        title: format!("{name}: training loss"),
        panels,
        cols,
        panel_w: if cols == 1 { 900 } else { 640 },
        panel_h: 300,
    }
}

fn lr_figure(name: &str, train: &[IterRecord]) -> Figure {
    Figure {
        title: format!("{name}: learning rate"),
        panels: vec![Panel {
            title: "learning rate schedule".into(),
            x_label: "iteration".into(),
            y_label: "learning rate".into(),
            series: vec![Series {
                name: "lr".into(),
                colour: COLOURS[0],
                style: Style::Line,
                points: train.iter().map(|r| (r.global_iter as f64, r.lr)).collect(),
            }],
            x_integer: true,
            y_from_zero: true,
            legend_outside: false,
        }],
        cols: 1,
        panel_w: 900,
        panel_h: 360,
    }
}

fn ap_figure(name: &str, evals: &Evals) -> Figure {
    // the usual types first, in this order, then any other
    let mut kinds: Vec<&String> = evals.keys().collect();
    let rank = |k: &str| {
        ["bbox", "segm", "proposal"]
            .iter()
            .position(|&x| x == k)
            .unwrap_or(3)
    };
    kinds.sort_by_key(|k| (rank(k), k.to_string()));
    let mut series = Vec::new();
    for kind in kinds {
        for (label, idx) in eval_curves(kind) {
            let points: Vec<(f64, f64)> = evals[kind]
                .iter()
                .map(|(e, s)| {
                    let v = s.get(idx).copied().unwrap_or(f64::NAN);
                    // -1: no ground truth for this stat
                    (*e, if v < 0.0 { f64::NAN } else { v })
                })
                .collect();
            series.push(Series {
                name: label,
                colour: COLOURS[series.len() % COLOURS.len()],
                style: Style::LineDots,
                points,
            });
        }
    }
    let n_series = series.len();
    Figure {
        title: format!("{name}: evaluation"),
        panels: vec![Panel {
            title: "COCO metrics on the val split".into(),
            x_label: "epoch".into(),
            y_label: "AP / AR".into(),
            series,
            x_integer: true,
            y_from_zero: true,
            legend_outside: n_series > 3,
        }],
        cols: 1,
        panel_w: 900,
        panel_h: 420,
    }
}

/// Draw `loss.png` (total loss and each term per iteration), `lr.png` (learning rate per iteration) and
/// `ap.png` (the evaluations per epoch) in `work_dir`, each when the log has lines for it.
/// Returns the files written.
pub fn plot_work_dir(work_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let log = work_dir.join("log.jsonl");
    let text = std::fs::read_to_string(&log).map_err(|e| bad_input(format!("{}: {e}", log.display())))?;
    let (train, evals) = parse_log(&text);
    let name = run_name(work_dir);
    let mut figures = Vec::new();
    if !train.is_empty() {
        figures.push(("loss.png", loss_figure(&name, &train)));
        figures.push(("lr.png", lr_figure(&name, &train)));
    }
    if !evals.is_empty() {
        figures.push(("ap.png", ap_figure(&name, &evals)));
    }
    let mut written = Vec::new();
    for (file, fig) in figures {
        let p = work_dir.join(file);
        save(&render(&fig).0, &p)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dark(p: &Rgb<u8>) -> bool {
        p.0.iter().all(|&c| c < 110)
    }

    fn count(img: &RgbImage, x0: i32, y0: i32, x1: i32, y1: i32, f: impl Fn(&Rgb<u8>) -> bool) -> usize {
        let mut n = 0;
        for y in y0.max(0)..y1.min(img.height() as i32) {
            for x in x0.max(0)..x1.min(img.width() as i32) {
                n += f(img.get_pixel(x as u32, y as u32)) as usize;
            }
        }
        n
    }

    fn near(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
        a.iter()
            .zip(&b)
            .all(|(&x, &y)| (x as i32 - y as i32).abs() <= tol)
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        for (lo, hi, integer) in [
            (0.0, 1.0, false),
            (0.37, 2.91, false),
            (1.0, 90000.0, true),
            (1e-4, 2e-2, false),
            (3.0, 3.0, true),
            (0.5, 0.5, false),
            (1.0, 7.0, true),
        ] {
            let (a, b, step, ticks) = nice_ticks(lo, hi, 5, integer);
            assert!(a <= lo && b >= hi && a < b, "{lo}..{hi}: limits {a}..{b}");
            let mag = 10f64.powf(step.log10().floor());
            let m = step / mag;
            assert!(
                [1.0, 2.0, 2.5, 5.0, 10.0].iter().any(|x| (x - m).abs() < 1e-9),
                "{lo}..{hi}: step {step}"
            );
            assert!(!integer || step.fract() == 0.0);
            assert!((2..=11).contains(&ticks.len()), "{lo}..{hi}: {ticks:?}");
            for t in &ticks {
                assert!(*t >= a - 1e-12 && *t <= b + 1e-12);
                assert!(((t / step).round() - t / step).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn tick_labels_use_the_decimals_the_step_needs() {
        assert_eq!(format_tick(0.5, 0.25, 1.0), "0.50");
        assert_eq!(format_tick(0.75, 0.25, 1.0), "0.75");
        assert_eq!(format_tick(2.0, 0.5, 3.0), "2.0");
        assert_eq!(format_tick(20000.0, 10000.0, 90000.0), "20000");
        assert_eq!(format_tick(1e-16, 0.2, 1.0), "0");
        assert_eq!(format_tick(2e-4, 1e-4, 5e-4), "2.0e-4");
        assert_eq!(format_tick(0.01, 0.005, 0.02), "0.010");
    }

    #[test]
    fn moving_mean_is_centred_and_skips_missing_values() {
        let pts = vec![(1.0, 1.0), (2.0, 2.0), (3.0, f64::NAN), (4.0, 4.0), (5.0, 5.0)];
        let m = moving_mean(&pts, 3);
        assert_eq!(m[0], (1.0, 1.5));
        assert_eq!(m[1], (2.0, 1.5));
        assert_eq!(m[2], (3.0, 3.0));
        assert_eq!(m[4], (5.0, 4.5));
    }

    /// A log of 2 epochs x 10 iterations: loss peaks (4.0) at iteration 3; lr warms up then is constant;
    /// an evaluation after each epoch in the current format and one in the keyed format.
    fn sample_log() -> String {
        let mut lines = Vec::new();
        for g in 1..=20usize {
            let cls = if g == 3 { 3.0 } else { 1.0 - g as f64 * 0.02 };
            let bbox = 0.5 + 0.2 * (g as f64).sin().abs();
            let lr = if g <= 5 { 0.002 * g as f64 } else { 0.01 };
            lines.push(
                serde_json::json!({
                    "mode": "train", "epoch": (g - 1) / 10 + 1, "iter": (g - 1) % 10 + 1, "iters_per_epoch": 10,
                    "global_iter": g, "lr": lr, "loss": cls + bbox,
                    "terms": [["loss_cls", cls], ["loss_bbox", bbox]],
                    "grad_norm": null, "time": 0.1, "data_time": 0.01, "memory_mb": 100.0
                })
                .to_string(),
            );
        }
        let stats = |ap: f64| -> Vec<f64> { (0..12).map(|i| ap + 0.01 * i as f64).collect() };
        lines.push(serde_json::json!({"mode": "val", "epoch": 1, "bbox_stats": stats(0.1)}).to_string());
        lines.push("{\"mode\": \"val\", \"epo".into()); // cut line
        lines.push(
            serde_json::json!({"mode": "val", "epoch": 2, "stats": {"bbox": stats(0.2), "segm": stats(0.15)}})
                .to_string(),
        );
        lines.join("\n") + "\n"
    }

    #[test]
    fn log_parses_both_evaluation_formats() {
        let (train, evals) = parse_log(&sample_log());
        assert_eq!(train.len(), 20);
        assert_eq!(evals["bbox"].iter().map(|e| e.0).collect::<Vec<_>>(), [1.0, 2.0]);
        assert_eq!(evals["segm"].len(), 1);
        assert!((evals["segm"][0].1[1] - 0.16).abs() < 1e-12);
        let fig = ap_figure("w", &evals);
        let names: Vec<&str> = fig.panels[0].series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["bbox AP", "bbox AP50", "segm AP", "segm AP50"]);
        assert_eq!(eval_curves("proposal")[2], ("proposal AR@1000".to_string(), 2));
    }

    #[test]
    fn charts_have_text_legend_and_curves_where_the_data_says() {
        let dir = std::env::temp_dir().join(format!("attndet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("log.jsonl"), sample_log()).unwrap();
        let written = plot_work_dir(&dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["loss.png", "lr.png", "ap.png"]);
        let (train, evals) = parse_log(&sample_log());
        let name = run_name(&dir);

        // loss.png: 3 panels (total, loss_cls, loss_bbox)
        let img = image::open(dir.join("loss.png")).unwrap().to_rgb8();
        let fig = loss_figure(&name, &train);
        let (again, axes) = render(&fig);
        assert_eq!(img, again);
        assert_eq!(axes.len(), 3);
        // title band above the first panel, tick labels left of and below each plot area, axis labels
        assert!(
            count(&img, 0, 0, img.width() as i32, 32, is_dark) > 150,
            "no title"
        );
        for a in &axes {
            assert!(
                count(&img, 0, a.y0, a.x0 - 6, a.y1, is_dark) > 60,
                "no y tick labels"
            );
            assert!(
                count(&img, a.x0, a.y1 + 6, a.x1, a.y1 + 24, is_dark) > 60,
                "no x tick labels"
            );
            assert!(
                count(&img, a.x0, a.y1 + 24, a.x1, a.y1 + 48, is_dark) > 30,
                "no x label"
            );
            assert!(count(&img, 0, a.y0, 24, a.y1, is_dark) > 30, "no y label");
        }
        // the peak (iteration 3) lies near the top of the total and cls panels, in the series' colour
        for (k, colour) in [(0, COLOURS[0]), (1, COLOURS[1])] {
            let a = axes[k];
            let peak = fig.panels[k].series[0].points[2];
            let (px, py) = a.pixel(peak.0, peak.1);
            assert!(
                py - (a.y0 as f32) < 0.1 * (a.y1 - a.y0) as f32,
                "peak at {py}, area from {}",
                a.y0
            );
            let hit = count(
                &img,
                px as i32 - 2,
                py as i32 - 2,
                px as i32 + 3,
                py as i32 + 3,
                |p| near(p.0, colour, 40),
            );
            assert!(hit > 0, "no curve pixel at the peak of panel {k}");
            // the lower half at that x is empty of the curve
            let mid = (a.y0 + a.y1) / 2;
            assert_eq!(
                count(&img, px as i32 - 1, mid, px as i32 + 2, a.y1 - 1, |p| near(
                    p.0, colour, 40
                )),
                0
            );
            // the legend holds the series colour and text: somewhere in a corner of the area
            let legend_colour = [
                (a.x0, a.y0),
                (a.x1 - 200, a.y0),
                (a.x0, a.y1 - 60),
                (a.x1 - 200, a.y1 - 60),
            ]
            .iter()
            .any(|&(x, y)| {
                count(&img, x, y, x + 200, y + 60, |p| near(p.0, colour, 10)) > 20
                    && count(&img, x, y, x + 200, y + 60, is_dark) > 30
            });
            assert!(legend_colour, "no legend in panel {k}");
        }

        // lr.png: the constant lr after warm-up lies on the top part of the plot, the first point low
        let img = image::open(dir.join("lr.png")).unwrap().to_rgb8();
        let (_, axes) = render(&lr_figure(&name, &train));
        let a = axes[0];
        let (x1, y1) = a.pixel(1.0, 0.002);
        let (x20, y20) = a.pixel(20.0, 0.01);
        assert!(y20 < y1 - 0.6 * (a.y1 - a.y0) as f32);
        for (x, y) in [(x1, y1), (x20, y20)] {
            let hit = count(
                &img,
                x as i32 - 2,
                y as i32 - 2,
                x as i32 + 3,
                y as i32 + 3,
                |p| near(p.0, COLOURS[0], 40),
            );
            assert!(hit > 0, "no lr curve at ({x}, {y})");
        }
        assert!(count(&img, 0, 0, img.width() as i32, 32, is_dark) > 150);

        // ap.png: 4 series with dots at epochs 1 and 2 (segm only at 2)
        let img = image::open(dir.join("ap.png")).unwrap().to_rgb8();
        let fig = ap_figure(&name, &evals);
        let (_, axes) = render(&fig);
        let a = axes[0];
        for (s, (epoch, v)) in [(0, (2.0, 0.2)), (1, (1.0, 0.11)), (2, (2.0, 0.15))] {
            let (x, y) = a.pixel(epoch, v);
            let c = fig.panels[0].series[s].colour;
            let hit = count(
                &img,
                x as i32 - 1,
                y as i32 - 1,
                x as i32 + 2,
                y as i32 + 2,
                |p| near(p.0, c, 30),
            );
            assert!(hit > 0, "no dot of series {s} at epoch {epoch}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn long_runs_get_a_moving_mean_and_titles_are_shortened_to_fit() {
        let pts: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, (i % 7) as f64)).collect();
        let s = curve("loss", COLOURS[0], pts);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].style, Style::Faint);
        assert!(s[1].name.starts_with("loss (mean of "));
        let long = "a/".repeat(200);
        let fitted = fit_text(&long, TITLE_PX, 300);
        assert!(fitted.starts_with("...") && text_size(TITLE_PX, &fitted).0 <= 300);
    }
}
