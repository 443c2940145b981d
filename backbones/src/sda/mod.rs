//! SDA-xNet: stage-wise depth attention (`QingbeiGuo/SDA-xNet`), and the plain baselines it is compared with.
//!
//! Each stage runs its blocks, keeps every block's pre-activation output `Z_i` (the residual sum before the
//! ReLU), and fuses them with a softmax over depth: `u = GAP(sum_i Z_i)`, `v = ReLU(BN(conv1x1(u)))`,
//! `a_i = softmax_i(fc_i(v))` per channel, stage output `ReLU(sum_i a_i * Z_i)`. Blocks still chain as usual
//! (block `i + 1` reads `ReLU(Z_i)`). Without depth attention (the plain baselines) a stage is just its blocks.
//!
//! Reference files (the 86-layer networks are the references' `[5, 6, 12, 5]` depths):
//! - `SDA-ResNet/models/resnet/resnet_at.py` `resnet50` = SDA-ResNet-86: Bottleneck, grouped 3x3 (8 groups);
//! - `SDA-SENet/models/senet/se_resnet_at.py` `se_resnet_50`: ungrouped 3x3, SE (reduction 16) in each block;
//! - `SDA-Res2Net/models/res2net/res2net_at.py` `res2net50`: Bottle2neck 26w x 4s; plain `res2net50` (`[3, 4,
//!   6, 3]`, `layer1..4`, no `bn2`) is `res2net.py` `res2net50`;
//! - `SDA-PyConv/models/resnet_pyconv/resnet_pyconv_at.py` `pyconvresnet50`: PyConvBlock, no stem max-pool
//!   (every stage strides by 2); plain `pyconvresnet50` is `resnet_pyconv.py`'s `PyConvResNet(PyConvBlock,
//!   [3, 4, 6, 3])` (the PyConv paper's network; that file's own `pyconvresnet50` was edited to the 86-layer
//!   depths).
//!
//! The SDA classifiers are pooling, then BatchNorm2d (`bn2`), then Linear; the plain ones pool then Linear. The
//! detection versions (`mmdetection/mmdet/models/backbones/sda*.py`) are the same networks returning the four
//! stage outputs (C2..C5, [`Backbone::forward_features`]) under the same state_dict names minus the classifier
//! (mmcv names a BatchNorm built with postfix `k` `bn{k}`; `norm1..3` are only property names there);
//! [`crate::AnyBackbone::load_backbone_weights`] imports them, also from a whole detector's checkpoint.

mod block;
pub mod explain;

pub use block::{BlockSe, Res2Split, SdaBottleneck};

use burn::module::Module;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};
use serde::{Deserialize, Serialize};

use crate::checkpoint::KeyMap;
use crate::cost::{Chw, CostCounter, CountFlops, parameter_count};
use crate::error::BackboneError;
use crate::fused::{self, conv_bn_act};
use crate::mobile_layers::{
    Activation, ConvBnAct, bn_flops, conv_flops, conv_out, conv2d, global_avg, leak_key_map, linear_flops,
};
use crate::norm::{NormMode, batch_norm};
use crate::{Backbone, Classifier, FeatureSpec};

/// Which block the network is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SdaVariant {
    /// SDA-ResNet: bottlenecks with a grouped (8 groups) 3x3 convolution.
    ResNet,
    /// SDA-SENet: ungrouped bottlenecks with squeeze-and-excitation (reduction 16).
    SeResNet,
    /// Res2Net 26w x 4s: hierarchical split 3x3 convolutions.
    Res2Net,
    /// PyConvResNet: pyramidal convolutions (kernels 3..9), no stem max-pool.
    PyConv,
}

fn yes() -> bool {
    true
}

/// Architecture of an SDA network or of its plain baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdaConfig {
    /// The block.
    pub variant: SdaVariant,
    /// Blocks per stage (`[5, 6, 12, 5]` for the 86-layer networks, `[3, 4, 6, 3]` for the 50-layer ones).
    pub depths: [usize; 4],
    /// Classes of the classification head.
    pub num_classes: usize,
    /// Stage-wise depth attention (and the classifier's `bn2`); `false`: the plain baseline.
    #[serde(default = "yes")]
    pub depth_attention: bool,
}

