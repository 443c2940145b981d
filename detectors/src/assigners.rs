//! Target assignment: mmdetection's `MaxIoUAssigner`, entirely on device tensors (no per-anchor host loop).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ops::{OverlapMode, pairwise_overlaps};
use crate::structures::error::check_boxes;
use crate::structures::{BlocksError, Instances};

/// The negative IoU threshold: a single upper bound, or a `[lo, hi)` range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NegIouThr {
    /// Negatives have `0 <= max IoU < thr`.
    Below(f32),
    /// Negatives have `lo <= max IoU < hi`.
    Range([f32; 2]),
}

fn default_true() -> bool {
    true
}
fn default_neg_one() -> f32 {
    -1.0
}

/// Configuration of the [`MaxIouAssigner`] (mmdetection `MaxIoUAssigner` fields and defaults).
///
/// RetinaNet: `{"pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0.0, "ignore_iof_thr": -1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxIouAssignerConfig {
    /// Boxes with max IoU `>= pos_iou_thr` are positive.
    pub pos_iou_thr: f32,
    /// Negative range.
    pub neg_iou_thr: NegIouThr,
    /// A GT's best boxes become positive (low-quality matches) only when that best IoU is `>= min_pos_iou`.
    #[serde(default)]
    pub min_pos_iou: f32,
    /// Give a GT *all* boxes that tie for its best IoU (else only the first).
    #[serde(default = "default_true")]
    pub gt_max_assign_all: bool,
    /// Boxes whose IoF with an ignored (crowd) box exceeds this are ignored; negative disables.
    #[serde(default = "default_neg_one")]
    pub ignore_iof_thr: f32,
    /// IoF relative to the candidate boxes (`true`) or to the ignored boxes.
    #[serde(default = "default_true")]
    pub ignore_wrt_candidates: bool,
    /// Allow the low-quality matches of step 4 (RPN and one-stage heads: yes; R-CNN heads: no).
    #[serde(default = "default_true")]
    pub match_low_quality: bool,
}

impl MaxIouAssignerConfig {
    /// Builds the assigner.
    ///
    /// # Errors
    /// [`BlocksError::Config`] when a threshold is NaN or the negative range is inverted.
    pub fn init(&self) -> Result<MaxIouAssigner, BlocksError> {
        if self.pos_iou_thr.is_nan() || self.min_pos_iou.is_nan() {
            return Err(BlocksError::config("pos_iou_thr", "must be a number"));
        }
        match self.neg_iou_thr {
            NegIouThr::Below(t) if t.is_nan() => {
                return Err(BlocksError::config("neg_iou_thr", "must be a number"));
            }
            NegIouThr::Range([lo, hi]) if lo.is_nan() || hi.is_nan() || lo > hi => {
                return Err(BlocksError::config(
                    "neg_iou_thr",
                    "range [lo, hi] needs lo <= hi",
                ));
            }
            _ => {}
        }
        Ok(MaxIouAssigner { cfg: self.clone() })
    }
}

/// The outcome of assigning one image's boxes.
///
/// # Shapes
/// - gt_inds: `[N]`: `-1` ignored, `0` negative, `i + 1` positive for GT `i`
/// - max_overlaps: `[N]`, best IoU of each box (`-1` for ignored crowd/invalid boxes)
/// - labels: `[N]`, the GT label of positives, `-1` otherwise
#[derive(Debug, Clone)]
pub struct AssignResult<B: Backend> {
    /// Number of GT boxes.
    pub num_gts: usize,
    /// Assigned GT index, 1-based.
    pub gt_inds: Tensor<B, 1, Int>,
    /// Best IoU per box.
    pub max_overlaps: Tensor<B, 1>,
    /// Assigned label per box.
    pub labels: Tensor<B, 1, Int>,
}

impl<B: Backend> AssignResult<B> {
    /// Mask of positive boxes, `[N]`.
    pub fn positive(&self) -> Tensor<B, 1, Bool> {
        self.gt_inds.clone().greater_elem(0)
    }

    /// Mask of negative boxes, `[N]`.
    pub fn negative(&self) -> Tensor<B, 1, Bool> {
        self.gt_inds.clone().equal_elem(0)
    }

    /// 0-based GT index per box, clamped to 0 for non-positives (use with [`Self::positive`]), `[N]`.
    pub fn gt_index_or_zero(&self) -> Tensor<B, 1, Int> {
        (self.gt_inds.clone() - 1).clamp_min(0)
    }
}

