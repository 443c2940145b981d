//! SDA-xNet: stage-wise depth attention (`QingbeiGuo/SDA-xNet`).
//!
//! Each stage runs its blocks, keeps every block's pre-activation output `Z_i` (the residual sum before the
//! ReLU), and fuses them with a softmax over depth: `u = GAP(sum_i Z_i)`, `v = ReLU(BN(conv1x1(u)))`,
//! `a_i = softmax_i(fc_i(v))` per channel, stage output `ReLU(sum_i a_i * Z_i)`. Blocks still chain as usual
//! (block `i + 1` reads `ReLU(Z_i)`).
//!
//! Reference files: `SDA-ResNet/models/resnet/resnet_at.py` (`resnet50` = SDA-ResNet-86: Bottleneck
//! [5, 6, 12, 5], grouped 3x3 with 8 groups) and `SDA-SENet/models/senet/se_resnet_at.py` (`se_resnet_50`: the
//! same depths, ungrouped 3x3, SE with reduction 16 inside each block). The classifier is AvgPool2d(7) then
//! BatchNorm2d then Linear. The detection versions (`mmdetection/mmdet/models/backbones/sda*.py`) are the same
//! network returning the four stage outputs (C2..C5, [`Backbone::forward_features`]); loading their checkpoints
//! (BatchNorms named `norm1..3`, no classifier head) is not supported yet.

pub mod explain;

use burn::module::Module;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid, softmax};
use serde::{Deserialize, Serialize};

use crate::checkpoint::KeyMap;
use crate::cost::{Chw, CostCounter, CountFlops, parameter_count};
use crate::error::BackboneError;
use crate::mobile_layers::{
    Activation, ConvBnAct, bn_flops, conv_flops, conv_out, conv2d, global_avg, leak_key_map, linear_flops,
};
use crate::norm::{NormMode, batch_norm};
use crate::{Backbone, Classifier, FeatureSpec};

/// Which SDA network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SdaVariant {
    /// SDA-ResNet-86: bottlenecks with a grouped (8 groups) 3x3 convolution.
    ResNet,
    /// SDA-SENet-86: ungrouped bottlenecks with squeeze-and-excitation (reduction 16).
    SeResNet,
}

/// Architecture of an SDA network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdaConfig {
    /// The network.
    pub variant: SdaVariant,
    /// Blocks per stage (`[5, 6, 12, 5]` for the 86-layer networks).
    pub depths: [usize; 4],
    /// Classes of the classification head.
    pub num_classes: usize,
}

/// Depth-attention reduction `r` and minimum width `L` of the reference code.
const REDUCTION: usize = 16;
const MIN_WIDTH: usize = 64;

impl SdaConfig {
    /// The 86-layer network of `variant`.
    pub fn depth86(variant: SdaVariant, num_classes: usize) -> Self {
        Self {
            variant,
            depths: [5, 6, 12, 5],
            num_classes,
        }
    }

    /// Parse a zoo name: `sda_resnet86`, `sda_se_resnet86` (`None`: not an SDA name).
    pub fn parse(name: &str) -> Option<Result<Self, BackboneError>> {
        let variant = match name.strip_prefix("sda_")? {
            "resnet86" => SdaVariant::ResNet,
            "se_resnet86" => SdaVariant::SeResNet,
            _ => {
                return Some(Err(BackboneError::UnknownModel {
                    name: name.into(),
                    reason: "SDA networks: sda_resnet86, sda_se_resnet86 (sda_res2net86 and sda_pyconvresnet86 are \
                             not built yet)"
                        .into(),
                }));
            }
        };
        Some(Ok(Self::depth86(variant, 1000)))
    }

    /// [`SdaConfig::key_map`] as the zoo's static [`KeyMap`].
    pub fn static_key_map(&self) -> KeyMap {
        leak_key_map("sda", || self.key_map())
    }

    /// The model name (`sda_resnet86`, `sda_se_resnet86`).
    pub fn name(&self) -> String {
        let depth = 2 + 3 * self.depths.iter().sum::<usize>();
        match self.variant {
            SdaVariant::ResNet => format!("sda_resnet{depth}"),
            SdaVariant::SeResNet => format!("sda_se_resnet{depth}"),
        }
    }

