//! Non-maximum suppression with exactly torchvision's kept set and order.
//!
//! torchvision's CPU kernel visits boxes in a *stable* descending sort of the scores (equal scores: lower index
//! first), keeps a box unless an already kept box overlaps it with IoU `> iou_threshold` (strictly; a NaN IoU
//! never suppresses), and computes the IoU in f32 as `inter / (area_i + area_j - inter)`. `batched_nms` does it
//! per class; for small inputs torchvision shifts each class by `class * (max_coordinate + 1)` before a
//! single NMS (CPU: up to 1,000 boxes), so the IoUs come from the shifted coordinates, and we reproduce that rounding too.
//! (We still run that case class by class: with non-negative coordinates the shifted classes cannot overlap, so
//! the result is the same; with negative coordinates torchvision's shift could let classes interact, we do not.)

use burn::prelude::*;

use super::torch_sort::torch_sort_descending;
use crate::structures::BlocksError;
use crate::structures::error::check_boxes;

/// Above this many boxes (4,000 coordinates) torchvision runs NMS class by class on the raw coordinates (CPU).
const TORCHVISION_VANILLA_ABOVE: usize = 1000;

/// Single-class NMS on host data; returns kept indices in descending score order.
///
/// # Shapes
/// - boxes: `N` xyxy rows, scores: `N`
pub fn nms_host(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    let order = stable_descending(scores, (0..scores.len()).collect());
    nms_ordered(boxes, &order, iou_threshold)
}

/// Indices sorted by descending score, ties by ascending index (torch's stable descending sort).
fn stable_descending(scores: &[f32], mut idx: Vec<usize>) -> Vec<usize> {
    // `sort_by` is stable; a NaN score sorts first, as in torch's descending sort.
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

fn nms_ordered(boxes: &[[f32; 4]], order: &[usize], iou_threshold: f32) -> Vec<usize> {
    let areas: Vec<f32> = order
        .iter()
        .map(|&i| (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
        .collect();
    let mut suppressed = vec![false; order.len()];
    let mut keep = Vec::new();
    for a in 0..order.len() {
        if suppressed[a] {
            continue;
        }
        let i = order[a];
        keep.push(i);
        let [ix1, iy1, ix2, iy2] = boxes[i];
        for b in a + 1..order.len() {
            if suppressed[b] {
                continue;
            }
            let [jx1, jy1, jx2, jy2] = boxes[order[b]];
            let w = (ix2.min(jx2) - ix1.max(jx1)).max(0.0);
            let h = (iy2.min(jy2) - iy1.max(jy1)).max(0.0);
            let inter = w * h;
            let iou = inter / (areas[a] + areas[b] - inter);
            if iou > iou_threshold {
                suppressed[b] = true;
            }
        }
    }
    keep
}

/// Class-aware NMS on host data (torchvision `batched_nms`): boxes of different classes never suppress each
/// other. Returns kept indices by descending score, ties ordered as torchvision orders them (lower index first up
/// to 1,000 boxes; above, the order of torch's unstable CPU sort, see `torch_sort`).
///
/// # Shapes
/// - boxes: `N` xyxy rows, scores: `N`, classes: `N`
pub fn batched_nms_host(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[i64],
    iou_threshold: f32,
) -> Vec<usize> {
    let n = boxes.len();
    if n == 0 {
        return Vec::new();
    }
    // torchvision's small-input path: IoUs are computed on class-shifted coordinates (f32 rounding matters).
    let shifted: Vec<[f32; 4]>;
    let coords = if n > TORCHVISION_VANILLA_ABOVE {
        boxes
    } else {
        let max_coordinate = boxes.iter().flatten().copied().fold(f32::NEG_INFINITY, f32::max);
        let step = max_coordinate + 1.0;
        shifted = boxes
            .iter()
            .zip(classes)
            .map(|(b, &c)| {
                let off = c as f32 * step;
                [b[0] + off, b[1] + off, b[2] + off, b[3] + off]
            })
            .collect();
        &shifted
    };
    let mut by_class: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, &c) in classes.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut keep: Vec<usize> = Vec::new();
    for (_, idx) in by_class {
        let order = stable_descending(scores, idx);
        keep.extend(nms_ordered(coords, &order, iou_threshold));
    }
    keep.sort_unstable();
    if n > TORCHVISION_VANILLA_ABOVE {
        // torchvision sorts the kept indices (ascending) by score with torch's unstable sort.
        let kept_scores: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
        torch_sort_descending(&kept_scores)
            .into_iter()
            .map(|j| keep[j])
            .collect()
    } else {
        stable_descending(scores, keep)
    }
}

/// Class-aware NMS on device tensors (torchvision `batched_nms`). Runs on the host: one read of the inputs,
/// one upload of the kept indices.
///
/// # Shapes
/// - boxes: `[N, 4]` xyxy, scores: `[N]`, classes: `[N]` (class index per box)
/// - output: `[K]` kept indices into the inputs, by descending score
///
/// # Errors
/// [`BlocksError::Shape`] when the lengths disagree or boxes are not `[N, 4]`.
pub fn batched_nms<B: Backend>(
    boxes: Tensor<B, 2>,
    scores: Tensor<B, 1>,
    classes: Tensor<B, 1, Int>,
    iou_threshold: f32,
) -> Result<Tensor<B, 1, Int>, BlocksError> {
    check_boxes("boxes", boxes.dims())?;
    let n = boxes.dims()[0];
    if scores.dims()[0] != n {
        return Err(BlocksError::shape(
            "scores",
            &scores.dims(),
            &format!("[{n}] (one per box)"),
        ));
    }
    if classes.dims()[0] != n {
        return Err(BlocksError::shape(
            "classes",
            &classes.dims(),
            &format!("[{n}] (one per box)"),
        ));
    }
    let device = boxes.device();
    let b: Vec<f32> = boxes.into_data().convert::<f32>().to_vec().unwrap_or_default();
    let s: Vec<f32> = scores.into_data().convert::<f32>().to_vec().unwrap_or_default();
    let c: Vec<i64> = classes.into_data().iter::<i64>().collect();
    let rows: Vec<[f32; 4]> = b.chunks_exact(4).map(|r| [r[0], r[1], r[2], r[3]]).collect();
    let keep: Vec<i64> = batched_nms_host(&rows, &s, &c, iou_threshold)
        .into_iter()
        .map(|i| i as i64)
        .collect();
    let k = keep.len();
    Ok(Tensor::from_data(
        TensorData::new(keep, [k]).convert::<B::IntElem>(),
        &device,
    ))
}
