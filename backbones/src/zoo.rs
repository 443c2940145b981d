//! The model zoo: a typed architecture per family, parsed from a zoo name, and one enum over all built
//! backbones.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, LoadSummary};
use crate::cost::{CostCounter, CostReport, CountFlops};
use crate::error::BackboneError;
use crate::norm::NormMode;
use crate::resnet::{ResNet, ResNetConfig, key_map as resnet_key_map};
use crate::{Backbone, Classifier, FeatureSpec};

/// A backbone architecture with all its parameters. `serde` form: `{"ResNet": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum BackboneArch {
    /// The ResNet family (plain, attention and DCA versions).
    ResNet(ResNetConfig),
}

/// Examples of accepted names, for help texts.
pub const EXAMPLE_NAMES: &[&str] = &[
    "resnet18",
    "resnet50",
    "resnet152",
    "se_resnet50",
    "eca_resnet50_k3557",
    "cbam_resnet50",
    "gc_resnet50",
    "sk_resnet50",
    "ge_resnet50",
    "dca_se_resnet50",
];

impl BackboneArch {
    /// Parse a zoo name (e.g. `resnet50`, `dca_se_resnet101`, `eca_resnet50_k3557`).
    pub fn parse(name: &str) -> Result<Self, BackboneError> {
        if let Some(cfg) = ResNetConfig::parse(name) {
            return cfg.map(BackboneArch::ResNet);
        }
        Err(BackboneError::UnknownModel {
            name: name.into(),
            reason: format!("not a model of the zoo; examples: {}", EXAMPLE_NAMES.join(", ")),
        })
    }

    /// The zoo name.
    pub fn name(&self) -> String {
        match self {
            BackboneArch::ResNet(c) => c.name(),
        }
    }

    /// The same architecture with `n` classes in its head.
    pub fn with_num_classes(mut self, n: usize) -> Self {
        match &mut self {
            BackboneArch::ResNet(c) => c.num_classes = n,
        }
        self
    }

    /// The family's rename rules from reference checkpoint keys to our module paths.
    pub fn key_map(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            BackboneArch::ResNet(c) => resnet_key_map(c),
        }
    }

    /// Build it with parameters created on first use (cheap when weights are loaded next; loading checks
    /// shapes without creating them). Do not clone the result before its first use: clones of a lazily
    /// initialised module draw different weights.
    pub fn build_lazy<B: Backend>(&self, device: &B::Device) -> Result<AnyBackbone<B>, BackboneError> {
        Ok(match self {
            BackboneArch::ResNet(c) => AnyBackbone::ResNet(ResNet::new(c, device)?),
        })
    }

    /// Build it (freshly initialised weights).
    pub fn build<B: Backend>(&self, device: &B::Device) -> Result<AnyBackbone<B>, BackboneError> {
        let model = self.build_lazy(device)?;
        // burn initialises parameters lazily: materialise now, or clones of the model would each draw their own
        // random weights.
        Ok(model.fork(device))
    }
}

/// Build the backbone a zoo name describes.
pub fn build<B: Backend>(name: &str, device: &B::Device) -> Result<AnyBackbone<B>, BackboneError> {
    BackboneArch::parse(name)?.build(device)
}

/// Any backbone of the zoo.
#[derive(Module, Debug)]
pub enum AnyBackbone<B: Backend> {
    /// The ResNet family.
    ResNet(ResNet<B>),
}

impl<B: Backend> AnyBackbone<B> {
    /// Parameters and FLOPs (ptflops convention) for one `3 x height x width` image.
    pub fn cost(&self, height: usize, width: usize) -> CostReport {
        let mut counter = CostCounter::new();
        match self {
            AnyBackbone::ResNet(m) => m.count_flops(&mut counter, [3, height, width]),
        };
        counter.finish()
    }

    /// Load weights, strictly: our safetensors format by extension `.safetensors`, otherwise a PyTorch file
    /// (reference naming, mapped by `arch`'s key map).
    pub fn load_weights(&mut self, arch: &BackboneArch, path: &Path) -> Result<LoadSummary, BackboneError> {
        checkpoint::load_any(self, path, &arch.key_map(), &arch.name())
    }

    /// Save weights in our safetensors format (atomically).
    pub fn save_weights(&self, path: &Path) -> Result<(), BackboneError> {
        checkpoint::save_safetensors(self, path)
    }
}

impl<B: Backend> Backbone<B> for AnyBackbone<B> {
    fn feature_specs(&self) -> Vec<FeatureSpec> {
        match self {
            AnyBackbone::ResNet(m) => m.feature_specs(),
        }
    }

    fn forward_features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        match self {
            AnyBackbone::ResNet(m) => m.forward_features(x),
        }
    }

    fn with_norm_mode(self, mode: NormMode) -> Self {
        match self {
            AnyBackbone::ResNet(m) => AnyBackbone::ResNet(m.with_norm_mode(mode)),
        }
    }

    fn with_frozen_stages(self, stages: usize) -> Self {
        match self {
            AnyBackbone::ResNet(m) => AnyBackbone::ResNet(m.with_frozen_stages(stages)),
        }
    }
}

impl<B: Backend> Classifier<B> for AnyBackbone<B> {
    fn forward_logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            AnyBackbone::ResNet(m) => m.forward_logits(x),
        }
    }

    fn num_classes(&self) -> usize {
        match self {
            AnyBackbone::ResNet(m) => m.num_classes(),
        }
    }
}
