//! The COCO evaluator, bit-identical to pycocotools 2.0.11 `COCOeval` (evaluate, accumulate, summarize),
//! quirks included (see `docs` in the crate README and the spec it follows).
//!
//! Work is split into independent (category, image) pairs evaluated in parallel, then accumulated per
//! category in parallel.

mod accumulate;
mod image;
mod params;
mod summarize;

pub use params::{AreaRange, EvalParams, IouType, linspace};
pub use summarize::{STAT_NAMES, pairwise_mean};

use rayon::prelude::*;

use crate::dataset::CocoDataset;
use crate::error::CocoError;
use crate::results::Detection;

/// The result of an evaluation: pycocotools' `eval` arrays and the 12 summary stats.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The parameters used (max_dets sorted).
    pub params: EvalParams,
    /// Evaluated image ids, sorted.
    pub image_ids: Vec<u64>,
    /// Evaluated category ids, sorted (one entry, the first id, when categories are pooled).
    pub category_ids: Vec<u64>,
    /// Category names, parallel to `category_ids`.
    pub category_names: Vec<String>,
    /// Precision, shape `[T, R, K, A, M]` flattened C order; -1 where there is no ground truth.
    pub precision: Vec<f64>,
    /// Recall, shape `[T, K, A, M]` flattened C order; -1 where there is no ground truth.
    pub recall: Vec<f64>,
    /// The summary stats (12 for the standard parameters; see [`Evaluation::summary_lines`]).
    pub stats: Vec<f64>,
}

impl Evaluation {
    /// `[T, R, K, A, M]`.
    pub fn precision_shape(&self) -> [usize; 5] {
        let p = &self.params;
        [
            p.iou_thrs.len(),
            p.rec_thrs.len(),
            self.category_ids.len(),
            p.area_ranges.len(),
            p.max_dets.len(),
        ]
    }