    /// Build the network with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SdaNet<B> {
        let mut cin = 64;
        let stages = (0..4)
            .map(|s| {
                let planes = 64 << s;
                let stride = if s == 0 { 1 } else { 2 };
                let stage = SdaStage::new(self.variant, cin, planes, self.depths[s], stride, device);
                cin = planes * 4;
                stage
            })
            .collect();
        SdaNet {
            conv1: conv2d(3, 64, 7, 2, 1, 1, false, device),
            bn1: BatchNormConfig::new(64).init(device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            stages,
            bn2: BatchNormConfig::new(2048).init(device),
            fc: LinearConfig::new(2048, self.num_classes).init(device),
            norm: NormMode::Auto,
            frozen_stages: None,
        }
    }

    /// Key map from the reference `state_dict` keys to this crate's module paths (`(regex, replacement)` pairs
    /// applied in order).
    pub fn key_map(&self) -> Vec<(String, String)> {
        let mut map: Vec<(String, String)> = (1..=4)
            .map(|s| (format!(r"^stage{s}\."), format!("stages.{}.", s - 1)))
            .collect();
        map.push((r"\.fc\.0\.".into(), ".fc.conv.".into()));
        map.push((r"\.fc\.1\.".into(), ".fc.bn.".into()));
        map.push((r"\.downsample\.0\.".into(), ".downsample.conv.".into()));
        map.push((r"\.downsample\.1\.".into(), ".downsample.bn.".into()));
        // SDA-SENet keeps its SE layers directly in the block.
        map.push((r"(\.layers\.\d+)\.(fc\d)\.".into(), "$1.se.$2.".into()));
        map
    }
}

/// Squeeze-and-excitation of SDA-SENet (`fc1`, `fc2` Linear layers inside the block).
#[derive(Module, Debug)]
pub struct BlockSe<B: Backend> {
    /// `Linear(4p, round(p / 4))`.
    pub fc1: Linear<B>,
    /// `Linear(round(p / 4), 4p)`.
    pub fc2: Linear<B>,
}

/// A bottleneck that also returns its pre-activation output.
#[derive(Module, Debug)]
pub struct SdaBottleneck<B: Backend> {
    /// 1x1 reduction.
    pub conv1: burn::nn::conv::Conv2d<B>,
    /// BN of `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3x3 (strided, grouped for SDA-ResNet).
    pub conv2: burn::nn::conv::Conv2d<B>,
    /// BN of `conv2`.
    pub bn2: BatchNorm<B>,
    /// 1x1 expansion.
    pub conv3: burn::nn::conv::Conv2d<B>,
    /// BN of `conv3`.
    pub bn3: BatchNorm<B>,
    /// SE (SDA-SENet only).
    pub se: Option<BlockSe<B>>,
    /// Projection shortcut of the first block.
    pub downsample: Option<ConvBnAct<B>>,
}

impl<B: Backend> SdaBottleneck<B> {
    fn new(variant: SdaVariant, cin: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let groups = if variant == SdaVariant::ResNet { 8 } else { 1 };
        let cout = planes * 4;
        // PyTorch's round() is round-half-even; planes / 4 is an integer for every stage here.
        let hidden = planes / 4;
        Self {
            conv1: conv2d(cin, planes, 1, 1, 1, 1, false, device),
            bn1: BatchNormConfig::new(planes).init(device),
            conv2: conv2d(planes, planes, 3, stride, groups, 1, false, device),
            bn2: BatchNormConfig::new(planes).init(device),
            conv3: conv2d(planes, cout, 1, 1, 1, 1, false, device),
            bn3: BatchNormConfig::new(cout).init(device),
            se: (variant == SdaVariant::SeResNet).then(|| BlockSe {
                fc1: LinearConfig::new(cout, hidden).init(device),
                fc2: LinearConfig::new(hidden, cout).init(device),
            }),
            downsample: (stride != 1 || cin != cout)
                .then(|| ConvBnAct::new(cin, cout, 1, stride, 1, Activation::Identity, device)),
        }
    }

    /// Returns the pre-activation output `Z` (residual sum, before the ReLU).
    ///
    /// # Shapes
    /// - `x`: `[N, cin, H, W]` -> `[N, 4p, H / s, W / s]`
    fn forward(&self, x: Tensor<B, 4>, norm: NormMode) -> Tensor<B, 4> {
        let y = relu(batch_norm(&self.bn1, self.conv1.forward(x.clone()), norm));
        let y = relu(batch_norm(&self.bn2, self.conv2.forward(y), norm));
        let mut y = batch_norm(&self.bn3, self.conv3.forward(y), norm);
        if let Some(se) = &self.se {
            let [n, c, _, _] = y.dims();
            let att = sigmoid(se.fc2.forward(relu(se.fc1.forward(global_avg(y.clone())))));
            y = y * att.reshape([n, c, 1, 1]);
        }
        let shortcut = match &self.downsample {
            Some(down) => down.forward(x, norm),
            None => x,
        };
        y + shortcut
    }

