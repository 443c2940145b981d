//! What every dense (anchor-based) head shares, RetinaNet's and the RPN alike: training targets of one image
//! over all anchors, and the host-side post-processing that turns per-level scores and deltas into scored
//! boxes (mmdetection's `filter_scores_and_topk` followed by decoding).

use burn::prelude::*;
use rand::Rng;

use crate::assigners::MaxIouAssigner;
use crate::coders::DeltaXywhCoder;
use crate::models::ModelError;
use crate::samplers::RandomSampler;
use crate::structures::GroundTruth;

fn model_err(e: impl std::fmt::Display) -> ModelError {
    ModelError(e.to_string())
}

/// `[N, 4]` tensor of box rows.
pub fn rows_tensor<B: Backend>(rows: &[[f32; 4]], device: &B::Device) -> Tensor<B, 2> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), 4]), device)
}

/// `[N]` integer tensor.
pub fn int_tensor<B: Backend>(values: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]).convert::<B::IntElem>(), device)
}

/// How a dense head picks the anchors that train.
pub enum Sampling<'a, R: Rng> {
    /// Every positive and negative of the assignment (RetinaNet: focal loss needs no sampling).
    All,
    /// A random subset of positives and negatives (the RPN: 256 per image, half positive).
    Random(&'a RandomSampler, &'a mut R),
}

/// Training targets of one image over all `T` anchors.
#[derive(Debug, Clone)]
pub struct DenseTargets<B: Backend> {
    /// `[T]`: class of positives, `num_classes` (background) elsewhere.
    pub labels: Tensor<B, 1, Int>,
    /// `[T]`: 1 for the anchors that train the classifier (positives and negatives, sampled ones when
    /// sampling), 0 for ignored ones.
    pub label_weights: Tensor<B, 1>,
    /// `[T, 4]`: encoded deltas of positives, 0 elsewhere.
    pub box_targets: Tensor<B, 2>,
    /// `[T, 1]`: 1 for the (sampled) positives.
    pub box_weights: Tensor<B, 2>,
    /// Sampled positives and negatives on the host (`None` without sampling, where counting them would cost
    /// a device read the head may not need).
    pub sampled: Option<(usize, usize)>,
}

/// Targets of one image: assign `anchors` to the ground truth, optionally sample, encode the matched boxes.
///
/// `class_agnostic` replaces every label by 0 (the RPN's single foreground class).
///
/// # Shapes
/// - anchors: `[T, 4]`, valid: `[T]` (anchors inside the padded image)
#[allow(clippy::too_many_arguments)]
pub fn dense_targets<B: Backend, R: Rng>(
    anchors: Tensor<B, 2>,
    valid: Tensor<B, 1, Bool>,
    gt: &GroundTruth,
    num_classes: usize,
    class_agnostic: bool,
    assigner: &MaxIouAssigner,
    coder: &DeltaXywhCoder,
    sampling: Sampling<'_, R>,
) -> Result<DenseTargets<B>, ModelError> {
    let device = anchors.device();
    let t = anchors.dims()[0];
    let k = num_classes as i64;
    let gt_boxes = rows_tensor::<B>(&gt.boxes, &device);
    let labels: Vec<i64> = if class_agnostic {
        vec![0; gt.labels.len()]
    } else {
        gt.labels.iter().map(|&l| l as i64).collect()
    };
    let m = labels.len();
    let gt_labels = int_tensor::<B>(labels, &device);
    let ignore = (!gt.ignore.is_empty()).then(|| rows_tensor::<B>(&gt.ignore, &device));
    let assign = assigner
        .assign(
            anchors.clone(),
            gt_boxes.clone(),
            gt_labels.clone(),
            ignore,
            Some(valid),
        )
        .map_err(model_err)?;
    let (pos, neg, sampled) = match sampling {
        Sampling::All => (assign.positive(), assign.negative(), None),
        Sampling::Random(sampler, rng) => {
            if sampler.config().add_gt_as_proposals {
                return Err(ModelError(
                    "sampler.add_gt_as_proposals: must be false for a dense head (anchors are not proposals)"
                        .into(),
                ));
            }
            let s = sampler
                .sample(&assign, anchors.clone(), gt_boxes.clone(), gt_labels, rng)
                .map_err(model_err)?;
            // the sampled indices are few: the masks are built on the host
            let host = |inds: Tensor<B, 1, Int>| -> Vec<i64> { inds.into_data().iter::<i64>().collect() };
            let (p, q) = (host(s.pos_inds), host(s.neg_inds));
            let mask = |inds: &[i64]| {
                let mut m = vec![false; t];
                inds.iter().for_each(|&i| m[i as usize] = true);
                Tensor::<B, 1, Bool>::from_data(TensorData::new(m, [t]), &device)
            };
            (mask(&p), mask(&q), Some((p.len(), q.len())))
        }
    };
    let cls_labels = assign
        .labels
        .clone()
        .mask_where(pos.clone().bool_not(), Tensor::full([t], k, &device));
    let label_weights = pos.clone().bool_or(neg).float();
    let box_weights = pos.clone().float().reshape([t, 1]);
    let box_targets = if m == 0 {
        Tensor::zeros([t, 4], &device)
    } else {
        let matched = gt_boxes.select(0, assign.gt_index_or_zero());
        let enc = coder.encode(anchors, matched).map_err(model_err)?;
        // non-positives may pair an anchor with an unrelated box: zero them (weight 0 would not cancel NaN)
        enc.mask_where(
            pos.bool_not().reshape([t, 1]).expand([t, 4]),
            Tensor::zeros([t, 4], &device),
        )
    };
    Ok(DenseTargets {
        labels: cls_labels,
        label_weights,
        box_targets,
        box_weights,
        sampled,
    })
}

