//! `attndet analyze errors`: the COCO error breakdown of mmdetection's
//! `tools/analysis_tools/coco_error_analysis.py` (after the COCO detection challenge's analysis figures),
//! computed with our pycocotools-identical evaluator.
//!
//! For each category k, seven precision-recall curves (maxDets 100, pycocotools' recall thresholds), each
//! one more forgiving than the last, so the gap between two consecutive curves is the precision lost to one
//! kind of error:
//! - `C75`, `C50`: the normal evaluation at IoU 0.75 and 0.5;
//! - `Loc`: IoU 0.1 (localisation errors forgiven);
//! - `Sim`: IoU 0.1, only k's detections, the ground truth of the other categories of k's supercategory turned
//!   into crowd (ignored) objects of k, so confusing similar classes costs nothing (a category without a
//!   supercategory has no similar classes: Sim = Loc for it);
//! - `Oth`: the same with every other category turned into crowd of k (any class confusion forgiven);
//! - `BG`: 1 wherever Oth's precision is above 0 (false positives on background forgiven);
//! - `FN`: 1 (what is left are the objects never detected).
//!
//! Precision -1 (no ground truth at that area range) counts as 0, as in the reference; the overall figure
//! averages the curves over categories, those without ground truth included (as 0).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_coco::eval::AreaRange;
use attndet_coco::{CocoDataset, CocoError, Detection, EvalParams, IouType, evaluate};
use clap::Args;
use rayon::prelude::*;
use serde_json::{Map, Value, json};

use super::GroundTruthArgs;
use crate::errors::bad_input;
use crate::eval::IouTypeArg;
use crate::plot::{Figure, Panel, Series, Style, render, save};

/// The seven curves, most strict first.
pub const TYPES: [&str; 7] = ["C75", "C50", "Loc", "Sim", "Oth", "BG", "FN"];

/// Fill colours of the curves' bands: light and mid grey for C75 and C50 (the reference leaves them white),
/// then the reference's blue, red, green, purple and orange.
const COLOURS: [[u8; 3]; 7] = [
    [214, 214, 214],
    [160, 160, 160],
    [79, 130, 189],
    [191, 79, 77],
    [92, 230, 97],
    [128, 99, 163],
    [255, 153, 0],
];

/// Arguments of `attndet analyze errors`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  attndet test CONFIG work_dirs/x/best --out results.json\n  \
attndet analyze errors CONFIG results.json --out-dir work_dirs/x/errors\n  \
attndet analyze errors CONFIG segm.json --iou-type segm --ann instances_val2017.json --json"
)]
pub struct ErrorsArgs {
    #[command(flatten)]
    pub gt: GroundTruthArgs,
    /// Compare boxes or masks.
    #[arg(long, value_enum, default_value = "bbox")]
    pub iou_type: IouTypeArg,
    /// Where the figures go: OUT_DIR/IOU_TYPE/CATEGORY.png (four panels: all, small, medium, large) and
    /// OUT_DIR/IOU_TYPE/allclass.png [default: the results file's directory + `/errors`].
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Custom area ranges: three increasing areas A B C give all = [0, C], small = [0, A], medium = [A, B],
    /// large = [B, C] (the reference's `--areas`) [default: pycocotools' 32², 96², 1e5²].
    #[arg(long, num_args = 3, value_names = ["A", "B", "C"])]
    pub areas: Option<Vec<f64>>,
    /// Draw only the overall figure, not one per category.
    #[arg(long)]
    pub overall_only: bool,
    /// Print one JSON object instead of the table: {"iou_type", "types", "areas", "overall": {TYPE: [one
    /// number per area]}, "overall_curve": {TYPE: [101 precisions, area all]}, "per_category": [{"id",
    /// "name", TYPE: [...]}], "figures": [paths]}.
    #[arg(long)]
    pub json: bool,
}