    fn flops(&self, hw: [usize; 2]) -> (u64, [usize; 2]) {
        let planes = self.bn1.gamma.dims()[0];
        let cout = self.bn3.gamma.dims()[0];
        let (f1, o1) = conv_flops(&self.conv1, hw);
        let (f2, o2) = conv_flops(&self.conv2, o1);
        let (f3, o3) = conv_flops(&self.conv3, o2);
        // The block's `nn.ReLU` module runs twice (after bn1 and bn2); the final `F.relu` is not counted.
        let mut total = f1 + f2 + f3;
        total += bn_flops(planes, o1) + (planes * o1[0] * o1[1]) as u64;
        total += bn_flops(planes, o2) + (planes * o2[0] * o2[1]) as u64;
        total += bn_flops(cout, o3);
        if let Some(se) = &self.se {
            // AvgPool2d over the map, fc1, the shared ReLU module once more, fc2.
            let hidden = se.fc1.weight.dims()[1];
            total +=
                (cout * o3[0] * o3[1]) as u64 + linear_flops(&se.fc1) + hidden as u64 + linear_flops(&se.fc2);
        }
        if let Some(down) = &self.downsample {
            total += down.flops(hw).0;
        }
        (total, o3)
    }
}

/// One stage: its blocks plus the depth attention over their outputs.
#[derive(Module, Debug)]
pub struct SdaStage<B: Backend> {
    /// The blocks (reference `layers`).
    pub layers: Vec<SdaBottleneck<B>>,
    /// `conv1x1(C -> d) + BN + ReLU` on the pooled sum (reference `fc`).
    pub fc: ConvBnAct<B>,
    /// One `conv1x1(d -> C)` (with bias) per block: the depth-attention logits (reference `fcs`).
    pub fcs: Vec<burn::nn::conv::Conv2d<B>>,
}

impl<B: Backend> SdaStage<B> {
    fn new(
        variant: SdaVariant,
        cin: usize,
        planes: usize,
        blocks: usize,
        stride: usize,
        device: &B::Device,
    ) -> Self {
        let cout = planes * 4;
        let d = (cout / REDUCTION).max(MIN_WIDTH);
        Self {
            layers: (0..blocks)
                .map(|i| {
                    if i == 0 {
                        SdaBottleneck::new(variant, cin, planes, stride, device)
                    } else {
                        SdaBottleneck::new(variant, cout, planes, 1, device)
                    }
                })
                .collect(),
            fc: ConvBnAct::new(cout, d, 1, 1, 1, Activation::Relu, device),
            fcs: (0..blocks)
                .map(|_| conv2d(d, cout, 1, 1, 1, 1, true, device))
                .collect(),
        }
    }

    /// The stage output and its depth-attention weights.
    ///
    /// # Shapes
    /// - `x`: `[N, cin, H, W]` -> output `[N, C, H / s, W / s]`, weights `[N, blocks, C]`
    fn forward(&self, x: Tensor<B, 4>, norm: NormMode) -> (Tensor<B, 4>, Tensor<B, 3>) {
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
        let v = self.fc.forward(global_avg(sum).reshape([n, c, 1, 1]), norm);
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
        (relu(fused), weights)
    }

    fn flops(&self, hw: [usize; 2]) -> (u64, [usize; 2]) {
        let mut total = 0;
        let mut cur = hw;
        for block in &self.layers {
            let (f, o) = block.flops(cur);
            total += f;
            cur = o;
        }
        let c = self.layers[0].bn3.gamma.dims()[0];
        // AdaptiveAvgPool2d counts its input; then the fc unit and the per-block 1x1 convs on a 1x1 map.
        total += (c * cur[0] * cur[1]) as u64 + self.fc.flops([1, 1]).0;
        total += self.fcs.iter().map(|fc| conv_flops(fc, [1, 1]).0).sum::<u64>();
        (total, cur)
    }
}

/// An SDA network with its classification head.
#[derive(Module, Debug)]
pub struct SdaNet<B: Backend> {
    /// 7x7 stride-2 stem convolution.
    pub conv1: burn::nn::conv::Conv2d<B>,
    /// Stem BN.
    pub bn1: BatchNorm<B>,
    maxpool: MaxPool2d,
    /// The four stages (reference `stage1..stage4`).
    pub stages: Vec<SdaStage<B>>,
    /// BatchNorm after the classifier's pooling.
    pub bn2: BatchNorm<B>,
    /// Classifier.
    pub fc: Linear<B>,
    norm: NormMode,
    /// The stem and stages `1..=k` are frozen (no gradients, running BatchNorm statistics).
    frozen_stages: Option<usize>,
}

