//! Attention-enhanced CNN backbones on burn.
//!
//! A backbone maps an image batch `[N, 3, H, W]` to multi-level features (C2..C5 for the ResNet family),
//! and describes those levels with [`FeatureSpec`]s that necks and heads read to size themselves.
//! Classification (pool + fc) is a head on top, used for ImageNet-style evaluation and checkpoint parity.
//!
//! # Using the zoo
//! ```no_run
//! use attndet_backbones::{Backbone, BackboneArch, Classifier};
//! # fn main() -> Result<(), attndet_backbones::BackboneError> {
//! type B = burn::backend::Flex;
//! let device = Default::default();
//! let arch = BackboneArch::parse("dca_se_resnet50")?;
//! let mut model = arch.build::<B>(&device)?;
//! model.load_weights(&arch, std::path::Path::new("dca_se_resnet50.pth.tar"))?; // strict
//! let model = model.with_frozen_stages(1).with_norm_mode(attndet_backbones::NormMode::Frozen);
//! println!("{:?} {}", model.feature_specs(), model.cost(224, 224).flops);
//! # Ok(()) }
//! ```
//!
//! # How a family plugs in
//! A family (e.g. `resnet`, `mobilenet_v2`) lives in its own module and provides:
//! 1. a typed config (`serde`, `deny_unknown_fields`) with `parse(name) -> Option<Result<Config, BackboneError>>`
//!    (`None`: "not my name") and `name()`, and a variant of [`BackboneArch`] holding it; add the `parse` call
//!    to [`BackboneArch::parse`] and arms to the other `match`es of [`zoo`];
//! 2. the network as a burn `Module` whose field paths follow the reference `state_dict` keys, with a
//!    [`checkpoint::KeyMap`] (regex -> replacement) for the keys that differ (e.g. `downsample.0.` ->
//!    `downsample.conv.`); burn's PyTorch adapter already turns norm `weight`/`bias` into `gamma`/`beta` and
//!    transposes Linear weights, so keep stock `BatchNorm`/`LayerNorm`/`Linear` modules; a variant of
//!    [`AnyBackbone`] holding it;
//! 3. [`Backbone`] (features, `with_norm_mode`, `with_frozen_stages`; BatchNorm layers call
//!    [`norm::batch_norm`] with the mode), [`Classifier`], and [`cost::CountFlops`]: walk the layers in forward
//!    order and call the [`cost::CostCounter`] method named after the PyTorch module the reference calls
//!    there (its convention is documented in [`cost`]); record modules that exist but are not called with
//!    [`cost::CostCounter::idle`] so that the rows add up to the parameter count.
//!
//! Checkpoint loading ([`checkpoint`]) and `attndet classify/flops/convert` then work for the new family with
//! no further code.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cost;
pub mod error;
pub mod formula;
pub mod fused;
pub mod kernels;
pub mod layers;
pub mod mnasnet;
pub mod mobile_attention;
pub mod mobile_layers;
pub mod mobilenet_v2;
pub mod norm;
pub mod panics;
pub mod resnet;
pub mod sda;
pub mod zoo;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use error::{BackboneError, KeyMismatch};
pub use norm::NormMode;
pub use zoo::{AnyBackbone, BackboneArch, build};

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

    /// Use `mode` for the BatchNorm layers that are not frozen (`NormMode::Frozen` = mmdetection's `norm_eval`).
    fn with_norm_mode(self, mode: NormMode) -> Self
    where
        Self: Sized;

    /// Freeze the stem and the first `stages` stages (mmdetection's `frozen_stages`; 0 = stem only): their
    /// parameters get no gradient and their BatchNorm layers use running statistics. Call after loading weights.
    fn with_frozen_stages(self, stages: usize) -> Self
    where
        Self: Sized;
}

/// A backbone with an image-classification head (global average pool + fully connected).
pub trait Classifier<B: Backend> {
    /// Class logits (before softmax).
    ///
    /// # Shapes
    /// - input: `[N, 3, H, W]`, normalised RGB
    /// - output: `[N, num_classes]`
    fn forward_logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;

    /// Number of classes of the head.
    fn num_classes(&self) -> usize;
}
