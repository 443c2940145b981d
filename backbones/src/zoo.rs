//! The model zoo: a typed architecture per family, parsed from a zoo name, and one enum over all built
//! backbones.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, KeyMap, LoadSummary};
use crate::cost::{CostCounter, CostReport, CountFlops};
use crate::error::BackboneError;
use crate::mnasnet::{MnasNet, MnasNetConfig};
use crate::mobilenet_v2::{MobileNetV2, MobileNetV2Config};
use crate::norm::NormMode;
use crate::resnet::{ResNet, ResNetConfig};
use crate::sda::{SdaConfig, SdaNet};
use crate::{Backbone, Classifier, FeatureSpec};

/// A backbone architecture with all its parameters. `serde` form: `{"ResNet": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum BackboneArch {
    /// The ResNet family (plain, attention and DCA versions).
    ResNet(ResNetConfig),
    /// MobileNetV2 with DCANet's and ECANet's attention variants.
    MobileNetV2(MobileNetV2Config),
    /// The SDA-xNet networks (stage-wise depth attention).
    Sda(SdaConfig),
    /// MnasNet with DCANet's attention variants.
    MnasNet(MnasNetConfig),
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
    "mobilenet_v2",
    "dca_se_mobilenet_v2",
    "sda_resnet86",
    "sda_res2net86",
    "pyconvresnet50",
    "dca_se_mnasnet1_0",
];

impl BackboneArch {
    /// Parse a zoo name (e.g. `resnet50`, `dca_se_resnet101`, `eca_resnet50_k3557`).
    pub fn parse(name: &str) -> Result<Self, BackboneError> {
        if let Some(cfg) = ResNetConfig::parse(name) {
            return cfg.map(BackboneArch::ResNet);
        }
        if let Some(cfg) = MobileNetV2Config::parse(name) {
            return cfg.map(BackboneArch::MobileNetV2);
        }
        if let Some(cfg) = SdaConfig::parse(name) {
            return cfg.map(BackboneArch::Sda);
        }
        if let Some(cfg) = MnasNetConfig::parse(name) {
            return cfg.map(BackboneArch::MnasNet);
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
            BackboneArch::MobileNetV2(c) => c.name(),
            BackboneArch::Sda(c) => c.name(),
            BackboneArch::MnasNet(c) => c.name(),
        }
    }

    /// The same architecture with `n` classes in its head.
    pub fn with_num_classes(mut self, n: usize) -> Self {
        match &mut self {
            BackboneArch::ResNet(c) => c.num_classes = n,
            BackboneArch::MobileNetV2(c) => c.num_classes = n,
            BackboneArch::Sda(c) => c.num_classes = n,
            BackboneArch::MnasNet(c) => c.num_classes = n,
        }
        self
    }

    /// The family's rename rules from reference checkpoint keys to our module paths.
    pub fn key_map(&self) -> KeyMap {
        match self {
            BackboneArch::ResNet(c) => c.static_key_map(),
            BackboneArch::MobileNetV2(c) => c.static_key_map(),
            BackboneArch::Sda(c) => c.static_key_map(),
            BackboneArch::MnasNet(c) => c.static_key_map(),
        }
    }