/// The seven precision curves of every category and area range.
#[derive(Debug, Clone)]
pub struct Breakdown {
    /// Recall thresholds (101).
    pub rec_thrs: Vec<f64>,
    /// Area range labels.
    pub areas: Vec<String>,
    /// Category ids, sorted.
    pub category_ids: Vec<u64>,
    /// Category names, parallel to `category_ids`.
    pub category_names: Vec<String>,
    /// Precision, shape `[7, R, K, A]` flattened C order, -1 already replaced by 0.
    pub precision: Vec<f64>,
}

impl Breakdown {
    fn index(&self, t: usize, r: usize, k: usize, a: usize) -> usize {
        let (rn, kn, an) = (self.rec_thrs.len(), self.category_ids.len(), self.areas.len());
        ((t * rn + r) * kn + k) * an + a
    }

    /// Curve `t` of category `k` at area range `a` (R values).
    pub fn curve(&self, t: usize, k: usize, a: usize) -> Vec<f64> {
        (0..self.rec_thrs.len())
            .map(|r| self.precision[self.index(t, r, k, a)])
            .collect()
    }

    /// Curve `t` averaged over the categories at area range `a` (R values; zeros without categories).
    pub fn overall_curve(&self, t: usize, a: usize) -> Vec<f64> {
        let kn = self.category_ids.len();
        (0..self.rec_thrs.len())
            .map(|r| {
                let s: f64 = (0..kn).map(|k| self.precision[self.index(t, r, k, a)]).sum();
                if kn == 0 { 0.0 } else { s / kn as f64 }
            })
            .collect()
    }

    /// The area under curve `t` (mean over recall thresholds) of category `k`, or of all categories.
    pub fn ap(&self, t: usize, k: Option<usize>, a: usize) -> f64 {
        let c = match k {
            Some(k) => self.curve(t, k, a),
            None => self.overall_curve(t, a),
        };
        c.iter().sum::<f64>() / c.len().max(1) as f64
    }
}

/// pycocotools' area ranges, or the reference's custom ones from three areas `[a, b, c]`.
fn area_ranges(areas: Option<&[f64]>) -> anyhow::Result<Vec<AreaRange>> {
    let default = EvalParams::new(IouType::Bbox).area_ranges;
    let Some(v) = areas else {
        return Ok(default);
    };
    let [a, b, c] = [v[0], v[1], v[2]];
    if !(a.is_finite() && c.is_finite() && 0.0 <= a && a <= b && b <= c) {
        return Err(bad_input(format!(
            "--areas {a} {b} {c}: expected three finite, non-negative, increasing areas"
        )));
    }
    let r = |label: &str, lo: f64, hi: f64| AreaRange {
        label: label.into(),
        lo,
        hi,
    };
    Ok(vec![
        r("all", 0.0, c),
        r("small", 0.0, a),
        r("medium", a, b),
        r("large", b, c),
    ])
}

/// The ground truth with every annotation of a category in `turn` made a crowd object of `cat_id` (crowd
/// objects are ignored: matching one costs nothing and gains nothing).
fn relabelled(gt: &CocoDataset, cat_id: u64, turn: &HashSet<u64>) -> Result<CocoDataset, CocoError> {
    let mut json = gt.json().clone();
    for ann in &mut json.annotations {
        if turn.contains(&ann.category_id) {
            ann.iscrowd = 1;
            ann.category_id = cat_id;
        }
    }
    CocoDataset::from_json(json, gt.source())
}

