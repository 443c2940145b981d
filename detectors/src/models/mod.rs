//! Detectors: the trait the engine trains and evaluates, and the models.

use burn::prelude::*;

use crate::data::BatchItem;

pub mod retinanet;
pub use retinanet::RetinaNet;

/// Detections of one image, in the coordinates of the original (unresized, unflipped) image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detections {
    /// Boxes `[x1, y1, x2, y2]` in original-image pixels.
    pub boxes: Vec<[f32; 4]>,
    /// Scores in `[0, 1]`, descending.
    pub scores: Vec<f32>,
    /// 0-based class indices.
    pub labels: Vec<usize>,
}

/// Named loss terms of one batch; the total is their sum.
#[derive(Debug, Clone)]
pub struct Losses<B: Backend> {
    /// `(name, scalar [1])` pairs, e.g. `("loss_cls", ..)`, `("loss_bbox", ..)`.
    pub terms: Vec<(&'static str, Tensor<B, 1>)>,
}

impl<B: Backend> Losses<B> {
    /// Sum of the terms.
    pub fn total(&self) -> Tensor<B, 1> {
        let device = self.terms.first().map(|(_, t)| t.device()).unwrap_or_default();
        self.terms
            .iter()
            .fold(Tensor::zeros([1], &device), |acc, (_, t)| acc + t.clone())
    }
}

/// A model failure caused by its input (wrong shapes, bad annotations).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub String);

/// What the engine needs from a detector.
pub trait Detector<B: Backend> {
    /// Training losses of a batch.
    ///
    /// # Shapes
    /// - images: `[N, 3, H, W]`, normalised and padded; `items`: N entries with boxes in the resized image
    fn losses(&self, images: Tensor<B, 4>, items: &[BatchItem]) -> Result<Losses<B>, ModelError>;

    /// Detections of a batch, mapped back to each original image.
    ///
    /// # Shapes
    /// - images: `[N, 3, H, W]`; output: N entries
    fn predict(&self, images: Tensor<B, 4>, items: &[BatchItem]) -> Result<Vec<Detections>, ModelError>;
}

/// Map a box from the transformed image back to the original: undo the flip (in the resized frame), then the
/// scale, and clip to the original size.
pub fn to_original(b: [f32; 4], meta: &crate::data::transforms::ImageMeta) -> [f32; 4] {
    let (w, _) = meta.img_size;
    let b = if meta.flipped {
        [w as f32 - b[2], b[1], w as f32 - b[0], b[3]]
    } else {
        b
    };
    let (sx, sy) = meta.scale;
    let (ow, oh) = (meta.ori_size.0 as f32, meta.ori_size.1 as f32);
    [
        (b[0] / sx).clamp(0.0, ow),
        (b[1] / sy).clamp(0.0, oh),
        (b[2] / sx).clamp(0.0, ow),
        (b[3] / sy).clamp(0.0, oh),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transforms::ImageMeta;

    #[test]
    fn boxes_map_back_through_scale_and_flip() {
        let meta = ImageMeta {
            image_id: 1,
            file: "x.png".into(),
            ori_size: (100, 50),
            img_size: (200, 100),
            scale: (2.0, 2.0),
            flipped: true,
            pad_size: (224, 128),
        };
        // flipped frame box [20, 10, 60, 30] -> unflipped [200 - 60, 10, 200 - 20, 30] = [140, 10, 180, 30]
        // -> / 2 = [70, 5, 90, 15]
        assert_eq!(
            to_original([20.0, 10.0, 60.0, 30.0], &meta),
            [70.0, 5.0, 90.0, 15.0]
        );
        // clipped to the original size
        assert_eq!(
            to_original(
                [-4.0, 0.0, 210.0, 120.0],
                &ImageMeta {
                    flipped: false,
                    ..meta
                }
            ),
            [0.0, 0.0, 100.0, 50.0]
        );
    }
}
