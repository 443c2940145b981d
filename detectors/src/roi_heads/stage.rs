//! The steps every box stage of a RoI head takes, shared by the standard head (one stage) and the cascade
//! head (one per stage): assignment and sampling, the box branch's forward and losses on the samples, the
//! mask branch's loss on the positives, and inference (decoding, NMS, masks pasted at the original size).

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::bbox_head::{BBoxHead, RoiTargets, gt_tensors, rois_tensor};
use super::mask_head::{FcnMaskHead, mask_targets};
use crate::assigners::MaxIouAssigner;
use crate::config::RcnnTestConfig;
use crate::heads::dense::rows_tensor;
use crate::models::{DetBackend, Detections, LossTerm, ModelError, Normaliser};
use crate::ops::RoiExtractor;
use crate::samplers::{RandomSampler, SamplingResult};
use crate::structures::{GroundTruth, ImageMeta};

/// Each image's sampling result and its ground-truth boxes `[M, 4]`.
pub type Samples<B> = (Vec<SamplingResult<B>>, Vec<Tensor<B, 2>>);

/// Assign each image's candidate boxes to its ground truth and sample them; image `i` samples from
/// `seeds[i] ^ salt` alone (its targets do not depend on the batch it is in).
///
/// # Shapes
/// - priors: per image `[R_i, 4]` in the resized image
pub fn assign_and_sample<B: Backend>(
    assigner: &MaxIouAssigner,
    sampler: &RandomSampler,
    priors: Vec<Tensor<B, 2>>,
    gts: &[&GroundTruth],
    seeds: &[u64],
    salt: u64,
) -> Result<Samples<B>, ModelError> {
    let (mut samples, mut gt_boxes) = (Vec::new(), Vec::new());
    for ((priors, gt), &seed) in priors.into_iter().zip(gts).zip(seeds) {
        let device = priors.device();
        let (boxes, labels) = gt_tensors::<B>(&gt.boxes, &gt.labels, &device);
        let ignore = (!gt.ignore.is_empty()).then(|| rows_tensor::<B>(&gt.ignore, &device));
        let assign = assigner
            .assign(priors.clone(), boxes.clone(), labels.clone(), ignore, None)
            .map_err(|e| ModelError(format!("rcnn assignment: {e}")))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ salt);
        let s = sampler
            .sample(&assign, priors, boxes.clone(), labels, &mut rng)
            .map_err(|e| ModelError(format!("rcnn sampling: {e}")))?;
        samples.push(s);
        gt_boxes.push(boxes);
    }
    Ok((samples, gt_boxes))
}

/// The box branch on the sampled RoIs of a batch: outputs, targets and losses.
#[derive(Debug)]
pub struct BoxStageLosses<B: Backend> {
    /// `loss_cls`.
    pub loss_cls: LossTerm<B>,
    /// `loss_bbox`.
    pub loss_bbox: LossTerm<B>,
    /// Class logits `[R, K + 1]` of the sampled RoIs (each image's positives, then its negatives).
    pub logits: Tensor<B, 2>,
    /// Their deltas `[R, 4 K]` or `[R, 4]`.
    pub deltas: Tensor<B, 2>,
    /// Their targets.
    pub targets: RoiTargets<B>,
}

/// Each image's sampled RoIs, positives first: `[P_i + Q_i, 4]`.
pub fn sampled_rois<B: Backend>(samples: &[SamplingResult<B>]) -> Vec<Tensor<B, 2>> {
    samples
        .iter()
        .map(|s| Tensor::cat(vec![s.pos_priors(), s.neg_priors()], 0))
        .collect()
}

/// Pool the sampled RoIs, run `head` on them and compute its losses (mmdetection `bbox_loss`).
///
/// # Shapes
/// - feats: the FPN levels, finest first; samples and gt_boxes: per image
pub fn box_stage_losses<B: DetBackend>(
    head: &BBoxHead<B>,
    extractor: &RoiExtractor,
    feats: &[Tensor<B, 4>],
    (samples, gt_boxes): &Samples<B>,
) -> Result<BoxStageLosses<B>, ModelError> {
    let device = feats[0].device();
    let levels = &feats[..extractor.config().featmap_strides.len()];
    let rois = rois_tensor(&sampled_rois(samples), &device);
    let pooled = extractor
        .forward(levels, rois)
        .map_err(|e| ModelError(format!("bbox RoIAlign: {e}")))?;
    let (logits, deltas) = head.forward(pooled);
    let targets = head.targets(samples, gt_boxes)?;
    let (loss_cls, loss_bbox) = head.losses(logits.clone(), deltas.clone(), &targets)?;
    Ok(BoxStageLosses {
        loss_cls,
        loss_bbox,
        logits,
        deltas,
        targets,
    })
}