/// Compute the seven curves of every category of `gt` for `dets`.
pub fn breakdown(
    gt: &CocoDataset,
    dets: &[Detection],
    iou_type: IouType,
    area_ranges: Vec<AreaRange>,
) -> Result<Breakdown, CocoError> {
    let base_params = EvalParams {
        iou_thrs: vec![0.75, 0.5, 0.1],
        max_dets: vec![100],
        area_ranges,
        ..EvalParams::new(iou_type)
    };
    let base = evaluate(gt, dets, &base_params)?;
    let (rn, kn, an) = (
        base_params.rec_thrs.len(),
        base.category_ids.len(),
        base_params.area_ranges.len(),
    );
    let supercategory = |id: u64| gt.category(id).and_then(|c| c.supercategory.clone());
    // Sim and Oth of each category: IoU 0.1 on its own detections against the relabelled ground truth.
    let forgiving: Vec<[Vec<f64>; 2]> = base
        .category_ids
        .par_iter()
        .map(|&cid| {
            let own: Vec<Detection> = dets.iter().filter(|d| d.category_id == cid).cloned().collect();
            let others: Vec<u64> = base.category_ids.iter().copied().filter(|&c| c != cid).collect();
            let sup = supercategory(cid);
            let similar: HashSet<u64> = others
                .iter()
                .copied()
                .filter(|&c| sup.is_some() && supercategory(c) == sup)
                .collect();
            let params = EvalParams {
                iou_thrs: vec![0.1],
                category_ids: Some(vec![cid]),
                ..base_params.clone()
            };
            let run = |turn: &HashSet<u64>| -> Result<Vec<f64>, CocoError> {
                let ev = evaluate(&relabelled(gt, cid, turn)?, &own, &params)?;
                Ok((0..rn)
                    .flat_map(|r| (0..an).map(move |a| (r, a)))
                    .map(|(r, a)| ev.precision_at(0, r, 0, a, 0))
                    .collect())
            };
            Ok([run(&similar)?, run(&others.into_iter().collect())?])
        })
        .collect::<Result<_, CocoError>>()?;
    let mut out = Breakdown {
        rec_thrs: base_params.rec_thrs.clone(),
        areas: base_params.area_ranges.iter().map(|a| a.label.clone()).collect(),
        category_ids: base.category_ids.clone(),
        category_names: base.category_names.clone(),
        precision: vec![0.0; 7 * rn * kn * an],
    };
    for r in 0..rn {
        for (k, [sim, oth]) in forgiving.iter().enumerate() {
            for a in 0..an {
                let mut v = [0.0; 7];
                for (t, x) in v.iter_mut().take(3).enumerate() {
                    *x = base.precision_at(t, r, k, a, 0);
                }
                v[3] = sim[r * an + a];
                v[4] = oth[r * an + a];
                for x in &mut v[..5] {
                    if *x == -1.0 {
                        *x = 0.0;
                    }
                }
                v[5] = if v[4] > 0.0 { 1.0 } else { 0.0 };
                v[6] = 1.0;
                for (t, x) in v.into_iter().enumerate() {
                    let i = out.index(t, r, k, a);
                    out.precision[i] = x;
                }
            }
        }
    }
    Ok(out)
}

/// Panel names of the area ranges, as in the reference's figure titles.
fn area_title(label: &str) -> &str {
    if label == "all" { "allarea" } else { label }
}

/// One figure: a panel per area range, the seven curves stacked from FN (top) down to C75, each band filled
/// and labelled `[area under the curve] TYPE`.
fn figure(b: &Breakdown, k: Option<usize>, iou_type: IouType, name: &str) -> Figure {
    let panels = (0..b.areas.len())
        .map(|a| {
            let mut series = Vec::new();
            // painter's order: the highest curve first, each lower band drawn over it
            for t in (0..TYPES.len()).rev() {
                let curve = match k {
                    Some(k) => b.curve(t, k, a),
                    None => b.overall_curve(t, a),
                };
                series.push(Series {
                    name: format!("[{:.3}] {}", b.ap(t, k, a), TYPES[t]),
                    colour: COLOURS[t],
                    style: Style::Area,
                    points: b.rec_thrs.iter().copied().zip(curve).collect(),
                });
            }
            // the reference's thin black line along each curve
            let lines: Vec<Series> = series
                .iter()
                .map(|s| Series {
                    name: String::new(),
                    colour: [0, 0, 0],
                    style: Style::Faint,
                    points: s.points.clone(),
                })
                .collect();
            series.extend(lines);
            Panel {
                title: format!("{iou_type}-{name}-{}", area_title(&b.areas[a])),
                x_label: "recall".into(),
                y_label: "precision".into(),
                series,
                x_integer: false,
                y_from_zero: true,
                legend_outside: true,
            }
        })
        .collect();
    Figure {
        title: format!("COCO error analysis ({iou_type}): {name}"),
        panels,
        cols: 2,
        panel_w: 560,
        panel_h: 380,
    }
}