    /// Precision at IoU threshold `t`, recall threshold `r`, category `k`, area range `a`, maxDets `m` (indices).
    pub fn precision_at(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> f64 {
        let [_, rn, kn, an, mn] = self.precision_shape();
        self.precision[(((t * rn + r) * kn + k) * an + a) * mn + m]
    }

    /// Recall at IoU threshold `t`, category `k`, area range `a`, maxDets `m` (indices).
    pub fn recall_at(&self, t: usize, k: usize, a: usize, m: usize) -> f64 {
        let [_, _, kn, an, mn] = self.precision_shape();
        self.recall[((t * kn + k) * an + a) * mn + m]
    }
}

/// Evaluate `dets` against `gt` (pycocotools `COCOeval(gt, loadRes(dets), iou_type)` then `evaluate()`,
/// `accumulate()`, `summarize()`). Detection ids are their positions plus one; detections of categories or
/// images not in `gt` are dropped. With no detections at all, AP is 0 wherever there is ground truth.
pub fn evaluate(gt: &CocoDataset, dets: &[Detection], params: &EvalParams) -> Result<Evaluation, CocoError> {
    let mut params = params.clone();
    params.max_dets.sort_unstable();
    if params.iou_thrs.is_empty()
        || params.rec_thrs.is_empty()
        || params.max_dets.is_empty()
        || params.area_ranges.is_empty()
    {
        return Err(CocoError::Eval(
            "thresholds, max_dets and area ranges must not be empty".into(),
        ));
    }
    // Like pycocotools: sorted, duplicates removed; ids missing from the GT simply have nothing to evaluate.
    let sorted_unique = |ids: &Option<Vec<u64>>, all: Vec<u64>| match ids {
        Some(ids) => {
            let mut v = ids.clone();
            v.sort_unstable();
            v.dedup();
            v
        }
        None => all,
    };
    let image_ids = sorted_unique(&params.image_ids, gt.sorted_image_ids());
    let all_cat_ids = sorted_unique(&params.category_ids, gt.sorted_category_ids());
    let (ni, nk) = (image_ids.len(), all_cat_ids.len());
    let img_pos: std::collections::HashMap<u64, usize> =
        image_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_pos: std::collections::HashMap<u64, usize> =
        all_cat_ids.iter().enumerate().map(|(k, &id)| (id, k)).collect();

    // Group by key i * K + k (stable, file order within a group): per image the groups are consecutive in
    // category order, which is also pycocotools' pooled order when categories are not used.
    let gt_groups = group(
        gt.annotations()
            .iter()
            .map(|a| Some((img_pos.get(&a.image_id)?, cat_pos.get(&a.category_id)?))),
        ni,
        nk,
    );
    let dt_groups = group(
        dets.iter()
            .map(|d| Some((img_pos.get(&d.image_id)?, cat_pos.get(&d.category_id)?))),
        ni,
        nk,
    );

    // The (category, image) pairs to evaluate, ordered by category then image.
    let (eval_k, pairs): (usize, Vec<image::Pair>) = if params.use_cats {
        let mut pairs = Vec::new();
        for k in 0..nk {
            for i in 0..ni {
                let key = i * nk + k;
                let g = gt_groups.range(key, key + 1);
                let d = dt_groups.range(key, key + 1);
                if !g.is_empty() || !d.is_empty() {
                    pairs.push(image::Pair { k, gts: g, dts: d });
                }
            }
        }
        (nk, pairs)
    } else {
        let mut pairs = Vec::new();
        for i in 0..ni {
            let g = gt_groups.range(i * nk, (i + 1) * nk);
            let d = dt_groups.range(i * nk, (i + 1) * nk);
            if !g.is_empty() || !d.is_empty() {
                pairs.push(image::Pair { k: 0, gts: g, dts: d });
            }
        }
        (usize::from(nk > 0), pairs)
    };

    let ctx = image::Context {
        gt,
        dets,
        params: &params,
    };
    let evaluated: Vec<image::PairEval> = pairs
        .par_iter()
        .map(|p| {
            image::evaluate_pair(
                &ctx,
                &gt_groups.order[p.gts.clone()],
                &dt_groups.order[p.dts.clone()],
            )
        })
        .collect::<Result<_, _>>()?;

    let (precision, recall) = accumulate::accumulate(&params, &pairs, &evaluated, eval_k);
    let category_ids: Vec<u64> = if params.use_cats {
        all_cat_ids
    } else {
        all_cat_ids.into_iter().take(1).collect()
    };
    let category_names = category_ids
        .iter()
        .map(|id| gt.category(*id).map(|c| c.name.clone()).unwrap_or_default())
        .collect();
    let mut ev = Evaluation {
        params,
        image_ids,
        category_ids,
        category_names,
        precision,
        recall,
        stats: Vec::new(),
    };
    ev.stats = summarize::stats(&ev);
    Ok(ev)
}

/// Items grouped by a key, stable: `order[start[key]..start[key + 1]]` are the item indices of `key`.
struct Groups {
    order: Vec<u32>,
    start: Vec<u32>,
}

impl Groups {
    fn range(&self, from_key: usize, to_key: usize) -> std::ops::Range<usize> {
        self.start[from_key] as usize..self.start[to_key] as usize
    }
}

fn group<'a>(
    keys: impl Iterator<Item = Option<(&'a usize, &'a usize)>> + Clone,
    ni: usize,
    nk: usize,
) -> Groups {
    let mut start = vec![0u32; ni * nk + 1];
    for (i, k) in keys.clone().flatten() {
        start[i * nk + k + 1] += 1;
    }
    for j in 1..start.len() {
        start[j] += start[j - 1];
    }
    let mut fill = start.clone();
    let mut order = vec![0u32; *start.last().unwrap_or(&0) as usize];
    for (idx, key) in keys.enumerate() {
        if let Some((i, k)) = key {
            let slot = &mut fill[i * nk + k];
            order[*slot as usize] = idx as u32;
            *slot += 1;
        }
    }
    Groups { order, start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::CocoJson;

    fn gt(s: &str) -> CocoDataset {
        CocoDataset::from_json(serde_json::from_str::<CocoJson>(s).unwrap(), "t.json").unwrap()
    }

    #[test]
    fn empty_inputs_give_minus_one() {
        let ev = evaluate(
            &gt(r#"{"images": [], "categories": []}"#),
            &[],
            &EvalParams::new(IouType::Bbox),
        )
        .unwrap();
        assert_eq!(ev.stats, vec![-1.0; 12]);
    }

    #[test]
    fn one_perfect_detection() {
        let g = gt(
            r#"{"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}]}"#,
        );
        let dets = [Detection::from_bbox(1, 1, [10.0, 10.0, 50.0, 50.0], 0.9)];
        let ev = evaluate(&g, &dets, &EvalParams::new(IouType::Bbox)).unwrap();
        // precision = 1 / (1 + eps) = 0.9999999999999998 at every recall threshold (spec 6.3); medium object,
        // so small and large have no GT (-1); recall is exactly 1. numpy: np.mean([p] * 1010) == p but
        // np.mean([p] * 101) == 0.9999999999999999 (pairwise rounding), hence AP50/AP75 differ from AP.
        let p = 1.0 / (1.0 + 2.220446049250313e-16);
        let p101 = 0.9999999999999999;
        assert_eq!(
            ev.stats,
            vec![p, p101, p101, -1.0, p, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0]
        );
        // No detections: AP 0 where there is GT.
        let ev = evaluate(&g, &[], &EvalParams::new(IouType::Bbox)).unwrap();
        assert_eq!(ev.stats[0], 0.0);
        assert_eq!(ev.per_category_ap()[0].2, 0.0);
    }
}