/// `loss_mask` over the positives of every image.
pub fn mask_loss<B: DetBackend>(
    head: &FcnMaskHead<B>,
    extractor: &RoiExtractor,
    feats: &[Tensor<B, 4>],
    samples: &[SamplingResult<B>],
    gts: &[&GroundTruth],
) -> Result<LossTerm<B>, ModelError> {
    let device = feats[0].device();
    let size = 2 * extractor.config().output_size[0];
    let (mut rois, mut targets, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (s, gt) in samples.iter().zip(gts) {
        let pos = host_rows(s.pos_priors());
        let gt_index: Vec<usize> = s
            .pos_gt_inds
            .clone()
            .into_data()
            .iter::<i64>()
            .map(|i| i as usize)
            .collect();
        let masks = gt.masks.as_deref().unwrap_or_default();
        if !pos.is_empty() && masks.len() != gt.boxes.len() {
            return Err(ModelError(format!(
                "mask targets: {} masks for {} instances (the mask branch needs a mask per instance)",
                masks.len(),
                gt.boxes.len()
            )));
        }
        targets.push(mask_targets::<B>(
            masks,
            &pos,
            &gt_index,
            size,
            head.target_convention(),
            &device,
        )?);
        rois.push(rows_tensor::<B>(&pos, &device));
        labels.push(s.pos_gt_labels.clone());
    }
    let rois = rois_tensor(&rois, &device);
    if rois.dims()[0] == 0 {
        // no positive anywhere: a zero loss that still reaches the head's parameters (mmdetection's
        // `mask_pred.sum() * 0`)
        let zero = head.conv_logits.weight.val().sum() * 0.0;
        return Ok(LossTerm::new("loss_mask", zero, Normaliser::new(0.0, 0.0)));
    }
    let levels = &feats[..extractor.config().featmap_strides.len()];
    let pooled = extractor
        .forward(levels, rois)
        .map_err(|e| ModelError(format!("mask RoIAlign: {e}")))?;
    let logits = head.forward(pooled);
    head.loss(logits, Tensor::cat(targets, 0), Tensor::cat(labels, 0))
}

/// Rows `[x1, y1, x2, y2]` of a `[R, 4]` tensor, on the host.
pub fn host_rows<B: Backend>(t: Tensor<B, 2>) -> Vec<[f32; 4]> {
    let v: Vec<f32> = t.into_data().convert::<f32>().to_vec().unwrap_or_default();
    v.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

/// Each image's detections (original image) and their boxes in the resized image.
pub type ImageDetections = (Vec<Detections>, Vec<Vec<[f32; 4]>>);

/// Detections of each image from the last box stage's outputs on its RoIs (mmdetection
/// `predict_by_feat`): softmax, decoding against the RoIs, score threshold, per-class NMS, top-k.
///
/// # Shapes
/// - rois: per image `[R_i, 4]` (resized image); logits `[sum R_i, K + 1]`; deltas `[sum R_i, 4 K or 4]`
/// - output: the detections (original image) and their boxes in the resized image, per image
pub fn detect<B: Backend>(
    head: &BBoxHead<B>,
    rois: &[Tensor<B, 2>],
    logits: Tensor<B, 2>,
    deltas: Tensor<B, 2>,
    test: &RcnnTestConfig,
    metas: &[&ImageMeta],
) -> Result<ImageDetections, ModelError> {
    let mut start = 0;
    let mut out = Vec::with_capacity(metas.len());
    // each image's detections in the resized image (the mask branch pools from them)
    let mut resized: Vec<Vec<[f32; 4]>> = Vec::with_capacity(metas.len());
    for (pr, meta) in rois.iter().zip(metas) {
        let r = pr.dims()[0];
        if r == 0 {
            out.push(Detections::default());
            resized.push(Vec::new());
            continue;
        }
        let sel = start..start + r;
        start += r;
        let (probs, boxes) = head.decode(
            pr.clone(),
            logits.clone().slice(s![sel.clone(), ..]),
            deltas.clone().slice(s![sel, ..]),
            meta.img_hw(),
        )?;
        let host = |t: TensorData| t.convert::<f32>().to_vec::<f32>().unwrap_or_default();
        let (det, boxes) =
            head.post_process(&host(probs.into_data()), &host(boxes.into_data()), r, test, meta);
        out.push(det);
        resized.push(boxes);
    }
    Ok((out, resized))
}

/// Masks of the detections: pooled from their boxes in the resized image, the probability maps of every head
/// in `heads` averaged (mmdetection's `merge_aug_masks` over cascade stages; one head: its own maps), pasted
/// at the original size with the last head's threshold.
pub fn predict_masks<B: DetBackend>(
    heads: &[FcnMaskHead<B>],
    extractor: &RoiExtractor,
    feats: &[Tensor<B, 4>],
    resized: &[Vec<[f32; 4]>],
    metas: &[&ImageMeta],
    out: &mut [Detections],
) -> Result<(), ModelError> {
    let device = feats[0].device();
    let per_image: Vec<Tensor<B, 2>> = resized.iter().map(|b| rows_tensor::<B>(b, &device)).collect();
    let rois = rois_tensor(&per_image, &device);
    let Some(last) = heads.last() else {
        return Ok(());
    };
    if rois.dims()[0] == 0 {
        out.iter_mut().for_each(|d| d.masks = Some(Vec::new()));
        return Ok(());
    }
    let levels = &feats[..extractor.config().featmap_strides.len()];
    let pooled = extractor
        .forward(levels, rois)
        .map_err(|e| ModelError(format!("mask RoIAlign: {e}")))?;
    let labels: Vec<usize> = out.iter().flat_map(|d| d.labels.iter().copied()).collect();
    let mut m = 0;
    let mut probs: Vec<Vec<f32>> = Vec::new();
    for head in heads {
        let logits = head.forward(pooled.clone());
        m = logits.dims()[2];
        let p = head.probabilities(logits, &labels);
        if probs.is_empty() {
            probs = p;
        } else {
            for (acc, p) in probs.iter_mut().zip(p) {
                acc.iter_mut().zip(p).for_each(|(a, v)| *a += v);
            }
        }
    }
    if heads.len() > 1 {
        let n = heads.len() as f32;
        probs.iter_mut().flatten().for_each(|a| *a /= n);
    }
    let mut next = probs.into_iter();
    for (det, meta) in out.iter_mut().zip(metas) {
        let masks = det
            .boxes
            .iter()
            .zip(next.by_ref())
            .map(|(b, p)| last.paste(&p, m, *b, (meta.ori_size.1, meta.ori_size.0)))
            .collect();
        det.masks = Some(masks);
    }
    Ok(())
}
