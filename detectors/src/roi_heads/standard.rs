//! mmdetection's `StandardRoIHead` (Faster R-CNN's second stage): proposals are assigned to the ground truth
//! (MaxIoU 0.5), 512 are sampled per image (a quarter positive, the GT boxes added as proposals), pooled from
//! their FPN level by RoIAlign 7x7 and classified / regressed by the box head.

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::bbox_head::{BBoxHead, gt_tensors, rois_tensor};
use super::{RoiHead, RoiLosses};
use crate::assigners::MaxIouAssigner;
use crate::config::{RcnnTestConfig, RcnnTrainConfig, StandardRoiHeadConfig};
use crate::heads::dense::rows_tensor;
use crate::heads::rpn::Proposals;
use crate::models::{DetBackend, Detections, ModelError};
use crate::ops::RoiExtractor;
use crate::samplers::RandomSampler;
use crate::structures::{GroundTruth, ImageMeta};

/// Assignment, sampling and test settings of the second stage.
#[derive(Debug, Clone)]
pub struct StandardParts {
    extractor: RoiExtractor,
    assigner: MaxIouAssigner,
    sampler: RandomSampler,
    test: RcnnTestConfig,
}

/// The standard RoI head: one extractor, one box head.
#[derive(Module, Debug)]
pub struct StandardRoiHead<B: Backend> {
    /// The box head.
    pub bbox_head: BBoxHead<B>,
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
        Ok(StandardRoiHead {
            bbox_head: self.bbox_head.init(device)?,
            parts: StandardParts {
                extractor,
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
        Ok(vec![("loss_cls", loss_cls), ("loss_bbox", loss_bbox)])
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
        for (pr, meta) in proposals.iter().zip(metas) {
            let r = pr.boxes.len();
            if r == 0 {
                out.push(Detections::default());
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
            out.push(self.bbox_head.post_process(
                &host(probs.into_data()),
                &host(boxes.into_data()),
                r,
                &p.test,
                meta,
            ));
        }
        Ok(out)
    }
}
