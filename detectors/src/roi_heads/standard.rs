//! mmdetection's `StandardRoIHead` (Faster R-CNN's second stage): proposals are assigned to the ground truth
//! (MaxIoU 0.5), 512 are sampled per image (a quarter positive, the GT boxes added as proposals), pooled from
//! their FPN level by RoIAlign 7x7 and classified / regressed by the box head.

use burn::prelude::*;

use super::bbox_head::{BBoxHead, rois_tensor};
use super::mask_head::FcnMaskHead;
use super::stage::{assign_and_sample, box_stage_losses, detect, mask_loss, predict_masks};
use super::{RoiHead, RoiLosses};
use crate::assigners::MaxIouAssigner;
use crate::config::{RcnnTestConfig, RcnnTrainConfig, StandardRoiHeadConfig};
use crate::heads::dense::rows_tensor;
use crate::heads::rpn::Proposals;
use crate::models::{DetBackend, Detections, EvalKind, ModelError};
use crate::ops::RoiExtractor;
use crate::samplers::RandomSampler;
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
pub(crate) const RCNN_SAMPLING_SALT: u64 = 0x5243_4E4E; // "RCNN"

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
        _metas: &[&ImageMeta],
    ) -> Result<RoiLosses<B>, ModelError> {
        let device = feats[0].device();
        let p = &self.parts;
        let priors = proposals
            .iter()
            .map(|pr| rows_tensor::<B>(&pr.boxes, &device))
            .collect();
        let samples = assign_and_sample(&p.assigner, &p.sampler, priors, gts, seeds, RCNN_SAMPLING_SALT)?;
        let out = box_stage_losses(&self.bbox_head, &p.extractor, feats, &samples)?;
        let mut terms = vec![out.loss_cls, out.loss_bbox];
        if let (Some(head), Some(extractor)) = (&self.mask_head, &p.mask_extractor) {
            terms.push(mask_loss(head, extractor, feats, &samples.0, gts)?);
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
        let (mut out, resized) = detect(&self.bbox_head, &per_image, logits, deltas, &p.test, metas)?;
        if let (Some(head), Some(extractor)) = (&self.mask_head, &p.mask_extractor) {
            predict_masks(
                std::slice::from_ref(head),
                extractor,
                feats,
                &resized,
                metas,
                &mut out,
            )?;
        }
        Ok(out)
    }
}
