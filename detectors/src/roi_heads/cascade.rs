//! mmdetection's `CascadeRoIHead` (Cascade R-CNN, Cai and Vasconcelos 2018): stages of box heads, each with
//! its own RoIAlign, head, assignment (IoU 0.5, 0.6, 0.7) and coder (shrinking stds). In training each stage
//! samples from the boxes the previous one refined, without gradient: the sampled RoIs moved by their
//! deltas for their target class (the best foreground class for background RoIs), the ground-truth boxes
//! the sampler added left out (the next sampler adds them again). Each stage's losses are scaled by its
//! weight (1, 0.5, 0.25). At test the RoIs are refined after every stage but the last; the classification is
//! the softmax of the stages' mean logits, the boxes the last stage's. With a mask head per stage (Cascade
//! Mask R-CNN) each trains on its stage's positives, and at test the stages' maps are averaged on the final
//! boxes.

use burn::prelude::*;
use burn::tensor::Bool;

use super::bbox_head::{BBoxHead, rois_tensor};
use super::mask_head::FcnMaskHead;
use super::stage::{
    BoxStageLosses, assign_and_sample, box_stage_losses, detect, mask_loss, predict_masks, sampled_rois,
};
use super::standard::RCNN_SAMPLING_SALT;
use super::{RoiHead, RoiLosses};
use crate::assigners::MaxIouAssigner;
use crate::config::{CascadeRoiHeadConfig, RcnnTestConfig, RcnnTrainConfig};
use crate::heads::dense::rows_tensor;
use crate::heads::rpn::Proposals;
use crate::models::{DetBackend, Detections, EvalKind, ModelError};
use crate::ops::RoiExtractor;
use crate::samplers::{RandomSampler, SamplingResult};
use crate::structures::{GroundTruth, ImageMeta};

/// Loss names of each stage (mmdetection's `s{i}.loss_*`): `[cls, bbox, mask]`.
const STAGE_LOSS_NAMES: [[&str; 3]; 6] = [
    ["s0.loss_cls", "s0.loss_bbox", "s0.loss_mask"],
    ["s1.loss_cls", "s1.loss_bbox", "s1.loss_mask"],
    ["s2.loss_cls", "s2.loss_bbox", "s2.loss_mask"],
    ["s3.loss_cls", "s3.loss_bbox", "s3.loss_mask"],
    ["s4.loss_cls", "s4.loss_bbox", "s4.loss_mask"],
    ["s5.loss_cls", "s5.loss_bbox", "s5.loss_mask"],
];

/// The most stages a cascade head may have.
pub const MAX_STAGES: usize = STAGE_LOSS_NAMES.len();

/// What one stage needs beyond its layers.
#[derive(Debug, Clone)]
pub struct StageParts {
    extractor: RoiExtractor,
    assigner: MaxIouAssigner,
    sampler: RandomSampler,
    weight: f32,
}

/// Settings of the whole cascade.
#[derive(Debug, Clone)]
pub struct CascadeParts {
    stages: Vec<StageParts>,
    mask_extractor: Option<RoiExtractor>,
    test: RcnnTestConfig,
}

/// The cascade RoI head.
#[derive(Module, Debug)]
pub struct CascadeRoiHead<B: Backend> {
    /// The box head of each stage.
    pub bbox_head: Vec<BBoxHead<B>>,
    /// The mask head of each stage (empty without a mask branch).
    pub mask_head: Vec<FcnMaskHead<B>>,
    parts: CascadeParts,
}

