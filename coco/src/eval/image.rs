//! Per (category, image) evaluation: pycocotools `computeIoU` and `evaluateImg` for every area range.

use std::cmp::Ordering;
use std::ops::Range;

use super::EvalParams;
use super::params::IouType;
use crate::dataset::CocoDataset;
use crate::error::CocoError;
use crate::mask::{self, Rle};
use crate::results::Detection;

/// Outcome of one detection at one IoU threshold (what `accumulate` needs of `dtMatches` / `dtIgnore`).
pub(super) const FALSE_POSITIVE: u8 = 0;
pub(super) const TRUE_POSITIVE: u8 = 1;
pub(super) const IGNORED: u8 = 2;

pub(super) struct Context<'a> {
    pub gt: &'a CocoDataset,
    pub dets: &'a [Detection],
    pub params: &'a EvalParams,
}

/// One (category, image) pair: its category and ranges into the grouped ground truth and detections.
pub(super) struct Pair {
    pub k: usize,
    pub gts: Range<usize>,
    pub dts: Range<usize>,
}

/// What `accumulate` needs of one pair: the kept detections' scores (sorted, descending), their outcome per
/// area range, detection and IoU threshold (`flags[(a * D + d) * T + t]`), and the number of non-ignored GTs
/// per area range.
pub(super) struct PairEval {
    pub scores: Vec<f64>,
    pub flags: Vec<u8>,
    pub npig: Vec<u32>,
}

pub(super) fn evaluate_pair(ctx: &Context, gt_idx: &[u32], dt_idx: &[u32]) -> Result<PairEval, CocoError> {
    let p = ctx.params;
    let anns = ctx.gt.annotations();
    let max_det = *p.max_dets.last().unwrap_or(&0);
    // Stable descending sort by score (numpy argsort(-score, kind='mergesort')), truncated to maxDets[-1].
    let mut dts: Vec<u32> = dt_idx.to_vec();
    dts.sort_by(|&a, &b| {
        ctx.dets[b as usize]
            .score
            .partial_cmp(&ctx.dets[a as usize].score)
            .unwrap_or(Ordering::Equal)
    });
    dts.truncate(max_det);
    let (nd, ng) = (dts.len(), gt_idx.len());
    let crowd: Vec<bool> = gt_idx.iter().map(|&g| anns[g as usize].iscrowd != 0).collect();

    // D x G IoU matrix, GT columns in their original order.
    let ious: Vec<f64> = if nd == 0 || ng == 0 {
        Vec::new()
    } else {
        match p.iou_type {
            IouType::Bbox => {
                let mut out = vec![0.0; nd * ng];
                for (g, &gi) in gt_idx.iter().enumerate() {
                    let b = &anns[gi as usize].bbox;
                    let gb = [b[0], b[1], b[2], b[3]];
                    let ga = gb[2] * gb[3];
                    for (d, &di) in dts.iter().enumerate() {
                        out[d * ng + g] = mask::rle_box_iou(&ctx.dets[di as usize].bbox, &gb, ga, crowd[g]);
                    }
                }
                out
            }
            IouType::Segm => {
                let g_rles = gt_idx
                    .iter()
                    .map(|&g| ctx.gt.ann_to_rle(&anns[g as usize]))
                    .collect::<Result<Vec<Rle>, _>>()?;
                let d_rles = dts
                    .iter()
                    .map(|&d| det_rle(ctx, d as usize))
                    .collect::<Result<Vec<Rle>, _>>()?;
                mask::iou(&d_rles, &g_rles, &crowd)
            }
        }
    };

    let nt = p.iou_thrs.len();
    let na = p.area_ranges.len();
    let mut flags = vec![FALSE_POSITIVE; na * nd * nt];
    let mut npig = vec![0u32; na];
    let mut gt_ig = vec![false; ng];
    let mut gt_order: Vec<usize> = Vec::with_capacity(ng);
    let mut gt_matched = vec![false; nt * ng];
    let mut dt_ig = vec![false; nt * nd];
    let mut dt_matched_nonzero = vec![false; nt * nd];
    for (a, rng) in p.area_ranges.iter().enumerate() {
        for (g, &gi) in gt_idx.iter().enumerate() {
            let ann = &anns[gi as usize];
            // `ignore` is iscrowd (a user's `ignore` field has no effect in pycocotools).
            gt_ig[g] = ann.iscrowd != 0 || ann.area < rng.lo || ann.area > rng.hi;
        }
        npig[a] = gt_ig.iter().filter(|&&x| !x).count() as u32;
        // Stable sort of the GTs: non-ignored first.
        gt_order.clear();
        gt_order.extend((0..ng).filter(|&g| !gt_ig[g]));
        gt_order.extend((0..ng).filter(|&g| gt_ig[g]));
        gt_matched.fill(false);
        dt_ig.fill(false);
        dt_matched_nonzero.fill(false);
        if !ious.is_empty() {
            for (t, &thr) in p.iou_thrs.iter().enumerate() {
                for d in 0..nd {
                    let mut best = thr.min(1.0 - 1e-10);
                    let mut m: Option<usize> = None;
                    for &g in &gt_order {
                        if gt_matched[t * ng + g] && !crowd[g] {
                            continue;
                        }
                        if let Some(mg) = m
                            && !gt_ig[mg]
                            && gt_ig[g]
                        {
                            break;
                        }
                        let iou = ious[d * ng + g];
                        if iou < best {
                            continue;
                        }
                        best = iou;
                        m = Some(g);
                    }
                    if let Some(mg) = m {
                        dt_ig[t * nd + d] = gt_ig[mg];
                        // A match is recorded as the GT's id: id 0 reads as "unmatched" later (pycocotools quirk).
                        dt_matched_nonzero[t * nd + d] = anns[gt_idx[mg] as usize].id != 0;
                        gt_matched[t * ng + mg] = true;
                    }
                }
            }
        }
        for (d, &di) in dts.iter().enumerate() {
            let area = ctx.dets[di as usize].area;
            let out_of_range = area < rng.lo || area > rng.hi;
            for t in 0..nt {
                let matched = dt_matched_nonzero[t * nd + d];
                let ignored = dt_ig[t * nd + d] || (!matched && out_of_range);
                flags[(a * nd + d) * nt + t] = if ignored {
                    IGNORED
                } else if matched {
                    TRUE_POSITIVE
                } else {
                    FALSE_POSITIVE
                };
            }
        }
    }
    let scores = dts.iter().map(|&d| ctx.dets[d as usize].score).collect();
    Ok(PairEval { scores, flags, npig })
}

/// A detection's mask at its image's size: its segmentation, or its box polygon when it has none.
fn det_rle(ctx: &Context, d: usize) -> Result<Rle, CocoError> {
    let det = &ctx.dets[d];
    let img = ctx
        .gt
        .image(det.image_id)
        .ok_or_else(|| CocoError::Eval(format!("image {} unknown", det.image_id)))?;
    match &det.segmentation {
        Some(seg) => seg
            .to_rle(img.height, img.width)
            .map_err(|e| CocoError::invalid("results", format!("[{d}].segmentation"), e.to_string())),
        None => Ok(mask::fr_bbox(&det.bbox, img.height, img.width)),
    }
}
