//! Inference over a dataset split and COCO bbox evaluation with the `attndet-coco` evaluator.

use std::sync::Arc;

use attndet_coco::{CocoDataset, Detection, EvalParams, Evaluation, IouType};
use burn::prelude::*;

use super::trainer::batch_tensor;
use crate::config::ExperimentConfig;
use crate::data::{DetRecord, EpochLoader, ImageError, LoaderOptions};
use crate::models::{Detections, Detector, ModelError};

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
        let dets = model.predict(batch_tensor::<B>(&batch, device), &batch.samples)?;
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

/// The bbox evaluation (pycocotools-exact) of `dets` against `gt`.
pub fn evaluate_bbox(gt: &CocoDataset, dets: &[Detection]) -> Result<Evaluation, EvalError> {
    Ok(attndet_coco::evaluate(gt, dets, &EvalParams::new(IouType::Bbox))?)
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
        };
        let c = to_coco_detections(&[(9, d), (10, Detections::default())], &[3, 8]);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].image_id, c[0].category_id, c[0].bbox, c[0].score),
            (9, 8, [1.0, 2.0, 10.0, 20.0], 0.5)
        );
    }
}