impl CascadeRoiHeadConfig {
    /// Build the head; `train`: one entry per stage.
    ///
    /// # Errors
    /// Stage counts that disagree and out-of-range values, naming the field.
    pub fn init<B: Backend>(
        &self,
        train: &[RcnnTrainConfig],
        test: &RcnnTestConfig,
        level_strides: &[usize],
        device: &B::Device,
    ) -> Result<CascadeRoiHead<B>, ModelError> {
        let n = self.num_stages;
        if n == 0 || n > MAX_STAGES {
            return Err(ModelError(format!(
                "model.roi_head.num_stages: {n}, expected 1 to {MAX_STAGES}"
            )));
        }
        for (field, len) in [
            ("model.roi_head.bbox_head", self.bbox_head.len()),
            ("model.roi_head.stage_loss_weights", self.stage_loss_weights.len()),
            ("model.train_cfg.rcnn", train.len()),
        ] {
            if len != n {
                return Err(ModelError(format!(
                    "{field}: {len} entries for {n} stages (model.roi_head.num_stages)"
                )));
            }
        }
        let strides = &self.bbox_roi_extractor.featmap_strides;
        if !level_strides.starts_with(strides) {
            return Err(ModelError(format!(
                "model.roi_head.bbox_roi_extractor.featmap_strides: {strides:?} are not the first FPN levels \
                 {level_strides:?}"
            )));
        }
        let classes = self.bbox_head[0].num_classes;
        let mut stages = Vec::with_capacity(n);
        let mut bbox_head = Vec::with_capacity(n);
        for (i, (b, t)) in self.bbox_head.iter().zip(train).enumerate() {
            if b.num_classes != classes {
                return Err(ModelError(format!(
                    "model.roi_head.bbox_head.{i}.num_classes: {}, stage 0 has {classes}",
                    b.num_classes
                )));
            }
            bbox_head.push(
                b.init(device)
                    .map_err(|e| ModelError(format!("stage {i}: {e}")))?,
            );
            stages.push(StageParts {
                extractor: self
                    .bbox_roi_extractor
                    .init()
                    .map_err(|e| ModelError(format!("model.roi_head.bbox_roi_extractor: {e}")))?,
                assigner: t
                    .assigner
                    .init()
                    .map_err(|e| ModelError(format!("model.train_cfg.rcnn.{i}.assigner: {e}")))?,
                sampler: t
                    .sampler
                    .init()
                    .map_err(|e| ModelError(format!("model.train_cfg.rcnn.{i}.sampler: {e}")))?,
                weight: self.stage_loss_weights[i] as f32,
            });
        }
        let (mask_head, mask_extractor) = match (&self.mask_head, &self.mask_roi_extractor) {
            (None, _) => (Vec::new(), None),
            (Some(_), None) => {
                return Err(ModelError(
                    "model.roi_head.mask_roi_extractor: the mask head needs its extractor".into(),
                ));
            }
            (Some(m), Some(e)) => (
                (0..n).map(|_| m.init(device)).collect::<Result<Vec<_>, _>>()?,
                Some(
                    e.init()
                        .map_err(|e| ModelError(format!("model.roi_head.mask_roi_extractor: {e}")))?,
                ),
            ),
        };
        Ok(CascadeRoiHead {
            bbox_head,
            mask_head,
            parts: CascadeParts {
                stages,
                mask_extractor,
                test: test.clone(),
            },
        })
    }
}

/// Salt of stage `i`'s sampling stream: stage 0 draws as the standard head does, later stages differently.
fn stage_salt(i: usize) -> u64 {
    RCNN_SAMPLING_SALT ^ ((i as u64) << 40)
}

/// Labels of refinement: each RoI's target class, background RoIs (label `k`) taking the argmax of their
/// foreground logits (mmdetection's `torch.where(labels == num_classes, cls_score[:, :-1].argmax(1), labels)`).
///
/// # Shapes
/// - labels: `[R]`; logits: `[R, K + 1]`; output: `[R]`, all `< K`
pub fn refine_labels<B: Backend>(
    labels: Tensor<B, 1, Int>,
    logits: Tensor<B, 2>,
    k: usize,
) -> Tensor<B, 1, Int> {
    let r = labels.dims()[0];
    if r == 0 {
        return labels;
    }
    let best = foreground_argmax(logits, k);
    let background = labels.clone().equal_elem(k as i64);
    labels.mask_where(background, best)
}

/// The test-time classification input: the mean of the stages' raw logits (mmdetection's `_refine_roi`
/// averages `cls_score` before `predict_by_feat` applies the softmax; not a mean of probabilities).
///
/// # Shapes
/// - stages: S tensors `[R, K + 1]`; output `[R, K + 1]`
pub fn mean_logits<B: Backend>(stages: Vec<Tensor<B, 2>>) -> Option<Tensor<B, 2>> {
    let n = stages.len() as f32;
    stages.into_iter().reduce(|a, b| a + b).map(|s| s / n)
}