/// The outcome of assigning the same boxes (anchors) in every image of a batch.
///
/// # Shapes
/// - gt_inds, max_overlaps, labels: `[B, N]`, with the meaning of [`AssignResult`]'s fields per row
#[derive(Debug, Clone)]
pub struct BatchAssignResult<B: Backend> {
    /// GT count of each image.
    pub num_gts: Vec<usize>,
    /// Assigned GT index, 1-based (`-1` ignored, `0` negative).
    pub gt_inds: Tensor<B, 2, Int>,
    /// Best IoU per box (`-1` for ignored boxes; 0 in images without GT).
    pub max_overlaps: Tensor<B, 2>,
    /// Assigned label per box, `-1` unless positive.
    pub labels: Tensor<B, 2, Int>,
}

/// Value of the overlap with a padding GT: below every real overlap and below the ignore marker.
const PAD_OVERLAP: f32 = -2.0;

/// Assigns each box the GT it overlaps most, in mmdetection's four steps: all ignored; max IoU in the negative
/// range → negative; max IoU `>= pos_iou_thr` → positive; then each GT takes its best box(es) (later GTs win).
#[derive(Debug, Clone, PartialEq)]
pub struct MaxIouAssigner {
    cfg: MaxIouAssignerConfig,
}

impl MaxIouAssigner {
    /// The configuration.
    pub fn config(&self) -> &MaxIouAssignerConfig {
        &self.cfg
    }

    /// Assigns one image.
    ///
    /// # Shapes
    /// - boxes: `[N, 4]` anchors or proposals, xyxy
    /// - gt_boxes: `[M, 4]`, gt_labels: `[M]` (M may be 0: all boxes become negative)
    /// - gt_ignore: `[I, 4]` crowd boxes, used when `ignore_iof_thr > 0`
    /// - valid: `[N]`; invalid boxes (outside the padded image) are ignored, exactly as if they had been
    ///   removed before assignment
    ///
    /// # Errors
    /// [`BlocksError::Shape`] for malformed inputs.
    pub fn assign<B: Backend>(
        &self,
        boxes: Tensor<B, 2>,
        gt_boxes: Tensor<B, 2>,
        gt_labels: Tensor<B, 1, Int>,
        gt_ignore: Option<Tensor<B, 2>>,
        valid: Option<Tensor<B, 1, Bool>>,
    ) -> Result<AssignResult<B>, BlocksError> {
        check_boxes("boxes", boxes.dims())?;
        check_boxes("gt_boxes", gt_boxes.dims())?;
        let (n, m) = (boxes.dims()[0], gt_boxes.dims()[0]);
        if gt_labels.dims()[0] != m {
            return Err(BlocksError::shape(
                "gt_labels",
                &gt_labels.dims(),
                &format!("[{m}] (one per GT box)"),
            ));
        }
        if let Some(v) = &valid
            && v.dims()[0] != n
        {
            return Err(BlocksError::shape(
                "valid",
                &v.dims(),
                &format!("[{n}] (one per box)"),
            ));
        }
        let device = boxes.device();
        // Boxes to ignore: crowd overlap and outside the padded image. Their overlaps become -1 for every GT.
        let mut ignored: Option<Tensor<B, 1, Bool>> = valid.map(|v| v.bool_not());
        if let Some(ig) = gt_ignore
            && self.cfg.ignore_iof_thr > 0.0
            && ig.dims()[0] > 0
            && n > 0
        {
            check_boxes("gt_ignore", ig.dims())?;
            let best = if self.cfg.ignore_wrt_candidates {
                pairwise_overlaps(boxes.clone(), ig, OverlapMode::Iof)?
                    .max_dim(1)
                    .reshape([n])
            } else {
                pairwise_overlaps(ig, boxes.clone(), OverlapMode::Iof)?
                    .max_dim(0)
                    .reshape([n])
            };
            let crowd = best.greater_elem(self.cfg.ignore_iof_thr);
            ignored = Some(match ignored {
                Some(i) => i.bool_or(crowd),
                None => crowd,
            });
        }
        if m == 0 || n == 0 {
            // No GT: every box is negative, except the ignored ones.
            let mut gt_inds = Tensor::<B, 1, Int>::zeros([n], &device) + if m == 0 { 0 } else { -1 };
            if let Some(ig) = ignored {
                gt_inds = gt_inds.mask_fill(ig, -1);
            }
            return Ok(AssignResult {
                num_gts: m,
                gt_inds,
                max_overlaps: Tensor::zeros([n], &device),
                labels: Tensor::<B, 1, Int>::zeros([n], &device) - 1,
            });
        }
        let mut overlaps = pairwise_overlaps(boxes, gt_boxes, OverlapMode::Iou)?; // [N, M]
        if let Some(ig) = ignored {
            overlaps = overlaps.mask_fill(ig.reshape([n, 1]).expand([n, m]), -1.0);
        }
        self.assign_wrt_overlaps(overlaps, gt_labels)
    }

