//! mmdetection's `StandardRoIHead` (Faster R-CNN's second stage): proposals are assigned to the ground truth
//! (MaxIoU 0.5), 512 are sampled per image (a quarter positive, the GT boxes added as proposals), pooled from
//! their FPN level by RoIAlign 7x7 and classified / regressed by the box head.

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::bbox_head::{BBoxHead, gt_tensors, rois_tensor};
use super::mask_head::{FcnMaskHead, mask_targets, paste_mask};
use super::{RoiHead, RoiLosses};
use crate::assigners::MaxIouAssigner;
use crate::config::{RcnnTestConfig, RcnnTrainConfig, StandardRoiHeadConfig};
use crate::heads::dense::rows_tensor;
use crate::heads::rpn::Proposals;
use crate::models::{DetBackend, Detections, EvalKind, LossTerm, ModelError, Normaliser};
use crate::ops::RoiExtractor;
use crate::samplers::{RandomSampler, SamplingResult};
use crate::structures::{GroundTruth, ImageMeta};

/// Assignment, sampling and test settings of the second stage.
#[derive(Debug, Clone)]
pub struct StandardParts {
    extractor: RoiExtractor,
    mask_extractor: Option<RoiExtractor>,
    assigner: MaxIouAssigner,
    sampler: RandomSampler,
    test: RcnnTestConfig,
}

/// The standard RoI head: one extractor, one box head.
#[derive(Module, Debug)]
pub struct StandardRoiHead<B: Backend> {
    /// The box head.
    pub bbox_head: BBoxHead<B>,
    /// The mask head (Mask R-CNN).
    pub mask_head: Option<FcnMaskHead<B>>,
    parts: StandardParts,
}

/// Salt of the second stage's sampling stream (the image seed is shared with other random choices).
const RCNN_SAMPLING_SALT: u64 = 0x5243_4E4E; // "RCNN"

impl StandardRoiHeadConfig {
    /// Build the head.
    ///
    /// # Errors
    /// Out-of-range config values, naming the field.
    pub fn init<B: Backend>(
        &self,
        train: &RcnnTrainConfig,
        test: &RcnnTestConfig,
        level_strides: &[usize],
        device: &B::Device,
    ) -> Result<StandardRoiHead<B>, ModelError> {
        let extractor = self
            .bbox_roi_extractor
            .init()
            .map_err(|e| ModelError(format!("model.roi_head.bbox_roi_extractor: {e}")))?;
        let strides = &self.bbox_roi_extractor.featmap_strides;
        if !level_strides.starts_with(strides) {
            return Err(ModelError(format!(
                "model.roi_head.bbox_roi_extractor.featmap_strides: {strides:?} are not the first FPN levels \
                 {level_strides:?}"
            )));
        }
        let mask_head = self.mask_head.as_ref().map(|m| m.init(device)).transpose()?;
        let mask_extractor = match (&self.mask_head, &self.mask_roi_extractor) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(ModelError(
                    "model.roi_head.mask_roi_extractor: the mask head needs its extractor".into(),
                ));
            }
            (Some(_), Some(e)) => Some(
                e.init()
                    .map_err(|e| ModelError(format!("model.roi_head.mask_roi_extractor: {e}")))?,
            ),
        };
        Ok(StandardRoiHead {
            bbox_head: self.bbox_head.init(device)?,
            mask_head,
            parts: StandardParts {
                extractor,
                mask_extractor,
                assigner: train
                    .assigner
                    .init()
                    .map_err(|e| ModelError(format!("model.train_cfg.rcnn.assigner: {e}")))?,
                sampler: train
                    .sampler
                    .init()
                    .map_err(|e| ModelError(format!("model.train_cfg.rcnn.sampler: {e}")))?,
                test: test.clone(),
            },
        })
    }
}

