//! Overlaps between boxes, following mmdetection's `bbox_overlaps` (union and enclosing area clamped to at
//! least `eps = 1e-6`, so degenerate boxes give 0 instead of NaN).

use burn::prelude::*;

use crate::structures::BlocksError;
use crate::structures::error::check_boxes;

/// The smallest denominator (mmdetection's default `eps`).
pub const OVERLAP_EPS: f32 = 1e-6;

/// What an overlap divides the intersection by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapMode {
    /// Intersection over union.
    Iou,
    /// Intersection over the area of the first set's box ("intersection over foreground").
    Iof,
}

fn split<B: Backend>(t: Tensor<B, 2>) -> [Tensor<B, 2>; 4] {
    let n = t.dims()[0];
    let c = |i: usize| t.clone().slice(s![.., i..i + 1]).reshape([n, 1]);
    [c(0), c(1), c(2), c(3)]
}

/// Pairwise overlaps between two box sets.
///
/// # Shapes
/// - a: `[N, 4]`, b: `[M, 4]` xyxy
/// - output: `[N, M]`
///
/// # Errors
/// [`BlocksError::Shape`] when an input is not `[_, 4]`.
pub fn pairwise_overlaps<B: Backend>(
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    mode: OverlapMode,
) -> Result<Tensor<B, 2>, BlocksError> {
    check_boxes("a", a.dims())?;
    check_boxes("b", b.dims())?;
    let (n, m) = (a.dims()[0], b.dims()[0]);
    let device = a.device();
    if n == 0 || m == 0 {
        return Ok(Tensor::zeros([n, m], &device));
    }
    // Both sides expanded to `[N, M]` before `min_pair`/`max_pair` (a `mask_where` inside): with a `[N, 1]`
    // side against `[N, M]` burn 0.21's wgpu backend gave zero overlaps for most rows, where the CPU
    // backend broadcasts (found by `tests/gpu_path.rs::retinanet_assignment_on_wgpu_equals_the_cpu`).
    let [ax1, ay1, ax2, ay2] = split(a).map(|t| t.expand([n, m]));
    let [bx1, by1, bx2, by2] = split(b).map(|t| t.reshape([1, m]).expand([n, m]));
    let (inter, union) = inter_union(
        ax1.clone(),
        ay1.clone(),
        ax2.clone(),
        ay2.clone(),
        bx1,
        by1,
        bx2,
        by2,
    );
    let denom = match mode {
        OverlapMode::Iou => union,
        OverlapMode::Iof => ((ax2 - ax1) * (ay2 - ay1)).clamp_min(OVERLAP_EPS),
    };
    Ok(inter / denom)
}

/// Pairwise generalized IoU, `iou - (enclose - union) / enclose`, in `[-1, 1]`.
///
/// # Shapes
/// - a: `[N, 4]`, b: `[M, 4]` xyxy
/// - output: `[N, M]`
///
/// # Errors
/// [`BlocksError::Shape`] when an input is not `[_, 4]`.
pub fn pairwise_giou<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Result<Tensor<B, 2>, BlocksError> {
    check_boxes("a", a.dims())?;
    check_boxes("b", b.dims())?;
    let (n, m) = (a.dims()[0], b.dims()[0]);
    let device = a.device();
    if n == 0 || m == 0 {
        return Ok(Tensor::zeros([n, m], &device));
    }
    // both sides `[N, M]`, as in `pairwise_overlaps`
    let [ax1, ay1, ax2, ay2] = split(a).map(|t| t.expand([n, m]));
    let [bx1, by1, bx2, by2] = split(b).map(|t| t.reshape([1, m]).expand([n, m]));
    Ok(giou_parts(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2))
}

/// GIoU of corresponding rows (`is_aligned=True`), used by the GIoU loss.
///
/// # Shapes
/// - a, b: `[N, 4]` xyxy
/// - output: `[N]`
///
/// # Errors
/// [`BlocksError::Shape`] when the inputs are not both `[N, 4]`.
pub fn aligned_giou<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Result<Tensor<B, 1>, BlocksError> {
    check_aligned(&a, &b)?;
    let n = a.dims()[0];
    if n == 0 {
        return Ok(Tensor::zeros([0], &a.device()));
    }
    let [ax1, ay1, ax2, ay2] = split(a);
    let [bx1, by1, bx2, by2] = split(b);
    Ok(giou_parts(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2).reshape([n]))
}

/// IoU of corresponding rows.
///
/// # Shapes
/// - a, b: `[N, 4]` xyxy
/// - output: `[N]`
///
/// # Errors
/// [`BlocksError::Shape`] when the inputs are not both `[N, 4]`.
pub fn aligned_iou<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Result<Tensor<B, 1>, BlocksError> {
    check_aligned(&a, &b)?;
    let n = a.dims()[0];
    if n == 0 {
        return Ok(Tensor::zeros([0], &a.device()));
    }
    let [ax1, ay1, ax2, ay2] = split(a);
    let [bx1, by1, bx2, by2] = split(b);
    let (inter, union) = inter_union(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2);
    Ok((inter / union).reshape([n]))
}

fn check_aligned<B: Backend>(a: &Tensor<B, 2>, b: &Tensor<B, 2>) -> Result<(), BlocksError> {
    check_boxes("a", a.dims())?;
    check_boxes("b", b.dims())?;
    if a.dims() != b.dims() {
        return Err(BlocksError::shape(
            "b",
            &b.dims(),
            &format!("{:?} (same as a)", a.dims()),
        ));
    }
    Ok(())
}

/// Intersection and (eps-clamped) union of same-shaped coordinate tensors.
#[allow(clippy::too_many_arguments)]
fn inter_union<B: Backend, const D: usize>(
    ax1: Tensor<B, D>,
    ay1: Tensor<B, D>,
    ax2: Tensor<B, D>,
    ay2: Tensor<B, D>,
    bx1: Tensor<B, D>,
    by1: Tensor<B, D>,
    bx2: Tensor<B, D>,
    by2: Tensor<B, D>,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let area_a = (ax2.clone() - ax1.clone()) * (ay2.clone() - ay1.clone());
    let area_b = (bx2.clone() - bx1.clone()) * (by2.clone() - by1.clone());
    let w = (ax2.min_pair(bx2) - ax1.max_pair(bx1)).clamp_min(0.0);
    let h = (ay2.min_pair(by2) - ay1.max_pair(by1)).clamp_min(0.0);
    let inter = w * h;
    let union = (area_a + area_b - inter.clone()).clamp_min(OVERLAP_EPS);
    (inter, union)
}

#[allow(clippy::too_many_arguments)]
fn giou_parts<B: Backend, const D: usize>(
    ax1: Tensor<B, D>,
    ay1: Tensor<B, D>,
    ax2: Tensor<B, D>,
    ay2: Tensor<B, D>,
    bx1: Tensor<B, D>,
    by1: Tensor<B, D>,
    bx2: Tensor<B, D>,
    by2: Tensor<B, D>,
) -> Tensor<B, D> {
    let ew = (ax2.clone().max_pair(bx2.clone()) - ax1.clone().min_pair(bx1.clone())).clamp_min(0.0);
    let eh = (ay2.clone().max_pair(by2.clone()) - ay1.clone().min_pair(by1.clone())).clamp_min(0.0);
    let enclose = (ew * eh).clamp_min(OVERLAP_EPS);
    let (inter, union) = inter_union(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2);
    inter / union.clone() - (enclose.clone() - union) / enclose
}