    /// Assigns the same boxes in every image of a batch at once: GTs are padded to the largest count and the
    /// `[B, N, M]` overlaps are computed in one go. The result equals [`Self::assign`] image by image.
    ///
    /// # Shapes
    /// - boxes: `[N, 4]` (shared by all images, e.g. the anchors of all levels)
    /// - gts: `B` images (boxes `[M_b, 4]`, labels `[M_b]`; `M_b` may be 0)
    /// - gt_ignore: optional crowd boxes per image (`[I_b, 4]`), used when `ignore_iof_thr > 0`
    /// - valid: `[B, N]` (anchors inside each image's padded area)
    ///
    /// # Errors
    /// [`BlocksError::Shape`] for malformed inputs.
    pub fn assign_batch<B: Backend>(
        &self,
        boxes: Tensor<B, 2>,
        gts: &[Instances<B>],
        gt_ignore: Option<&[Tensor<B, 2>]>,
        valid: Option<Tensor<B, 2, Bool>>,
    ) -> Result<BatchAssignResult<B>, BlocksError> {
        check_boxes("boxes", boxes.dims())?;
        let n = boxes.dims()[0];
        let b = gts.len();
        let device = boxes.device();
        let num_gts: Vec<usize> = gts.iter().map(Instances::len).collect();
        for (i, g) in gts.iter().enumerate() {
            if g.labels.dims()[0] != g.len() {
                return Err(BlocksError::shape(
                    &format!("gts[{i}].labels"),
                    &g.labels.dims(),
                    &format!("[{}]", g.len()),
                ));
            }
        }
        if let Some(v) = &valid
            && v.dims() != [b, n]
        {
            return Err(BlocksError::shape(
                "valid",
                &v.dims(),
                &format!("[{b}, {n}] (images x boxes)"),
            ));
        }
        if let Some(ig) = gt_ignore
            && ig.len() != b
        {
            return Err(BlocksError::shape(
                "gt_ignore",
                &[ig.len()],
                &format!("{b} entries (one per image)"),
            ));
        }
        // Ignored boxes: outside the padded image, or covered by crowd boxes (per image).
        let mut ignored: Option<Tensor<B, 2, Bool>> = valid.map(|v| v.bool_not());
        if let (Some(ig), true, true) = (gt_ignore, self.cfg.ignore_iof_thr > 0.0, n > 0) {
            let crowd: Vec<Tensor<B, 1, Bool>> = ig
                .iter()
                .map(|g| {
                    check_boxes("gt_ignore", g.dims())?;
                    if g.dims()[0] == 0 {
                        return Ok(Tensor::<B, 1, Int>::zeros([n], &device).equal_elem(1));
                    }
                    let best = if self.cfg.ignore_wrt_candidates {
                        pairwise_overlaps(boxes.clone(), g.clone(), OverlapMode::Iof)?
                            .max_dim(1)
                            .reshape([n])
                    } else {
                        pairwise_overlaps(g.clone(), boxes.clone(), OverlapMode::Iof)?
                            .max_dim(0)
                            .reshape([n])
                    };
                    Ok(best.greater_elem(self.cfg.ignore_iof_thr))
                })
                .collect::<Result<_, BlocksError>>()?;
            let crowd = Tensor::stack(crowd, 0);
            ignored = Some(match ignored {
                Some(i) => i.bool_or(crowd),
                None => crowd,
            });
        }
        let m = num_gts.iter().copied().max().unwrap_or(0);
        if b == 0 || n == 0 || m == 0 {
            let mut gt_inds = Tensor::<B, 2, Int>::zeros([b, n], &device);
            if let (Some(ig), true) = (ignored, b * n > 0) {
                gt_inds = gt_inds.mask_fill(ig, -1);
            }
            return Ok(BatchAssignResult {
                num_gts,
                gt_inds,
                max_overlaps: Tensor::zeros([b, n], &device),
                labels: Tensor::<B, 2, Int>::zeros([b, n], &device) - 1,
            });
        }
        // Pad every image to m GTs; padding overlaps are PAD_OVERLAP so they never win or match.
        let pad = |t: Tensor<B, 2>, k: usize| {
            if k == m {
                t
            } else {
                Tensor::cat(vec![t, Tensor::zeros([m - k, 4], &device)], 0)
            }
        };
        let gt_boxes = Tensor::stack::<3>(
            gts.iter()
                .map(|g| pad(g.boxes.tensor().clone(), g.len()))
                .collect(),
            0,
        );
        let gt_labels = Tensor::stack::<2>(
            gts.iter()
                .map(|g| {
                    let k = g.len();
                    if k == m {
                        g.labels.clone()
                    } else {
                        Tensor::cat(vec![g.labels.clone(), Tensor::zeros([m - k], &device)], 0)
                    }
                })
                .collect(),
            0,
        );
        let counts: Vec<i64> = num_gts.iter().map(|&k| k as i64).collect();
        let counts =
            Tensor::<B, 1, Int>::from_data(TensorData::new(counts, [b]).convert::<B::IntElem>(), &device);
        let real = Tensor::<B, 1, Int>::arange(0..m as i64, &device)
            .reshape([1, m])
            .expand([b, m])
            .lower(counts.clone().reshape([b, 1]).expand([b, m])); // [B, M]
        let real3 = real.clone().reshape([b, 1, m]).expand([b, n, m]);
        let mut overlaps = batched_iou(boxes, gt_boxes).mask_fill(real3.clone().bool_not(), PAD_OVERLAP);
        if let Some(ig) = &ignored {
            overlaps = overlaps.mask_where(
                ig.clone().reshape([b, n, 1]).expand([b, n, m]).bool_and(real3),
                Tensor::full([b, n, m], -1.0, &device),
            );
        }
        let (max_ov, argmax) = overlaps.clone().max_dim_with_indices(2);
        let (max_ov, argmax) = (max_ov.reshape([b, n]), argmax.reshape([b, n]));
        let mut gt_inds = Tensor::<B, 2, Int>::zeros([b, n], &device) - 1;
        let neg = match self.cfg.neg_iou_thr {
            NegIouThr::Below(t) => max_ov
                .clone()
                .greater_equal_elem(0.0)
                .bool_and(max_ov.clone().lower_elem(t)),
            NegIouThr::Range([lo, hi]) => max_ov
                .clone()
                .greater_equal_elem(lo)
                .bool_and(max_ov.clone().lower_elem(hi)),
        };
        gt_inds = gt_inds.mask_fill(neg, 0);
        gt_inds = gt_inds.mask_where(
            max_ov.clone().greater_equal_elem(self.cfg.pos_iou_thr),
            argmax + 1,
        );
        if self.cfg.match_low_quality {
            let gt_max = overlaps.clone().max_dim(1); // [B, 1, M]
            let eligible = gt_max
                .clone()
                .greater_equal_elem(self.cfg.min_pos_iou)
                .bool_and(real.reshape([b, 1, m]))
                .expand([b, n, m]);
            let claims = if self.cfg.gt_max_assign_all {
                overlaps.equal(gt_max.expand([b, n, m]))
            } else {
                let gt_argmax = overlaps.argmax(1); // [B, 1, M]
                Tensor::<B, 1, Int>::arange(0..n as i64, &device)
                    .reshape([1, n, 1])
                    .expand([b, n, m])
                    .equal(gt_argmax.expand([b, n, m]))
            }
            .bool_and(eligible);
            let rank = Tensor::<B, 1, Int>::arange(1..m as i64 + 1, &device)
                .reshape([1, 1, m])
                .expand([b, n, m]);
            let claimed_by = (claims.int() * rank).max_dim(2).reshape([b, n]);
            gt_inds = gt_inds.mask_where(claimed_by.clone().greater_elem(0), claimed_by);
        }
        // Images without GT: everything negative except ignored boxes; their max overlap reads 0.
        let no_gt = counts.equal_elem(0).reshape([b, 1]).expand([b, n]);
        gt_inds = gt_inds.mask_fill(no_gt.clone(), 0);
        if let Some(ig) = ignored {
            gt_inds = gt_inds.mask_fill(no_gt.clone().bool_and(ig), -1);
        }
        let max_overlaps = max_ov.mask_fill(no_gt, 0.0);
        let positive = gt_inds.clone().greater_elem(0);
        let labels = gt_labels
            .gather(1, (gt_inds.clone() - 1).clamp_min(0))
            .mask_fill(positive.bool_not(), -1);
        Ok(BatchAssignResult {
            num_gts,
            gt_inds,
            max_overlaps,
            labels,
        })
    }