/// A category name made safe as a file name.
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "category".into() } else { s }
}

/// Draw the overall figure and (unless `overall_only`) one per category into `dir`; returns the paths.
pub fn draw_figures(
    b: &Breakdown,
    iou_type: IouType,
    dir: &Path,
    overall_only: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut jobs: Vec<(Option<usize>, String)> = vec![(None, "allclass".into())];
    if !overall_only {
        let mut used = HashSet::from(["allclass".to_string()]);
        for (k, name) in b.category_names.iter().enumerate() {
            let mut stem = file_stem(name);
            if !used.insert(stem.clone()) {
                stem = format!("{stem}_{}", b.category_ids[k]);
                used.insert(stem.clone());
            }
            jobs.push((Some(k), stem));
        }
    }
    jobs.par_iter()
        .map(|(k, stem)| {
            let name = k.map_or("allclass", |k| b.category_names[k].as_str());
            let (img, _) = render(&figure(b, *k, iou_type, name));
            let path = dir.join(format!("{stem}.png"));
            save(&img, &path)?;
            Ok(path)
        })
        .collect()
}

/// The JSON document of `--json`.
fn to_json(b: &Breakdown, iou_type: IouType, figures: &[PathBuf]) -> Value {
    let per_area = |k: Option<usize>| {
        let mut m = Map::new();
        for (t, name) in TYPES.iter().enumerate() {
            m.insert(
                (*name).into(),
                json!((0..b.areas.len()).map(|a| b.ap(t, k, a)).collect::<Vec<_>>()),
            );
        }
        m
    };
    let mut curves = Map::new();
    for (t, name) in TYPES.iter().enumerate() {
        curves.insert((*name).into(), json!(b.overall_curve(t, 0)));
    }
    let per_category: Vec<Value> = (0..b.category_ids.len())
        .map(|k| {
            let mut m = per_area(Some(k));
            m.insert("id".into(), json!(b.category_ids[k]));
            m.insert("name".into(), json!(b.category_names[k]));
            Value::Object(m)
        })
        .collect();
    json!({
        "iou_type": iou_type.to_string(),
        "types": TYPES,
        "areas": b.areas,
        "overall": per_area(None),
        "overall_curve": curves,
        "per_category": per_category,
        "figures": figures,
    })
}