/// The best foreground class of each row: `[R, K + 1]` -> `[R]`.
fn foreground_argmax<B: Backend>(logits: Tensor<B, 2>, k: usize) -> Tensor<B, 1, Int> {
    let r = logits.dims()[0];
    logits.slice(s![.., 0..k]).argmax(1).reshape([r])
}

/// mmdetection's `refine_bboxes` for one image: its sampled RoIs `[P + Q, 4]` (positives first) moved by
/// `head` for `labels`, clipped to `img_hw`, the positives that are ground-truth boxes (`pos_is_gt`, `[P]`)
/// dropped. Output `[P + Q - G, 4]`, the next stage's proposals.
pub fn refine_sampled<B: Backend>(
    head: &BBoxHead<B>,
    rois: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    deltas: Tensor<B, 2>,
    pos_is_gt: Tensor<B, 1, Bool>,
    img_hw: [usize; 2],
) -> Result<Tensor<B, 2>, ModelError> {
    let r = rois.dims()[0];
    if r == 0 {
        return Ok(rois);
    }
    let refined = head.regress_by_class(rois, labels, deltas, img_hw)?;
    let is_gt: Vec<bool> = pos_is_gt.into_data().iter::<bool>().collect();
    let keep: Vec<i64> = (0..r as i64)
        .filter(|&i| !is_gt.get(i as usize).copied().unwrap_or(false))
        .collect();
    if keep.len() == r {
        return Ok(refined);
    }
    let device = refined.device();
    let n = keep.len();
    Ok(refined.select(
        0,
        Tensor::<B, 1, Int>::from_data(TensorData::new(keep, [n]), &device),
    ))
}

impl<B: DetBackend> CascadeRoiHead<B> {
    /// The next stage's proposals of each image from this stage's outputs on its samples, detached.
    fn refine_training(
        &self,
        stage: usize,
        samples: &[SamplingResult<B>],
        out: &BoxStageLosses<B>,
        metas: &[&ImageMeta],
    ) -> Result<Vec<Tensor<B, 2>>, ModelError> {
        let head = &self.bbox_head[stage];
        let labels = refine_labels(
            out.targets.labels.clone(),
            out.logits.clone().detach(),
            head.num_classes(),
        );
        let deltas = out.deltas.clone().detach();
        let mut start = 0;
        let mut next = Vec::with_capacity(samples.len());
        for ((s, rois), meta) in samples.iter().zip(sampled_rois(samples)).zip(metas) {
            let r = rois.dims()[0];
            if r == 0 {
                next.push(rois);
                continue;
            }
            let sel = start..start + r;
            start += r;
            next.push(refine_sampled(
                head,
                rois,
                labels.clone().slice(sel.clone()),
                deltas.clone().slice(s![sel, ..]),
                s.pos_is_gt.clone(),
                meta.img_hw(),
            )?);
        }
        Ok(next)
    }
}

impl<B: DetBackend> RoiHead<B> for CascadeRoiHead<B> {
    fn losses(
        &self,
        feats: &[Tensor<B, 4>],
        proposals: &[Proposals],
        gts: &[&GroundTruth],
        seeds: &[u64],
        metas: &[&ImageMeta],
    ) -> Result<RoiLosses<B>, ModelError> {
        let device = feats[0].device();
        let mut priors: Vec<Tensor<B, 2>> = proposals
            .iter()
            .map(|pr| rows_tensor::<B>(&pr.boxes, &device))
            .collect();
        let mut terms = Vec::new();
        let last = self.bbox_head.len() - 1;
        for (i, (head, p)) in self.bbox_head.iter().zip(&self.parts.stages).enumerate() {
            let samples = assign_and_sample(&p.assigner, &p.sampler, priors, gts, seeds, stage_salt(i))?;
            let out = box_stage_losses(head, &p.extractor, feats, &samples)?;
            let [cls, bbox, mask] = STAGE_LOSS_NAMES[i];
            terms.push(out.loss_cls.clone().weighted(cls, p.weight));
            terms.push(out.loss_bbox.clone().weighted(bbox, p.weight));
            if let (Some(m), Some(extractor)) = (self.mask_head.get(i), &self.parts.mask_extractor) {
                terms.push(mask_loss(m, extractor, feats, &samples.0, gts)?.weighted(mask, p.weight));
            }
            if i == last {
                break;
            }
            priors = self.refine_training(i, &samples.0, &out, metas)?;
        }
        Ok(terms)
    }