    /// Assigns from a precomputed `[N, M]` overlap matrix (boxes x GTs; `-1` marks ignored boxes).
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when `gt_labels` is not `[M]`.
    pub fn assign_wrt_overlaps<B: Backend>(
        &self,
        overlaps: Tensor<B, 2>,
        gt_labels: Tensor<B, 1, Int>,
    ) -> Result<AssignResult<B>, BlocksError> {
        let [n, m] = overlaps.dims();
        if gt_labels.dims()[0] != m {
            return Err(BlocksError::shape(
                "gt_labels",
                &gt_labels.dims(),
                &format!("[{m}] (one per GT box)"),
            ));
        }
        let device = overlaps.device();
        if n == 0 || m == 0 {
            let fill = if m == 0 { 0 } else { -1 };
            return Ok(AssignResult {
                num_gts: m,
                gt_inds: Tensor::<B, 1, Int>::zeros([n], &device) + fill,
                max_overlaps: Tensor::zeros([n], &device),
                labels: Tensor::<B, 1, Int>::zeros([n], &device) - 1,
            });
        }
        let (max_ov, argmax) = overlaps.clone().max_dim_with_indices(1);
        let (max_ov, argmax) = (max_ov.reshape([n]), argmax.reshape([n]));
        let mut gt_inds = Tensor::<B, 1, Int>::zeros([n], &device) - 1;
        // Step 2: negatives.
        let neg = match self.cfg.neg_iou_thr {
            NegIouThr::Below(t) => max_ov
                .clone()
                .greater_equal_elem(0.0)
                .bool_and(max_ov.clone().lower_elem(t)),
            NegIouThr::Range([lo, hi]) => max_ov
                .clone()
                .greater_equal_elem(lo)
                .bool_and(max_ov.clone().lower_elem(hi)),
        };
        gt_inds = gt_inds.mask_fill(neg, 0);
        // Step 3: positives by threshold.
        let pos = max_ov.clone().greater_equal_elem(self.cfg.pos_iou_thr);
        gt_inds = gt_inds.mask_where(pos, argmax + 1);
        // Step 4: each GT takes its best box(es); mmdetection loops over GTs in order, so the highest GT index
        // that claims a box wins. Vectorised: per box, the largest (i + 1) among claiming GTs.
        if self.cfg.match_low_quality {
            let gt_max = overlaps.clone().max_dim(0); // [1, M]
            let eligible = gt_max
                .clone()
                .greater_equal_elem(self.cfg.min_pos_iou)
                .expand([n, m]);
            let claims = if self.cfg.gt_max_assign_all {
                overlaps.equal(gt_max.expand([n, m]))
            } else {
                let gt_argmax = overlaps.argmax(0); // [1, M]
                Tensor::<B, 1, Int>::arange(0..n as i64, &device)
                    .reshape([n, 1])
                    .expand([n, m])
                    .equal(gt_argmax.expand([n, m]))
            }
            .bool_and(eligible);
            let rank = Tensor::<B, 1, Int>::arange(1..m as i64 + 1, &device)
                .reshape([1, m])
                .expand([n, m]);
            let claimed_by = (claims.int() * rank).max_dim(1).reshape([n]);
            gt_inds = gt_inds.mask_where(claimed_by.clone().greater_elem(0), claimed_by);
        }
        let positive = gt_inds.clone().greater_elem(0);
        let labels = gt_labels
            .select(0, (gt_inds.clone() - 1).clamp_min(0))
            .mask_fill(positive.bool_not(), -1);
        Ok(AssignResult {
            num_gts: m,
            gt_inds,
            max_overlaps: max_ov,
            labels,
        })
    }
}