/// Depth-attention reduction `r` and minimum width `L` of the reference code.
const REDUCTION: usize = 16;
const MIN_WIDTH: usize = 64;

/// Zoo names of this family.
const NAMES: &str =
    "sda_resnet86, sda_se_resnet86, sda_res2net86, sda_pyconvresnet86, res2net50, pyconvresnet50";

impl SdaConfig {
    /// The 86-layer SDA network of `variant`.
    pub fn depth86(variant: SdaVariant, num_classes: usize) -> Self {
        Self {
            variant,
            depths: [5, 6, 12, 5],
            num_classes,
            depth_attention: true,
        }
    }

    /// The plain 50-layer baseline of `variant` (`res2net50`, `pyconvresnet50`).
    pub fn plain50(variant: SdaVariant, num_classes: usize) -> Self {
        Self {
            variant,
            depths: [3, 4, 6, 3],
            num_classes,
            depth_attention: false,
        }
    }

    /// Parse a zoo name: `sda_resnet86`, `sda_se_resnet86`, `sda_res2net86`, `sda_pyconvresnet86`, `res2net50`,
    /// `pyconvresnet50` (`None`: not a name of this family).
    pub fn parse(name: &str) -> Option<Result<Self, BackboneError>> {
        let unknown = || {
            Some(Err(BackboneError::UnknownModel {
                name: name.into(),
                reason: format!("SDA networks and their baselines: {NAMES}"),
            }))
        };
        if let Some(rest) = name.strip_prefix("sda_") {
            let variant = match rest {
                "resnet86" => SdaVariant::ResNet,
                "se_resnet86" => SdaVariant::SeResNet,
                "res2net86" => SdaVariant::Res2Net,
                "pyconvresnet86" => SdaVariant::PyConv,
                _ => return unknown(),
            };
            return Some(Ok(Self::depth86(variant, 1000)));
        }
        match name {
            "res2net50" => Some(Ok(Self::plain50(SdaVariant::Res2Net, 1000))),
            "pyconvresnet50" => Some(Ok(Self::plain50(SdaVariant::PyConv, 1000))),
            _ if name.starts_with("res2net") || name.starts_with("pyconvresnet") => unknown(),
            _ => None,
        }
    }

    /// [`SdaConfig::key_map`] as the zoo's static [`KeyMap`].
    pub fn static_key_map(&self) -> KeyMap {
        leak_key_map(&format!("sda:{}", self.name()), || self.key_map())
    }

    /// The model name (`sda_resnet86`, `sda_se_resnet86`, `sda_res2net86`, `sda_pyconvresnet86`, `res2net50`,
    /// `pyconvresnet50`).
    pub fn name(&self) -> String {
        let depth = 2 + 3 * self.depths.iter().sum::<usize>();
        let prefix = if self.depth_attention { "sda_" } else { "" };
        let body = match self.variant {
            SdaVariant::ResNet => "resnet",
            SdaVariant::SeResNet => "se_resnet",
            SdaVariant::Res2Net => "res2net",
            SdaVariant::PyConv => "pyconvresnet",
        };
        format!("{prefix}{body}{depth}")
    }