/// Run `attndet analyze errors`.
pub fn run(args: &ErrorsArgs) -> anyhow::Result<()> {
    let ranges = area_ranges(args.areas.as_deref())?;
    let (gt, dets) = args.gt.load()?;
    let iou_type = match args.iou_type {
        IouTypeArg::Bbox => IouType::Bbox,
        IouTypeArg::Segm => IouType::Segm,
    };
    let started = std::time::Instant::now();
    let b = breakdown(&gt, &dets, iou_type, ranges).context("evaluating")?;
    let out_dir = match &args.out_dir {
        Some(d) => d.clone(),
        None => args
            .gt
            .results
            .parent()
            .map(|p| p.join("errors"))
            .unwrap_or_else(|| PathBuf::from("errors")),
    };
    let figures = draw_figures(
        &b,
        iou_type,
        &out_dir.join(iou_type.to_string()),
        args.overall_only,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&to_json(&b, iou_type, &figures))?);
        return Ok(());
    }
    eprintln!(
        "{} categories, {} images, {} detections: analysed in {:.2}s",
        b.category_ids.len(),
        gt.images().len(),
        dets.len(),
        started.elapsed().as_secs_f64()
    );
    let w = b.category_names.iter().map(|n| n.len()).max().unwrap_or(8).max(8);
    println!(
        "{iou_type} error breakdown, area under each curve (all areas, maxDets 100); each column forgives one more \
kind of error"
    );
    let header: Vec<String> = TYPES.iter().map(|t| format!("{t:>6}")).collect();
    println!("{:<w$}  {}", "category", header.join(" "));
    let row = |k: Option<usize>| -> String {
        TYPES
            .iter()
            .enumerate()
            .map(|(t, _)| format!("{:>6.3}", b.ap(t, k, 0)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (k, name) in b.category_names.iter().enumerate() {
        println!("{name:<w$}  {}", row(Some(k)));
    }
    println!("{:<w$}  {}", "overall", row(None));
    println!(
        "{} figure{} in {}",
        figures.len(),
        if figures.len() == 1 { "" } else { "s" },
        out_dir.join(iou_type.to_string()).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use attndet_coco::CocoJson;

    fn dataset() -> CocoDataset {
        let json: CocoJson = serde_json::from_value(json!({
            "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
            "categories": [{"id": 1, "name": "cat", "supercategory": "animal"},
                           {"id": 2, "name": "dog", "supercategory": "animal"},
                           {"id": 3, "name": "car", "supercategory": "vehicle"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
                {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 50, 40, 40], "area": 1600, "iscrowd": 0}
            ]
        }))
        .unwrap();
        CocoDataset::from_json(json, "test.json").unwrap()
    }

    #[test]
    fn each_curve_forgives_one_kind_of_error() {
        let gt = dataset();
        let dets = vec![
            // cat: a detection on the dog (a similar class), scored above its correct one, and a detection on
            // the car (another supercategory), scored highest
            Detection::from_bbox(1, 1, [0.0, 50.0, 40.0, 40.0], 0.95),
            Detection::from_bbox(1, 1, [50.0, 50.0, 40.0, 40.0], 0.9),
            Detection::from_bbox(1, 1, [0.0, 0.0, 40.0, 40.0], 0.8),
        ];
        let b = breakdown(&gt, &dets, IouType::Bbox, area_ranges(None).unwrap()).unwrap();
        let cat = 0;
        // C75 .. Loc: the cat is found third: precision 1/3 up to recall 1 (interpolated), AP 1/3
        for (t, name) in TYPES.iter().enumerate().take(3) {
            assert!((b.ap(t, Some(cat), 0) - 1.0 / 3.0).abs() < 1e-12, "{name}");
        }
        // Sim: the dog becomes crowd of cat, so the detection on it is ignored: precision 1/2
        assert!((b.ap(3, Some(cat), 0) - 0.5).abs() < 1e-12);
        // Oth: the car too: precision 1
        assert!((b.ap(4, Some(cat), 0) - 1.0).abs() < 1e-12);
        assert_eq!(b.ap(5, Some(cat), 0), 1.0);
        // dog and car have no detection: 0 everywhere below FN; medium objects only, so small and large are 0
        assert_eq!(b.ap(4, Some(1), 0), 0.0);
        assert_eq!(b.ap(6, Some(2), 0), 1.0);
        assert_eq!(b.ap(0, Some(cat), 1), 0.0);
        assert!((b.ap(0, Some(cat), 2) - 1.0 / 3.0).abs() < 1e-12);
        // overall: the mean over the three categories
        assert!((b.ap(4, None, 0) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn no_detections_leave_only_false_negatives() {
        let b = breakdown(&dataset(), &[], IouType::Bbox, area_ranges(None).unwrap()).unwrap();
        for (t, name) in TYPES.iter().enumerate().take(6) {
            assert_eq!(b.ap(t, None, 0), 0.0, "{name}");
        }
        assert_eq!(b.ap(6, None, 0), 1.0);
        assert!(area_ranges(Some(&[10.0, 5.0, 1.0])).is_err());
        let custom = area_ranges(Some(&[16.0, 64.0, 256.0])).unwrap();
        assert_eq!(
            (custom[0].lo, custom[0].hi, custom[2].lo, custom[2].hi),
            (0.0, 256.0, 16.0, 64.0)
        );
    }
}