/// IoU of `[N, 4]` boxes with each image's `[B, M, 4]` GTs, `[B, N, M]` (mmdetection's eps-clamped union).
fn batched_iou<B: Backend>(boxes: Tensor<B, 2>, gts: Tensor<B, 3>) -> Tensor<B, 3> {
    let n = boxes.dims()[0];
    let [b, m, _] = gts.dims();
    let a = |i: usize| {
        boxes
            .clone()
            .slice(s![.., i..i + 1])
            .reshape([1, n, 1])
            .expand([b, n, m])
    };
    let g = |i: usize| {
        gts.clone()
            .slice(s![.., .., i..i + 1])
            .reshape([b, 1, m])
            .expand([b, n, m])
    };
    let (ax1, ay1, ax2, ay2) = (a(0), a(1), a(2), a(3));
    let (gx1, gy1, gx2, gy2) = (g(0), g(1), g(2), g(3));
    let area_a = (ax2.clone() - ax1.clone()) * (ay2.clone() - ay1.clone());
    let area_g = (gx2.clone() - gx1.clone()) * (gy2.clone() - gy1.clone());
    let w = (ax2.min_pair(gx2) - ax1.max_pair(gx1)).clamp_min(0.0);
    let h = (ay2.min_pair(gy2) - ay1.max_pair(gy1)).clamp_min(0.0);
    let inter = w * h;
    inter.clone() / (area_a + area_g - inter).clamp_min(crate::ops::OVERLAP_EPS)
}