    /// Build the network with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SdaNet<B> {
        let pyconv = self.variant == SdaVariant::PyConv;
        let mut cin = 64;
        let stages = (0..4)
            .map(|s| {
                let planes = 64 << s;
                // PyConvResNet has no stem max-pool: its first stage strides instead.
                let stride = if s == 0 && !pyconv { 1 } else { 2 };
                let stage = SdaStage::new(self, s, cin, planes, stride, device);
                cin = planes * 4;
                stage
            })
            .collect();
        SdaNet {
            conv1: conv2d(3, 64, 7, 2, 1, 1, false, device),
            bn1: BatchNormConfig::new(64).init(device),
            maxpool: (!pyconv).then(|| {
                MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init()
            }),
            stages,
            bn2: self
                .depth_attention
                .then(|| BatchNormConfig::new(2048).init(device)),
            fc: LinearConfig::new(2048, self.num_classes).init(device),
            norm: NormMode::Auto,
            frozen_stages: None,
        }
    }

    /// Key map from the reference `state_dict` keys to this crate's module paths (`(regex, replacement)` pairs
    /// applied in order).
    pub fn key_map(&self) -> Vec<(String, String)> {
        let mut map: Vec<(String, String)> = (1..=4)
            .map(|s| {
                if self.depth_attention {
                    (format!(r"^stage{s}\."), format!("stages.{}.", s - 1))
                } else {
                    (format!(r"^layer{s}\."), format!("stages.{}.layers.", s - 1))
                }
            })
            .collect();
        map.push((r"\.fc\.0\.".into(), ".fc.conv.".into()));
        map.push((r"\.fc\.1\.".into(), ".fc.bn.".into()));
        if self.variant == SdaVariant::PyConv {
            // Sequential(MaxPool2d, conv1x1, BN): the pool has no parameters.
            map.push((r"\.downsample\.1\.".into(), ".downsample.conv.".into()));
            map.push((r"\.downsample\.2\.".into(), ".downsample.bn.".into()));
            for level in 1..=4 {
                map.push((
                    format!(r"\.conv2\.conv2_{level}\."),
                    format!(".conv2.{}.", level - 1),
                ));
            }
        } else {
            map.push((r"\.downsample\.0\.".into(), ".downsample.conv.".into()));
            map.push((r"\.downsample\.1\.".into(), ".downsample.bn.".into()));
        }
        // A single middle convolution is level 0 of `conv2`.
        map.push((r"\.conv2\.weight$".into(), ".conv2.0.weight".into()));
        // Res2Net's split convolutions.
        map.push((r"\.(convs|bns)\.".into(), ".res2.$1.".into()));
        // SDA-SENet keeps its SE layers directly in the block.
        map.push((r"(\.layers\.\d+)\.(fc\d)\.".into(), "$1.se.$2.".into()));
        map
    }
}

/// One stage: its blocks plus the depth attention over their outputs.
#[derive(Module, Debug)]
pub struct SdaStage<B: Backend> {
    /// The blocks (reference `layers`, or the plain networks' `layerN`).
    pub layers: Vec<SdaBottleneck<B>>,
    /// `conv1x1(C -> d) + BN + ReLU` on the pooled sum (reference `fc`; none without depth attention).
    pub fc: Option<ConvBnAct<B>>,
    /// One `conv1x1(d -> C)` (with bias) per block: the depth-attention logits (reference `fcs`).
    pub fcs: Vec<burn::nn::conv::Conv2d<B>>,
}

impl<B: Backend> SdaStage<B> {
    fn new(
        config: &SdaConfig,
        stage: usize,
        cin: usize,
        planes: usize,
        stride: usize,
        device: &B::Device,
    ) -> Self {
        let cout = planes * 4;
        let blocks = config.depths[stage];
        let d = (cout / REDUCTION).max(MIN_WIDTH);
        let attention = config.depth_attention;
        Self {
            layers: (0..blocks)
                .map(|i| {
                    if i == 0 {
                        SdaBottleneck::new(config.variant, stage, cin, planes, stride, device)
                    } else {
                        SdaBottleneck::new(config.variant, stage, cout, planes, 1, device)
                    }
                })
                .collect(),
            fc: attention.then(|| ConvBnAct::new(cout, d, 1, 1, 1, Activation::Relu, device)),
            fcs: (0..blocks)
                .filter(|_| attention)
                .map(|_| conv2d(d, cout, 1, 1, 1, 1, true, device))
                .collect(),
        }
    }

    /// The stage output and its depth-attention weights (none without depth attention).
    ///
    /// # Shapes
    /// - `x`: `[N, cin, H, W]` -> output `[N, C, H / s, W / s]`, weights `[N, blocks, C]`
    fn forward(&self, x: Tensor<B, 4>, norm: NormMode) -> (Tensor<B, 4>, Option<Tensor<B, 3>>) {
        let Some(fc) = &self.fc else {
            let x = self
                .layers
                .iter()
                .fold(x, |x, block| relu(block.forward(x, norm)));
            return (x, None);
        };
        let mut outputs = Vec::with_capacity(self.layers.len());
        let mut x = x;
        for block in &self.layers {
            let z = block.forward(x, norm);
            x = relu(z.clone());
            outputs.push(z);
        }
        let [n, c, h, w] = outputs[0].dims();
        let sum = outputs
            .iter()
            .skip(1)
            .fold(outputs[0].clone(), |acc, z| acc + z.clone());
        let v = fc.forward(global_avg(sum).reshape([n, c, 1, 1]), norm);
        let logits: Vec<Tensor<B, 3>> = self
            .fcs
            .iter()
            .map(|fc| fc.forward(v.clone()).reshape([n, 1, c]))
            .collect();
        let weights = softmax(Tensor::cat(logits, 1), 1);
        let k = outputs.len();
        let stacked = Tensor::stack::<5>(outputs, 1);
        let fused = (stacked * weights.clone().reshape([n, k, c, 1, 1]))
            .sum_dim(1)
            .reshape([n, c, h, w]);
        (relu(fused), Some(weights))
    }

