//! Inference over a dataset split and COCO bbox evaluation with the `attndet-coco` evaluator.

use std::collections::BTreeMap;
use std::sync::Arc;

use attndet_coco::{CocoDataset, Detection, EvalParams, Evaluation, IouType};
use burn::prelude::*;

use super::trainer::batch_tensor;
use crate::config::ExperimentConfig;
use crate::data::{DetRecord, EpochLoader, ImageError, LoaderOptions};
use crate::models::{Detections, Detector, EvalKind, ModelError};

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An image could not be read.
    #[error(transparent)]
    Data(#[from] ImageError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The COCO evaluator failed.
    #[error("COCO evaluation: {0}")]
    Coco(#[from] attndet_coco::CocoError),
}

/// Loader options for inference: dataset order, no flip.
pub fn test_loader_options(cfg: &ExperimentConfig) -> LoaderOptions {
    LoaderOptions {
        batch_size: cfg.data.batch_size,
        num_workers: cfg.data.num_workers,
        prefetch: cfg.data.prefetch,
        shuffle: false,
        group_by_aspect_ratio: false,
        skip_bad_images: cfg.data.skip_bad_images,
        flip_prob: 0.0,
        pipeline: cfg.data.pipeline.clone(),
        seed: cfg.seed,
        with_masks: false,
    }
}

/// Run `model` over `records`; `progress(done, total)` is called after each batch.
pub fn predict_records<B: Backend, M: Detector<B>>(
    model: &M,
    records: Arc<Vec<DetRecord>>,
    opts: &LoaderOptions,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<(u64, Detections)>, EvalError> {
    let total = records.len();
    let mut out = Vec::with_capacity(total);
    for batch in EpochLoader::start(records, opts, 0, 0) {
        let batch = batch?;
        let metas: Vec<_> = batch.samples.iter().map(|s| s.meta.clone()).collect();
        let dets = model.predict(batch_tensor::<B>(&batch, device), &metas)?;
        out.extend(batch.samples.iter().map(|s| s.meta.image_id).zip(dets));
        progress(out.len(), total);
    }
    Ok(out)
}

/// COCO result entries (`[x, y, w, h]`, category ids) from per-image detections.
pub fn to_coco_detections(dets: &[(u64, Detections)], category_ids: &[u64]) -> Vec<Detection> {
    dets.iter()
        .flat_map(|(image_id, d)| {
            d.boxes
                .iter()
                .zip(&d.scores)
                .zip(&d.labels)
                .map(move |((b, &s), &l)| {
                    let xywh = [
                        b[0] as f64,
                        b[1] as f64,
                        (b[2] - b[0]) as f64,
                        (b[3] - b[1]) as f64,
                    ];
                    Detection::from_bbox(*image_id, category_ids[l], xywh, s as f64)
                })
        })
        .collect()
}

/// COCO segm result entries (compressed RLE under `segmentation`, the box and score alongside) from
/// per-image detections with masks.
///
/// # Errors
/// [`EvalError::Model`] when a detection has no mask.
pub fn to_coco_segmentations(
    dets: &[(u64, Detections)],
    category_ids: &[u64],
) -> Result<Vec<Detection>, EvalError> {
    let mut out = Vec::new();
    for (image_id, d) in dets {
        let masks = d.masks.as_ref().ok_or_else(|| {
            EvalError::Model(ModelError(
                "segm evaluation: this detector predicts no masks".into(),
            ))
        })?;
        for (((b, &s), &l), m) in d.boxes.iter().zip(&d.scores).zip(&d.labels).zip(masks) {
            let xywh = [
                b[0] as f64,
                b[1] as f64,
                (b[2] - b[0]) as f64,
                (b[3] - b[1]) as f64,
            ];
            let mut det = Detection::from_bbox(*image_id, category_ids[l], xywh, s as f64);
            det.area = m.area() as f64;
            det.segmentation = Some(attndet_coco::results::compressed_segmentation(m));
            out.push(det);
        }
    }
    Ok(out)
}

/// The bbox evaluation (pycocotools-exact) of `dets` against `gt`.
pub fn evaluate_bbox(gt: &CocoDataset, dets: &[Detection]) -> Result<Evaluation, EvalError> {
    Ok(attndet_coco::evaluate(gt, dets, &EvalParams::new(IouType::Bbox))?)
}

/// Evaluation results keyed by what was evaluated: the 12 COCO stats for bbox and segm, mmdetection's six
/// proposal figures (AR@100/300/1000, AR_s/m/l@1000) for proposals.
pub type EvalResults = BTreeMap<EvalKind, Vec<f64>>;

/// One evaluated kind: the evaluation (for its printable summary), its stats, and the results it scored.
#[derive(Debug)]
pub struct KindEvaluation {
    /// What was evaluated.
    pub kind: EvalKind,
    /// The full evaluation.
    pub evaluation: Evaluation,
    /// Its stats (see [`EvalResults`]).
    pub stats: Vec<f64>,
    /// The COCO results entries that were scored.
    pub results: Vec<Detection>,
}

/// Evaluate per-image detections against `gt` for each of `kinds`, on every image of `gt`.
///
/// # Errors
/// [`EvalError::Model`] when segm is asked of detections without masks; evaluator errors.
pub fn evaluate_kinds(
    gt: &CocoDataset,
    preds: &[(u64, Detections)],
    category_ids: &[u64],
    kinds: &[EvalKind],
) -> Result<Vec<KindEvaluation>, EvalError> {
    evaluate_kinds_on(gt, preds, category_ids, kinds, None)
}

/// [`evaluate_kinds`] on the images `image_ids` only (pycocotools' `params.imgIds`; `None`: every image),
/// e.g. leaving out images that could not be read.
///
/// # Errors
/// As [`evaluate_kinds`].
pub fn evaluate_kinds_on(
    gt: &CocoDataset,
    preds: &[(u64, Detections)],
    category_ids: &[u64],
    kinds: &[EvalKind],
    image_ids: Option<Vec<u64>>,
) -> Result<Vec<KindEvaluation>, EvalError> {
    kinds
        .iter()
        .map(|&kind| {
            let (results, params) = match kind {
                EvalKind::Bbox => (
                    to_coco_detections(preds, category_ids),
                    EvalParams::new(IouType::Bbox),
                ),
                EvalKind::Proposal => {
                    // class-agnostic: every proposal counts for the first category, categories pooled
                    let first = category_ids.first().copied().unwrap_or(1);
                    let agnostic: Vec<(u64, Detections)> = preds
                        .iter()
                        .map(|(id, d)| {
                            (
                                *id,
                                Detections {
                                    labels: vec![0; d.len()],
                                    ..d.clone()
                                },
                            )
                        })
                        .collect();
                    (to_coco_detections(&agnostic, &[first]), EvalParams::proposals())
                }
                EvalKind::Segm => (
                    to_coco_segmentations(preds, category_ids)?,
                    EvalParams::new(IouType::Segm),
                ),
            };
            let params = EvalParams {
                image_ids: image_ids.clone(),
                ..params
            };
            let evaluation = attndet_coco::evaluate(gt, &results, &params)?;
            let stats = match kind {
                EvalKind::Proposal => evaluation.proposal_stats(),
                _ => evaluation.stats.clone(),
            };
            Ok(KindEvaluation {
                kind,
                evaluation,
                stats,
                results,
            })
        })
        .collect()
}

/// Names of the proposal stats ([`Evaluation::proposal_stats`]), in order.
pub const PROPOSAL_STAT_NAMES: [&str; 6] = [
    "AR@100",
    "AR@300",
    "AR@1000",
    "AR_s@1000",
    "AR_m@1000",
    "AR_l@1000",
];

/// A printable summary of one evaluated kind: the COCO table, or the proposal recall lines.
pub fn summary_text(e: &KindEvaluation) -> String {
    match e.kind {
        EvalKind::Proposal => PROPOSAL_STAT_NAMES
            .iter()
            .zip(&e.stats)
            .map(|(n, v)| format!(" {n:<10} = {v:.3}\n"))
            .collect(),
        _ => e.evaluation.summary(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_become_xywh_with_category_ids() {
        let d = Detections {
            boxes: vec![[1.0, 2.0, 11.0, 22.0]],
            scores: vec![0.5],
            labels: vec![1],
            masks: None,
        };
        let c = to_coco_detections(&[(9, d), (10, Detections::default())], &[3, 8]);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].image_id, c[0].category_id, c[0].bbox, c[0].score),
            (9, 8, [1.0, 2.0, 10.0, 20.0], 0.5)
        );
    }
}