/// What `forward_explained` returns: the four stage outputs and each stage's depth-attention weights.
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
    /// over blocks).
    pub fn forward_explained(&self, x: Tensor<B, 4>) -> Explained<B> {
        let frozen = |stage: usize| match self.frozen_stages {
            Some(k) if stage <= k => NormMode::Frozen,
            _ => self.norm,
        };
        let x = relu(batch_norm(&self.bn1, self.conv1.forward(x), frozen(0)));
        let mut x = self.maxpool.forward(x);
        let mut levels = Vec::with_capacity(4);
        let mut weights = Vec::with_capacity(4);
        for (i, stage) in self.stages.iter().enumerate() {
            let (y, w) = stage.forward(x, frozen(i + 1));
            levels.push(y.clone());
            weights.push(w);
            x = y;
        }
        (levels, weights)
    }

    /// Class logits. The reference pools with AvgPool2d(7) (global at 224x224); this pools globally, which is
    /// the same at 224x224 and keeps other input sizes meaningful.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, H, W]` -> `[N, num_classes]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let last = self.forward_explained(x).0.pop().expect("four stages");
        let [n, c, _, _] = last.dims();
        let pooled = batch_norm(&self.bn2, global_avg(last).reshape([n, c, 1, 1]), self.norm);
        self.fc.forward(pooled.reshape([n, c]))
    }

    /// FLOPs for one `[h, w]` image, ptflops convention.
    pub fn flops(&self, hw: [usize; 2]) -> u64 {
        let (mut total, cur) = conv_flops(&self.conv1, hw);
        total += bn_flops(64, cur) + (64 * cur[0] * cur[1]) as u64;
        // MaxPool2d counts its input elements.
        total += (64 * cur[0] * cur[1]) as u64;
        let mut cur = conv_out(cur, [3, 3], [2, 2], [1, 1], [1, 1]);
        for stage in &self.stages {
            let (f, o) = stage.flops(cur);
            total += f;
            cur = o;
        }
        // AvgPool2d(7) input, bn2 on the pooled vector, fc.
        total + (2048 * cur[0] * cur[1]) as u64 + bn_flops(2048, [1, 1]) + linear_flops(&self.fc)
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
    /// the head's pooling + BN and the classifier.
    fn count_flops(&self, counter: &mut CostCounter, x: Chw) -> Chw {
        let (conv, stem) = conv_flops(&self.conv1, [x[1], x[2]]);
        let stem_elems = (64 * stem[0] * stem[1]) as u64;
        let mut cur = conv_out(stem, [3, 3], [2, 2], [1, 1], [1, 1]);
        let stem_params = parameter_count(&self.conv1) + parameter_count(&self.bn1);
        counter.record(
            "stem",
            "Conv2d+BN+ReLU+MaxPool2d",
            stem_params,
            conv + 4 * stem_elems,
            [64, cur[0], cur[1]],
        );
        for (s, stage) in self.stages.iter().enumerate() {
            for (i, block) in stage.layers.iter().enumerate() {
                let (flops, out) = block.flops(cur);
                let c = block.bn3.gamma.dims()[0];
                counter.record(
                    &format!("stage{}.layers.{i}", s + 1),
                    "Bottleneck",
                    parameter_count(block),
                    flops,
                    [c, out[0], out[1]],
                );
                cur = out;
            }
            let c = stage.layers[0].bn3.gamma.dims()[0];
            let fcs: u64 = stage.fcs.iter().map(|fc| conv_flops(fc, [1, 1]).0).sum();
            let attention = (c * cur[0] * cur[1]) as u64 + stage.fc.flops([1, 1]).0 + fcs;
            let params = parameter_count(&stage.fc) + stage.fcs.iter().map(parameter_count).sum::<usize>();
            counter.record(
                &format!("stage{}.depth_attention", s + 1),
                "SDA",
                params,
                attention,
                [c, cur[0], cur[1]],
            );
        }
        let pool = (2048 * cur[0] * cur[1]) as u64;
        counter.record(
            "bn2",
            "AvgPool2d+BatchNorm2d",
            parameter_count(&self.bn2),
            pool + bn_flops(2048, [1, 1]),
            [2048, 1, 1],
        );
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