/// One level's outputs of a whole batch, read back to the host for post-processing.
#[derive(Debug, Clone)]
pub struct LevelOnHost {
    /// Scores `[N, T_l, K]` (after the sigmoid), row-major.
    pub scores: Vec<f32>,
    /// Deltas `[N, T_l, 4]`.
    pub deltas: Vec<f32>,
    /// Anchors `[T_l, 4]`.
    pub anchors: Vec<f32>,
    /// Anchors of the level.
    pub t: usize,
}

impl LevelOnHost {
    /// One host read of a level: scores `[N, T_l, K]` (already activated), deltas `[N, T_l, 4]`, anchors
    /// `[T_l, 4]`.
    pub fn read<B: Backend>(scores: Tensor<B, 3>, deltas: Tensor<B, 3>, anchors: Tensor<B, 2>) -> Self {
        let t = anchors.dims()[0];
        let host = |x: TensorData| x.convert::<f32>().to_vec().unwrap_or_default();
        Self {
            scores: host(scores.into_data()),
            deltas: host(deltas.into_data()),
            anchors: host(anchors.into_data()),
            t,
        }
    }
}

/// Scored, decoded candidate boxes of one image, before NMS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// Boxes `[x1, y1, x2, y2]` in the resized image, clipped to it.
    pub boxes: Vec<[f32; 4]>,
    /// Scores.
    pub scores: Vec<f32>,
    /// Class of each candidate.
    pub labels: Vec<i64>,
    /// Pyramid level of each candidate.
    pub levels: Vec<i64>,
}

/// Candidates of image `i`: on each level, the (anchor, class) pairs scoring above `score_thr`, the best
/// `nms_pre` of them (ties by position), decoded against their anchors and clipped to `img_hw`.
///
/// # Shapes
/// - levels: per level, scores `[N, T_l, K]`, deltas `[N, T_l, 4]`, anchors `[T_l, 4]`
#[allow(clippy::too_many_arguments)]
pub fn image_candidates<B: Backend>(
    levels: &[LevelOnHost],
    i: usize,
    k: usize,
    score_thr: f32,
    nms_pre: usize,
    coder: &DeltaXywhCoder,
    img_hw: [usize; 2],
    device: &B::Device,
) -> Result<Candidates, ModelError> {
    let mut out = Candidates::default();
    for (level, l) in levels.iter().enumerate() {
        let t = l.t;
        let s = &l.scores[i * t * k..(i + 1) * t * k];
        let mut cand: Vec<usize> = (0..t * k).filter(|&j| s[j] > score_thr).collect();
        cand.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        cand.truncate(nms_pre);
        if cand.is_empty() {
            continue;
        }
        let anchor_rows: Vec<f32> = cand
            .iter()
            .flat_map(|&j| l.anchors[(j / k) * 4..(j / k) * 4 + 4].to_vec())
            .collect();
        let delta_rows: Vec<f32> = cand
            .iter()
            .flat_map(|&j| l.deltas[(i * t + j / k) * 4..(i * t + j / k) * 4 + 4].to_vec())
            .collect();
        let c = cand.len();
        let a = Tensor::<B, 2>::from_data(TensorData::new(anchor_rows, [c, 4]), device);
        let d = Tensor::<B, 2>::from_data(TensorData::new(delta_rows, [c, 4]), device);
        let decoded = coder.decode(a, d, Some(img_hw)).map_err(model_err)?;
        let decoded: Vec<f32> = decoded.into_data().convert::<f32>().to_vec().unwrap_or_default();
        for (n, &j) in cand.iter().enumerate() {
            out.boxes.push([
                decoded[n * 4],
                decoded[n * 4 + 1],
                decoded[n * 4 + 2],
                decoded[n * 4 + 3],
            ]);
            out.scores.push(s[j]);
            out.labels.push((j % k) as i64);
            out.levels.push(level as i64);
        }
    }
    Ok(out)
}
