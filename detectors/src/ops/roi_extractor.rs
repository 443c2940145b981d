//! Multi-level RoI feature extraction: each RoI is pooled from one pyramid level chosen by its size.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::roi_align::{RoiAlignBackend, RoiAlignOptions, roi_align};
use crate::structures::BlocksError;

fn default_finest_scale() -> f32 {
    56.0
}

/// How a RoI's size selects its level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LevelMapping {
    /// mmdetection `SingleRoIExtractor`: `floor(log2(sqrt(w h) / finest_scale + 1e-6))`, clamped to the levels.
    Mmdet {
        /// Scale of the finest level (56).
        #[serde(default = "default_finest_scale")]
        finest_scale: f32,
    },
    /// torchvision `LevelMapper`: `floor(canonical_level + log2(sqrt(w h) / canonical_scale) + 1e-6)`, clamped to
    /// `[log2(first stride), log2(last stride)]`, relative to the first level.
    Torchvision {
        /// 224.
        canonical_scale: f32,
        /// 4.
        canonical_level: f32,
    },
}

impl Default for LevelMapping {
    fn default() -> Self {
        LevelMapping::Mmdet { finest_scale: 56.0 }
    }
}

/// Configuration of a [`RoiExtractor`].
///
/// mmdetection Faster R-CNN: output 7, sampling ratio 0, aligned, strides `[4, 8, 16, 32]`, `mmdet` mapping.
/// torchvision `MultiScaleRoIAlign`: sampling ratio 2, not aligned, `torchvision` mapping (224, 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoiExtractorConfig {
    /// Output `[height, width]`.
    pub output_size: [usize; 2],
    /// Samples per bin per axis (0 = adaptive).
    #[serde(default)]
    pub sampling_ratio: usize,
    /// Half-pixel alignment.
    #[serde(default)]
    pub aligned: bool,
    /// Stride of each feature level, finest first.
    pub featmap_strides: Vec<usize>,
    /// Level selection.
    #[serde(default)]
    pub mapping: LevelMapping,
}

impl RoiExtractorConfig {
    /// Builds the extractor.
    ///
    /// # Errors
    /// [`BlocksError::Config`] for an empty stride list or a zero output size.
    pub fn init(&self) -> Result<RoiExtractor, BlocksError> {
        if self.featmap_strides.is_empty() || self.featmap_strides.contains(&0) {
            return Err(BlocksError::config(
                "featmap_strides",
                "must be a non-empty list of positive strides",
            ));
        }
        if self.output_size.contains(&0) {
            return Err(BlocksError::config("output_size", "must be positive"));
        }
        Ok(RoiExtractor { cfg: self.clone() })
    }
}

/// Pools each RoI from the level its size maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct RoiExtractor {
    cfg: RoiExtractorConfig,
}

impl RoiExtractor {
    /// The configuration.
    pub fn config(&self) -> &RoiExtractorConfig {
        &self.cfg
    }

    /// Level index (into the feature list) of a box with width `w` and height `h` in image pixels.
    pub fn level_of(&self, w: f32, h: f32) -> usize {
        let levels = self.cfg.featmap_strides.len() as i64;
        let scale = (w * h).sqrt();
        match self.cfg.mapping {
            LevelMapping::Mmdet { finest_scale } => {
                ((scale / finest_scale + 1e-6).log2().floor() as i64).clamp(0, levels - 1) as usize
            }
            LevelMapping::Torchvision {
                canonical_scale,
                canonical_level,
            } => {
                let k_min = (self.cfg.featmap_strides[0] as f32).log2().round() as i64;
                let k_max = (self.cfg.featmap_strides[levels as usize - 1] as f32)
                    .log2()
                    .round() as i64;
                let k = (canonical_level + (scale / canonical_scale).log2() + 1e-6).floor() as i64;
                (k.clamp(k_min, k_max) - k_min) as usize
            }
        }
    }

    /// Pooled features of every RoI, in RoI order.
    ///
    /// # Shapes
    /// - features: one `[N, C, H_l, W_l]` per stride
    /// - rois: `[K, 5]` `(batch_index, x1, y1, x2, y2)` image pixels
    /// - output: `[K, C, out_h, out_w]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the number of levels or the RoI shape is wrong.
    pub fn forward<B: RoiAlignBackend>(
        &self,
        features: &[Tensor<B, 4>],
        rois: Tensor<B, 2>,
    ) -> Result<Tensor<B, 4>, BlocksError> {
        let strides = &self.cfg.featmap_strides;
        if features.len() != strides.len() {
            return Err(BlocksError::shape(
                "features",
                &[features.len()],
                &format!("{} levels (featmap_strides)", strides.len()),
            ));
        }
        if rois.dims()[1] != 5 {
            return Err(BlocksError::shape(
                "rois",
                &rois.dims(),
                "[K, 5] (batch_index, x1, y1, x2, y2)",
            ));
        }
        let k = rois.dims()[0];
        let c = features[0].dims()[1];
        let [oh, ow] = self.cfg.output_size;
        let device = rois.device();
        if k == 0 {
            return Ok(Tensor::zeros([0, c, oh, ow], &device));
        }
        // Levels are decided on the host from the (small) RoI list: one read.
        let rv: Vec<f32> = rois
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        let mut per_level: Vec<Vec<i64>> = vec![Vec::new(); strides.len()];
        for (i, r) in rv.chunks(5).enumerate() {
            per_level[self.level_of(r[3] - r[1], r[4] - r[2])].push(i as i64);
        }
        let mut parts = Vec::new();
        let mut order = Vec::with_capacity(k);
        for (l, idx) in per_level.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let sel = Tensor::<B, 1, Int>::from_data(
                TensorData::new(idx.clone(), [idx.len()]).convert::<B::IntElem>(),
                &device,
            );
            let opts = RoiAlignOptions {
                output_size: self.cfg.output_size,
                spatial_scale: 1.0 / strides[l] as f32,
                sampling_ratio: self.cfg.sampling_ratio,
                aligned: self.cfg.aligned,
            };
            parts.push(roi_align(features[l].clone(), rois.clone().select(0, sel), opts)?);
            order.extend_from_slice(idx);
        }
        // Back to RoI order: position of RoI i in the concatenation.
        let mut inverse = vec![0i64; k];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i as usize] = pos as i64;
        }
        let inverse =
            Tensor::<B, 1, Int>::from_data(TensorData::new(inverse, [k]).convert::<B::IntElem>(), &device);
        // The permutation runs on rows of `C * out_h * out_w`: burn-flex's select backward (`select_add`) has a
        // row-copy path for 2-d tensors only, and its element-wise N-d path cost 8 % of a Cascade R-CNN step.
        let rows = Tensor::cat(parts, 0).reshape([k, c * oh * ow]);
        Ok(rows.select(0, inverse).reshape([k, c, oh, ow]))
    }
}
