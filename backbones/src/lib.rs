//! Attention-enhanced CNN backbones on burn.
//!
//! A backbone maps an image batch `[N, 3, H, W]` to multi-level features (C2..C5 for the ResNet family),
//! and describes those levels with [`FeatureSpec`]s that necks and heads read to size themselves.
//! Classification (pool + fc) is a head on top, used for ImageNet-style evaluation and checkpoint parity.
#![warn(missing_docs)]

pub mod norm;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use norm::NormMode;

/// One output level of a backbone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Level name, e.g. `"c2"` .. `"c5"`.
    pub name: String,
    /// Number of channels of the feature map.
    pub channels: usize,
    /// Total stride with respect to the input image (4, 8, 16, 32 for C2..C5).
    pub stride: usize,
}

impl FeatureSpec {
    /// A spec named `c{log2(stride)}`, the usual name of a level of stride `stride`.
    pub fn level(channels: usize, stride: usize) -> Self {
        Self {
            name: format!("c{}", stride.trailing_zeros()),
            channels,
            stride,
        }
    }
}

/// The contract between a backbone and the detector built on it.
pub trait Backbone<B: Backend> {
    /// The output levels of [`Backbone::forward_features`], finest first.
    fn feature_specs(&self) -> Vec<FeatureSpec>;

    /// Multi-level features.
    ///
    /// # Shapes
    /// - input: `[N, 3, H, W]`, normalised RGB
    /// - output: one tensor per [`FeatureSpec`], `[N, C_i, ceil(H / s_i), ceil(W / s_i)]` (up to the exact
    ///   rounding of each network's strided layers)
    fn forward_features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>>;
}