    /// FLOPs of the depth attention on a stage output of `hw` (zero without it).
    fn attention_flops(&self, hw: [usize; 2]) -> u64 {
        let Some(fc) = &self.fc else {
            return 0;
        };
        let c = self.layers[0].out_channels();
        // AdaptiveAvgPool2d counts its input; then the fc unit and the per-block 1x1 convs on a 1x1 map.
        (c * hw[0] * hw[1]) as u64
            + fc.flops([1, 1]).0
            + self.fcs.iter().map(|fc| conv_flops(fc, [1, 1]).0).sum::<u64>()
    }
}

/// An SDA network (or its plain baseline) with its classification head.
#[derive(Module, Debug)]
pub struct SdaNet<B: Backend> {
    /// 7x7 stride-2 stem convolution.
    pub conv1: burn::nn::conv::Conv2d<B>,
    /// Stem BN.
    pub bn1: BatchNorm<B>,
    /// Stem max-pool (none for PyConvResNet).
    maxpool: Option<MaxPool2d>,
    /// The four stages (reference `stage1..stage4`, or `layer1..layer4`).
    pub stages: Vec<SdaStage<B>>,
    /// BatchNorm after the classifier's pooling (SDA networks only).
    pub bn2: Option<BatchNorm<B>>,
    /// Classifier.
    pub fc: Linear<B>,
    norm: NormMode,
    /// The stem and stages `1..=k` are frozen (no gradients, running BatchNorm statistics).
    frozen_stages: Option<usize>,
}

/// What `forward_explained` returns: the four stage outputs and each stage's depth-attention weights (empty for
/// the plain networks).
pub type Explained<B> = (Vec<Tensor<B, 4>>, Vec<Tensor<B, 3>>);

impl<B: Backend> SdaNet<B> {
    /// Set how the BatchNorm layers normalise (mmdetection's `norm_eval` is [`NormMode::Frozen`]).
    pub fn with_norm_mode(mut self, norm: NormMode) -> Self {
        self.norm = norm;
        self
    }

    /// Freeze the stem and the first `stages` stages (mmdetection's `frozen_stages`; 0 = stem only).
    pub fn with_frozen_stages(mut self, stages: usize) -> Self {
        let stages = stages.min(4);
        self.conv1 = self.conv1.no_grad();
        self.bn1 = self.bn1.no_grad();
        self.stages = self
            .stages
            .into_iter()
            .enumerate()
            .map(|(i, s)| if i < stages { s.no_grad() } else { s })
            .collect();
        self.frozen_stages = Some(stages);
        self
    }

    /// Stage outputs (C2..C5) and the depth-attention weights of each stage (`[N, blocks, C]`, summing to 1
    /// over blocks; none for the plain networks).
    pub fn forward_explained(&self, x: Tensor<B, 4>) -> Explained<B> {
        let frozen = |stage: usize| match self.frozen_stages {
            Some(k) if stage <= k => NormMode::Frozen,
            _ => self.norm,
        };
        let mut x = conv_bn_act(&self.conv1, Some(&self.bn1), x, frozen(0), Activation::Relu);
        if let Some(pool) = &self.maxpool {
            x = fused::max_pool(pool, x);
        }
        let mut levels = Vec::with_capacity(4);
        let mut weights = Vec::with_capacity(4);
        for (i, stage) in self.stages.iter().enumerate() {
            let (y, w) = stage.forward(x, frozen(i + 1));
            levels.push(y.clone());
            weights.extend(w);
            x = y;
        }
        (levels, weights)
    }