    /// Model paths of the classification head (absent from detection checkpoints).
    pub fn head_paths(&self) -> &'static [&'static str] {
        match self {
            BackboneArch::ResNet(_) => &["fc."],
            BackboneArch::MobileNetV2(_) | BackboneArch::MnasNet(_) => &["classifier."],
            BackboneArch::Sda(_) => &["bn2.", "fc."],
        }
    }

    /// Build it with parameters created on first use (cheap when weights are loaded next: loading checks
    /// shapes without creating them). Do not clone the result before its first use: clones of a lazily
    /// initialised module draw different weights.
    pub fn build_lazy<B: Backend>(&self, device: &B::Device) -> Result<AnyBackbone<B>, BackboneError> {
        Ok(match self {
            BackboneArch::ResNet(c) => AnyBackbone::ResNet(ResNet::new(c, device)?),
            BackboneArch::MobileNetV2(c) => AnyBackbone::MobileNetV2(c.init(device)),
            BackboneArch::Sda(c) => AnyBackbone::Sda(c.init(device)),
            BackboneArch::MnasNet(c) => AnyBackbone::MnasNet(c.init(device)),
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
// Built once per run: the size difference between the families' structs does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyBackbone<B: Backend> {
    /// The ResNet family.
    ResNet(ResNet<B>),
    /// MobileNetV2 and its attention variants.
    MobileNetV2(MobileNetV2<B>),
    /// The SDA-xNet networks.
    Sda(SdaNet<B>),
    /// MnasNet and its attention variants.
    MnasNet(MnasNet<B>),
}

impl<B: Backend> AnyBackbone<B> {
    /// Parameters and FLOPs (ptflops convention) for one `3 x height x width` image.
    pub fn cost(&self, height: usize, width: usize) -> CostReport {
        let mut counter = CostCounter::new();
        match self {
            AnyBackbone::ResNet(m) => m.count_flops(&mut counter, [3, height, width]),
            AnyBackbone::MobileNetV2(m) => m.count_flops(&mut counter, [3, height, width]),
            AnyBackbone::Sda(m) => m.count_flops(&mut counter, [3, height, width]),
            AnyBackbone::MnasNet(m) => m.count_flops(&mut counter, [3, height, width]),
        };
        counter.finish()
    }

    /// Load weights, strictly: our safetensors format by extension `.safetensors`, otherwise a PyTorch file
    /// (reference naming, mapped by `arch`'s key map).
    pub fn load_weights(&mut self, arch: &BackboneArch, path: &Path) -> Result<LoadSummary, BackboneError> {
        checkpoint::load_any(self, path, arch.key_map(), &arch.name(), &checkpoint::Fit::STRICT)
    }

    /// Load backbone weights for detection: strict for the backbone, but the classifier head may be absent,
    /// and a whole detector's checkpoint (mmdetection: `backbone.*` next to `neck.*` and the heads, e.g. one
    /// trained with SDA-xNet's `mmdetection/mmdet/models/backbones/sda*.py`) contributes its `backbone.*`
    /// tensors. Those detection backbones name their layers like the classification networks (mmcv names a
    /// BatchNorm built with postfix `k` `bn{k}`), so the family's key map applies unchanged.
    pub fn load_backbone_weights(
        &mut self,
        arch: &BackboneArch,
        path: &Path,
    ) -> Result<LoadSummary, BackboneError> {
        let fit = checkpoint::Fit::backbone(arch.head_paths());
        checkpoint::load_any(self, path, arch.key_map(), &arch.name(), &fit)
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
            AnyBackbone::MobileNetV2(m) => m.feature_specs(),
            AnyBackbone::Sda(m) => m.feature_specs(),
            AnyBackbone::MnasNet(m) => m.feature_specs(),
        }
    }

    fn forward_features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        match self {
            AnyBackbone::ResNet(m) => m.forward_features(x),
            AnyBackbone::MobileNetV2(m) => m.forward_features(x),
            AnyBackbone::Sda(m) => m.forward_features(x),
            AnyBackbone::MnasNet(m) => m.forward_features(x),
        }
    }

    fn with_norm_mode(self, mode: NormMode) -> Self {
        match self {
            AnyBackbone::ResNet(m) => AnyBackbone::ResNet(m.with_norm_mode(mode)),
            AnyBackbone::MobileNetV2(m) => AnyBackbone::MobileNetV2(Backbone::with_norm_mode(m, mode)),
            AnyBackbone::Sda(m) => AnyBackbone::Sda(Backbone::with_norm_mode(m, mode)),
            AnyBackbone::MnasNet(m) => AnyBackbone::MnasNet(Backbone::with_norm_mode(m, mode)),
        }
    }

    fn with_frozen_stages(self, stages: usize) -> Self {
        match self {
            AnyBackbone::ResNet(m) => AnyBackbone::ResNet(m.with_frozen_stages(stages)),
            AnyBackbone::MobileNetV2(m) => AnyBackbone::MobileNetV2(Backbone::with_frozen_stages(m, stages)),
            AnyBackbone::Sda(m) => AnyBackbone::Sda(Backbone::with_frozen_stages(m, stages)),
            AnyBackbone::MnasNet(m) => AnyBackbone::MnasNet(Backbone::with_frozen_stages(m, stages)),
        }
    }
}

impl<B: Backend> Classifier<B> for AnyBackbone<B> {
    fn forward_logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            AnyBackbone::ResNet(m) => m.forward_logits(x),
            AnyBackbone::MobileNetV2(m) => m.forward_logits(x),
            AnyBackbone::Sda(m) => m.forward_logits(x),
            AnyBackbone::MnasNet(m) => m.forward_logits(x),
        }
    }

    fn num_classes(&self) -> usize {
        match self {
            AnyBackbone::ResNet(m) => m.num_classes(),
            AnyBackbone::MobileNetV2(m) => m.num_classes(),
            AnyBackbone::Sda(m) => m.num_classes(),
            AnyBackbone::MnasNet(m) => m.num_classes(),
        }
    }
}