impl<B: DetBackend> RoiHead<B> for StandardRoiHead<B> {
    fn losses(
        &self,
        feats: &[Tensor<B, 4>],
        proposals: &[Proposals],
        gts: &[&GroundTruth],
        seeds: &[u64],
    ) -> Result<RoiLosses<B>, ModelError> {
        let device = feats[0].device();
        let p = &self.parts;
        let levels = &feats[..p.extractor.config().featmap_strides.len()];
        let (mut samples, mut gt_boxes) = (Vec::new(), Vec::new());
        for ((props, gt), &seed) in proposals.iter().zip(gts).zip(seeds) {
            let (boxes, labels) = gt_tensors::<B>(&gt.boxes, &gt.labels, &device);
            let priors = rows_tensor::<B>(&props.boxes, &device);
            let ignore = (!gt.ignore.is_empty()).then(|| rows_tensor::<B>(&gt.ignore, &device));
            let assign = p
                .assigner
                .assign(priors.clone(), boxes.clone(), labels.clone(), ignore, None)
                .map_err(|e| ModelError(format!("rcnn assignment: {e}")))?;
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ RCNN_SAMPLING_SALT);
            let s = p
                .sampler
                .sample(&assign, priors, boxes.clone(), labels, &mut rng)
                .map_err(|e| ModelError(format!("rcnn sampling: {e}")))?;
            samples.push(s);
            gt_boxes.push(boxes);
        }
        let sampled: Vec<Tensor<B, 2>> = samples
            .iter()
            .map(|s| Tensor::cat(vec![s.pos_priors(), s.neg_priors()], 0))
            .collect();
        let rois = rois_tensor(&sampled, &device);
        let pooled = p
            .extractor
            .forward(levels, rois)
            .map_err(|e| ModelError(format!("bbox RoIAlign: {e}")))?;
        let (logits, deltas) = self.bbox_head.forward(pooled);
        let targets = self.bbox_head.targets(&samples, &gt_boxes)?;
        let (loss_cls, loss_bbox) = self.bbox_head.losses(logits, deltas, &targets)?;
        let mut terms = vec![loss_cls, loss_bbox];
        if let (Some(head), Some(extractor)) = (&self.mask_head, &p.mask_extractor) {
            terms.push(self.mask_loss(head, extractor, feats, &samples, gts)?);
        }
        Ok(terms)
    }

    fn eval_kinds(&self) -> Vec<EvalKind> {
        if self.mask_head.is_some() {
            vec![EvalKind::Bbox, EvalKind::Segm]
        } else {
            vec![EvalKind::Bbox]
        }
    }

    fn predict(
        &self,
        feats: &[Tensor<B, 4>],
        proposals: &[Proposals],
        metas: &[&ImageMeta],
    ) -> Result<Vec<Detections>, ModelError> {
        let device = feats[0].device();
        let p = &self.parts;
        let levels = &feats[..p.extractor.config().featmap_strides.len()];
        let per_image: Vec<Tensor<B, 2>> = proposals
            .iter()
            .map(|pr| rows_tensor::<B>(&pr.boxes, &device))
            .collect();
        let rois = rois_tensor(&per_image, &device);
        let pooled = p
            .extractor
            .forward(levels, rois)
            .map_err(|e| ModelError(format!("bbox RoIAlign: {e}")))?;
        let (logits, deltas) = self.bbox_head.forward(pooled);
        let mut start = 0;
        let mut out = Vec::with_capacity(metas.len());
        // each image's detections in the resized image (the mask branch pools from them)
        let mut resized: Vec<Vec<[f32; 4]>> = Vec::with_capacity(metas.len());
        for (pr, meta) in proposals.iter().zip(metas) {
            let r = pr.boxes.len();
            if r == 0 {
                out.push(Detections::default());
                resized.push(Vec::new());
                continue;
            }
            let sel = start..start + r;
            start += r;
            let (probs, boxes) = self.bbox_head.decode(
                per_image[out.len()].clone(),
                logits.clone().slice(s![sel.clone(), ..]),
                deltas.clone().slice(s![sel, ..]),
                meta.img_hw(),
            )?;
            let host = |t: TensorData| t.convert::<f32>().to_vec::<f32>().unwrap_or_default();
            let (det, boxes) = self.bbox_head.post_process(
                &host(probs.into_data()),
                &host(boxes.into_data()),
                r,
                &p.test,
                meta,
            );
            out.push(det);
            resized.push(boxes);
        }
        while resized.len() < out.len() {
            resized.push(Vec::new());
        }
        if let (Some(head), Some(extractor)) = (&self.mask_head, &p.mask_extractor) {
            self.predict_masks(head, extractor, feats, &resized, metas, &mut out)?;
        }
        Ok(out)
    }
}

impl<B: DetBackend> StandardRoiHead<B> {
    /// `loss_mask` over the positives of every image.
    fn mask_loss(
        &self,
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
            let host_rows = |t: Tensor<B, 2>| -> Vec<[f32; 4]> {
                let v: Vec<f32> = t.into_data().convert::<f32>().to_vec().unwrap_or_default();
                v.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
            };
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
            targets.push(mask_targets::<B>(masks, &pos, &gt_index, size, &device)?);
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

    /// Masks of the detections: pooled from their boxes in the resized image, pasted at the original size.
    fn predict_masks(
        &self,
        head: &FcnMaskHead<B>,
        extractor: &RoiExtractor,
        feats: &[Tensor<B, 4>],
        resized: &[Vec<[f32; 4]>],
        metas: &[&ImageMeta],
        out: &mut [Detections],
    ) -> Result<(), ModelError> {
        let device = feats[0].device();
        let per_image: Vec<Tensor<B, 2>> = resized.iter().map(|b| rows_tensor::<B>(b, &device)).collect();
        let rois = rois_tensor(&per_image, &device);
        if rois.dims()[0] == 0 {
            out.iter_mut().for_each(|d| d.masks = Some(Vec::new()));
            return Ok(());
        }
        let levels = &feats[..extractor.config().featmap_strides.len()];
        let pooled = extractor
            .forward(levels, rois)
            .map_err(|e| ModelError(format!("mask RoIAlign: {e}")))?;
        let labels: Vec<usize> = out.iter().flat_map(|d| d.labels.iter().copied()).collect();
        let logits = head.forward(pooled);
        let m = logits.dims()[2];
        let probs = head.probabilities(logits, &labels);
        let mut next = probs.into_iter();
        for (det, meta) in out.iter_mut().zip(metas) {
            let masks = det
                .boxes
                .iter()
                .zip(next.by_ref())
                .map(|(b, p)| {
                    paste_mask(
                        &p,
                        m,
                        *b,
                        (meta.ori_size.1, meta.ori_size.0),
                        head.mask_threshold(),
                    )
                })
                .collect();
            det.masks = Some(masks);
        }
        Ok(())
    }
}