    /// The classifier on the last stage output: global average pool, `bn2` (SDA networks), Linear. The
    /// reference SDA-ResNet/SENet pool with AvgPool2d(7) (global at 224x224); this pools globally, which is
    /// the same at 224x224 and keeps other input sizes meaningful.
    ///
    /// # Shapes
    /// - `last`: `[N, 2048, h, w]` -> `[N, num_classes]`
    pub fn head(&self, last: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, _, _] = last.dims();
        let mut pooled = global_avg(last).reshape([n, c, 1, 1]);
        if let Some(bn2) = &self.bn2 {
            pooled = batch_norm(bn2, pooled, self.norm);
        }
        self.fc.forward(pooled.reshape([n, c]))
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, H, W]` -> `[N, num_classes]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let last = self.forward_explained(x).0.pop().expect("four stages");
        self.head(last)
    }
}

impl<B: Backend> Backbone<B> for SdaNet<B> {
    fn feature_specs(&self) -> Vec<FeatureSpec> {
        (0..4).map(|s| FeatureSpec::level(256 << s, 4 << s)).collect()
    }

    fn forward_features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        self.forward_explained(x).0
    }

    fn with_norm_mode(self, mode: NormMode) -> Self {
        SdaNet::with_norm_mode(self, mode)
    }

    fn with_frozen_stages(self, stages: usize) -> Self {
        SdaNet::with_frozen_stages(self, stages)
    }
}

impl<B: Backend> Classifier<B> for SdaNet<B> {
    fn forward_logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(x)
    }

    fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }
}

impl<B: Backend> CountFlops for SdaNet<B> {
    /// One row for the stem (conv, BN, ReLU, max-pool), one per block, one per stage's depth attention, then
    /// the head's pooling (+ BN) and the classifier.
    fn count_flops(&self, counter: &mut CostCounter, x: Chw) -> Chw {
        let (conv, stem) = conv_flops(&self.conv1, [x[1], x[2]]);
        let stem_elems = (64 * stem[0] * stem[1]) as u64;
        let stem_params = parameter_count(&self.conv1) + parameter_count(&self.bn1);
        // BN (2 per element) and ReLU; MaxPool2d counts its input elements.
        let (mut cur, kind, flops) = match &self.maxpool {
            Some(pool) => (
                conv_out(stem, [3, 3], pool.stride, [1, 1], [1, 1]),
                "Conv2d+BN+ReLU+MaxPool2d",
                conv + 4 * stem_elems,
            ),
            None => (stem, "Conv2d+BN+ReLU", conv + 3 * stem_elems),
        };
        counter.record("stem", kind, stem_params, flops, [64, cur[0], cur[1]]);
        let plain = self.bn2.is_none();
        for (s, stage) in self.stages.iter().enumerate() {
            for (i, block) in stage.layers.iter().enumerate() {
                let (flops, out) = block.flops(cur, plain);
                let c = block.out_channels();
                counter.record(
                    &format!("stage{}.layers.{i}", s + 1),
                    "Bottleneck",
                    parameter_count(block),
                    flops,
                    [c, out[0], out[1]],
                );
                cur = out;
            }
            if let Some(fc) = &stage.fc {
                let c = stage.layers[0].out_channels();
                let params = parameter_count(fc) + stage.fcs.iter().map(parameter_count).sum::<usize>();
                counter.record(
                    &format!("stage{}.depth_attention", s + 1),
                    "SDA",
                    params,
                    stage.attention_flops(cur),
                    [c, cur[0], cur[1]],
                );
            }
        }
        let pool = (2048 * cur[0] * cur[1]) as u64;
        match &self.bn2 {
            Some(bn2) => counter.record(
                "bn2",
                "AvgPool2d+BatchNorm2d",
                parameter_count(bn2),
                pool + bn_flops(2048, [1, 1]),
                [2048, 1, 1],
            ),
            None => counter.record("avgpool", "AdaptiveAvgPool2d", 0, pool, [2048, 1, 1]),
        }
        let classes = self.fc.weight.dims()[1];
        counter.record(
            "fc",
            "Linear",
            parameter_count(&self.fc),
            linear_flops(&self.fc),
            [classes, 1, 1],
        );
        [classes, 1, 1]
    }
}