    fn eval_kinds(&self) -> Vec<EvalKind> {
        if self.mask_head.is_empty() {
            vec![EvalKind::Bbox]
        } else {
            vec![EvalKind::Bbox, EvalKind::Segm]
        }
    }

    fn predict(
        &self,
        feats: &[Tensor<B, 4>],
        proposals: &[Proposals],
        metas: &[&ImageMeta],
    ) -> Result<Vec<Detections>, ModelError> {
        let device = feats[0].device();
        let mut per_image: Vec<Tensor<B, 2>> = proposals
            .iter()
            .map(|pr| rows_tensor::<B>(&pr.boxes, &device))
            .collect();
        let last = self.bbox_head.len() - 1;
        let mut stage_logits = Vec::with_capacity(self.bbox_head.len());
        let mut last_deltas = None;
        for (i, (head, p)) in self.bbox_head.iter().zip(&self.parts.stages).enumerate() {
            let levels = &feats[..p.extractor.config().featmap_strides.len()];
            let pooled = p
                .extractor
                .forward(levels, rois_tensor(&per_image, &device))
                .map_err(|e| ModelError(format!("bbox RoIAlign (stage {i}): {e}")))?;
            let (logits, deltas) = head.forward(pooled);
            stage_logits.push(logits.clone());
            if i == last {
                last_deltas = Some(deltas);
                break;
            }
            // refine every image's RoIs for the next stage with their best foreground class
            let labels = foreground_argmax(logits, head.num_classes());
            let mut start = 0;
            for (rois, meta) in per_image.iter_mut().zip(metas) {
                let r = rois.dims()[0];
                if r == 0 {
                    continue;
                }
                let sel = start..start + r;
                start += r;
                *rois = head.regress_by_class(
                    rois.clone(),
                    labels.clone().slice(sel.clone()),
                    deltas.clone().slice(s![sel, ..]),
                    meta.img_hw(),
                )?;
            }
        }
        let (Some(mean), Some(deltas)) = (mean_logits(stage_logits), last_deltas) else {
            return Ok(vec![Detections::default(); metas.len()]);
        };
        let (mut out, resized) = detect(
            &self.bbox_head[last],
            &per_image,
            mean,
            deltas,
            &self.parts.test,
            metas,
        )?;
        if let Some(extractor) = &self.parts.mask_extractor {
            predict_masks(&self.mask_head, extractor, feats, &resized, metas, &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BBoxHeadConfig;
    use burn::backend::Flex;
    use burn::tensor::activation::softmax;
    use serde_json::{Value, json};

    type F = Flex;

    fn fixture() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cascade.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn rows(v: &Value) -> Vec<Vec<f32>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    }

    fn tensor(v: &Value) -> Tensor<F, 2> {
        let r = rows(v);
        let (n, d) = (r.len(), r.first().map_or(0, Vec::len));
        Tensor::from_data(TensorData::new(r.concat(), [n, d]), &Default::default())
    }

    fn ints(v: &Value) -> Tensor<F, 1, Int> {
        let x: Vec<i64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let n = x.len();
        Tensor::from_data(TensorData::new(x, [n]), &Default::default())
    }

    fn ivec(t: Tensor<F, 1, Int>) -> Vec<i64> {
        t.into_data().iter::<i64>().collect()
    }

    fn close(ours: Tensor<F, 2>, expected: &Value, what: &str) {
        let e = rows(expected);
        assert_eq!(ours.dims(), [e.len(), e[0].len()], "{what}");
        let o: Vec<f32> = ours.into_data().to_vec().unwrap();
        for (i, (a, b)) in o.iter().zip(e.concat()).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    fn head(stds: &Value, agnostic: bool, k: usize) -> BBoxHead<F> {
        let cfg: BBoxHeadConfig = serde_json::from_value(json!({
            "in_channels": 1, "roi_feat_size": 1, "fc_out_channels": 4, "num_classes": k,
            "reg_class_agnostic": agnostic,
            "bbox_coder": {"target_means": [0.0, 0.0, 0.0, 0.0], "target_stds": stds},
            "loss_cls": {}, "loss_bbox": {"type": "SmoothL1Loss", "beta": 1.0}
        }))
        .unwrap();
        cfg.init(&Default::default()).unwrap()
    }

    /// mmdetection's stage-to-stage steps against the torch re-implementation of
    /// `detectors/scripts/make_cascade_fixture.py` (command in the fixture): the labels of refinement, the
    /// refined boxes without the ground-truth-derived positive (class-agnostic at stage 0's stds and
    /// class-specific at stage 1's), their re-assignment at IoU 0.6 and 0.7, and the test scores as the
    /// softmax of the mean logits (which differs from the mean of the softmaxes).
    #[test]
    fn stage_steps_match_mmdetections_formulas() {
        let f = fixture();
        let k = f["num_classes"].as_u64().unwrap() as usize;
        let hw = [
            f["img_hw"][0].as_u64().unwrap() as usize,
            f["img_hw"][1].as_u64().unwrap() as usize,
        ];
        let device = Default::default();
        let labels = refine_labels(ints(&f["labels"]), tensor(&f["logits"]), k);
        assert_eq!(ivec(labels.clone()), ivec(ints(&f["refine_labels"])));
        let is_gt: Vec<bool> = f["pos_is_gt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        let n = is_gt.len();
        let pos_is_gt = Tensor::<F, 1, Bool>::from_data(TensorData::new(is_gt, [n]), &device);
        for (agnostic, stage, deltas, out) in [
            (true, 0, "deltas_agnostic", "refined_agnostic"),
            (false, 1, "deltas_specific", "refined_specific"),
        ] {
            let h = head(&f["stds"][stage], agnostic, k);
            let refined = refine_sampled(
                &h,
                tensor(&f["rois"]),
                labels.clone(),
                tensor(&f[deltas]),
                pos_is_gt.clone(),
                hw,
            )
            .unwrap();
            close(refined, &f[out], out);
        }
        // the refined boxes assigned again at the next stages' thresholds
        let refined = tensor(&f["refined_agnostic"]);
        let gts = tensor(&f["gts"]);
        for thr in ["0.6", "0.7"] {
            let t: f32 = thr.parse().unwrap();
            let assigner = crate::assigners::MaxIouAssignerConfig {
                pos_iou_thr: t,
                neg_iou_thr: crate::assigners::NegIouThr::Below(t),
                min_pos_iou: t,
                gt_max_assign_all: true,
                ignore_iof_thr: -1.0,
                ignore_wrt_candidates: true,
                match_low_quality: false,
            }
            .init()
            .unwrap();
            let a = assigner
                .assign(
                    refined.clone(),
                    gts.clone(),
                    Tensor::zeros([2], &device),
                    None,
                    None,
                )
                .unwrap();
            assert_eq!(
                ivec(a.gt_inds),
                ivec(ints(&f[format!("assign_{thr}")])),
                "IoU {thr}"
            );
        }
        let stages: Vec<Tensor<F, 2>> = f["stage_logits"].as_array().unwrap().iter().map(tensor).collect();
        let scores = softmax(mean_logits(stages).unwrap(), 1);
        close(scores.clone(), &f["mean_logit_scores"], "mean_logit_scores");
        let other = tensor(&f["mean_softmax_scores"]);
        assert!(
            (scores - other).abs().max().into_scalar() > 1e-3,
            "the fixture tells the two averages apart"
        );
    }

    /// No sampled RoI in an image: nothing to refine, an empty `[0, 4]` comes back.
    #[test]
    fn empty_refinement_is_empty() {
        let device = Default::default();
        let h = head(&json!([0.1, 0.1, 0.2, 0.2]), true, 3);
        let out = refine_sampled(
            &h,
            Tensor::<F, 2>::zeros([0, 4], &device),
            Tensor::zeros([0], &device),
            Tensor::zeros([0, 4], &device),
            Tensor::<F, 1, Bool>::empty([0], &device),
            [10, 10],
        )
        .unwrap();
        assert_eq!(out.dims(), [0, 4]);
        let l = refine_labels(
            Tensor::<F, 1, Int>::zeros([0], &device),
            Tensor::zeros([0, 4], &device),
            3,
        );
        assert_eq!(l.dims(), [0]);
        assert!(mean_logits::<F>(Vec::new()).is_none());
    }
}
