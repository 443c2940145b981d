//! The ResNet family: plain ResNet-18..152 (torchvision layout) and its attention and DCA versions, built as
//! the reference code builds them (see `config` for the names).
//!
//! Module paths follow the reference keys (`conv1`, `bn1`, `layer{1..4}.{i}.conv1`, `fc`) so that checkpoints
//! load through a short explicit key map ([`renames`]).

pub mod attention;
pub mod block;
pub mod config;
pub mod dca;
pub mod sk;

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, LinearConfig};
use burn::prelude::*;

use self::attention::{Attention, Carry, Cbam, ChannelGate, Eca, Gc, Ge, Se, SpatialGate};
use self::block::{BasicBlock, Block, BlockShape, Bottleneck};
pub use self::config::{AttentionKind, BlockKind, DcaConfig, ResNetConfig};
use self::dca::{DcaCbam, DcaGc, DcaVector, VectorKind};
use self::sk::SkBottleneck;
use crate::checkpoint::KeyMap;
use crate::cost::{Chw, CostCounter, CountFlops};
use crate::error::BackboneError;
use crate::fused::conv_bn_act;
use crate::layers::{Activation, batch_norm, conv2d, gap, stem_max_pool};
use crate::norm::NormMode;
use crate::{Backbone, FeatureSpec};

/// Reference key names -> our module paths, as literal `(reference, ours)` substrings, for a network of the
/// family (each key is renamed by at most one pair; [`ResNetConfig::static_key_map`] turns them into import
/// rules, [`crate::checkpoint::reference_keys`] reverses them).
pub fn renames(cfg: &ResNetConfig) -> Vec<(&'static str, &'static str)> {
    let mut map = vec![
        (".downsample.0.", ".downsample.conv."),
        (".downsample.1.", ".downsample.bn."),
    ];
    let dca = cfg.dca.is_some();
    map.extend_from_slice(match (&cfg.attention, dca) {
        (AttentionKind::None | AttentionKind::Ge, false) => &[],
        (AttentionKind::Se, false) => &[(".se.fc.0.", ".attn.fc1."), (".se.fc.2.", ".attn.fc2.")],
        (AttentionKind::Eca { .. }, _) => &[(".eca.conv.", ".attn.conv.")],
        (AttentionKind::Cbam, false) => &[
            (".cbam.ChannelGate.mlp.1.", ".attn.channel.fc1."),
            (".cbam.ChannelGate.mlp.3.", ".attn.channel.fc2."),
            (".cbam.SpatialGate.spatial.", ".attn.spatial."),
        ],
        (AttentionKind::Gc, false) => &[
            (".gc.conv_mask.", ".attn.conv_mask."),
            (".gc.channel_add_conv.0.", ".attn.add_conv1."),
            (".gc.channel_add_conv.1.", ".attn.add_norm."),
            (".gc.channel_add_conv.3.", ".attn.add_conv2."),
        ],
        (AttentionKind::Sk, _) => &[
            (".att_fc_1.0.", ".link1.fc."),
            (".att_fc_1.1.", ".link1.fc_norm."),
            (".att_conv1.0.", ".link1.conv."),
            (".att_conv1.1.", ".link1.conv_norm."),
            (".att_fc_2.0.", ".link2.fc."),
            (".att_fc_2.1.", ".link2.fc_norm."),
            (".att_conv2.0.", ".link2.conv."),
            (".att_conv2.1.", ".link2.conv_norm."),
        ],
        (AttentionKind::Se, true) => &[
            (".se.fc.0.", ".attn.fc1."),
            (".se.fc.2.", ".attn.fc2."),
            (".se.att_fc.0.", ".attn.matcher.fc."),
            (".se.att_fc.1.", ".attn.matcher.norm."),
            (".se.conv.0.", ".attn.mix.conv."),
            (".se.conv.1.", ".attn.mix.norm."),
        ],
        (AttentionKind::Ge, true) => &[
            (".ge.att_fc.0.", ".attn.matcher.fc."),
            (".ge.att_fc.1.", ".attn.matcher.norm."),
            (".ge.conv.0.", ".attn.mix.conv."),
            (".ge.conv.1.", ".attn.mix.norm."),
        ],
        (AttentionKind::Gc, true) => &[
            (".rgc.conv_mask.", ".attn.gc.conv_mask."),
            (".rgc.channel_add_conv.0.", ".attn.gc.add_conv1."),
            (".rgc.channel_add_conv.1.", ".attn.gc.add_norm."),
            (".rgc.channel_add_conv.3.", ".attn.gc.add_conv2."),
            (".rgc.att_fc.0.", ".attn.match_conv1."),
            (".rgc.att_fc.1.", ".attn.match_norm."),
            (".rgc.att_fc.3.", ".attn.match_conv2."),
            (".rgc.weight", ".attn.weight"),
        ],
        (AttentionKind::Cbam, true) => &[
            (".cbam.ChannelGate.mlp.1.", ".attn.channel.fc1."),
            (".cbam.ChannelGate.mlp.3.", ".attn.channel.fc2."),
            (".cbam.ChannelGate.att_fc.0.", ".attn.match_conv."),
            (".cbam.ChannelGate.att_fc.1.", ".attn.match_bn."),
            (".cbam.ChannelGate.alpha.0.", ".attn.alpha."),
            (".cbam.ChannelGate.alpha.1.", ".attn.alpha_norm."),
            (".cbam.SpatialGate.spatial.", ".attn.spatial."),
            (".cbam.SpatialGate.p1", ".attn.p1"),
            (".cbam.SpatialGate.p2", ".attn.p2"),
            (".cbam.SpatialGate.bnrelu.0.", ".attn.mix_bn."),
        ],
        (AttentionKind::None, true) => &[],
    });
    map
}

/// A ResNet of the family with its classification head.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    /// Stem 7x7/2 convolution.
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn1: BatchNorm<B>,
    /// Stage 1 (stride 4, C2).
    pub layer1: Vec<Block<B>>,
    /// Stage 2 (stride 8, C3).
    pub layer2: Vec<Block<B>>,
    /// Stage 3 (stride 16, C4).
    pub layer3: Vec<Block<B>>,
    /// Stage 4 (stride 32, C5).
    pub layer4: Vec<Block<B>>,
    /// Classifier on the globally pooled C5.
    pub fc: Linear<B>,
    /// BatchNorm mode of the stages that are not frozen.
    norm_mode: NormMode,
    /// Stem and this many stages are frozen (no gradient, running statistics); `None`: nothing frozen.
    frozen_stages: Option<usize>,
    /// Output channels of C2..C5.
    stage_channels: [usize; 4],
}

/// The attention of a block of `stage` (0..4) with input width `c_in` and output width `c`.
fn attention<B: Backend>(
    cfg: &ResNetConfig,
    stage: usize,
    c_in: usize,
    c: usize,
    device: &B::Device,
) -> Option<Attention<B>> {
    Some(match (&cfg.attention, &cfg.dca) {
        (AttentionKind::None | AttentionKind::Sk, _) => return None,
        (AttentionKind::Se, None) => Attention::Se(Se::new(c, 16, device)),
        (AttentionKind::Eca { k_sizes }, _) => Attention::Eca(Eca::new(k_sizes[stage], device)),
        (AttentionKind::Cbam, None) => Attention::Cbam(Cbam {
            channel: ChannelGate::new(c, 16, device),
            spatial: SpatialGate::new(device),
        }),
        (AttentionKind::Gc, None) => Attention::Gc(Gc::new(c, c / 16, device)),
        (AttentionKind::Ge, None) => Attention::Ge(Ge::new()),
        (AttentionKind::Se, Some(d)) => {
            Attention::DcaVector(DcaVector::new(VectorKind::Se, c_in, c, d, device))
        }
        (AttentionKind::Ge, Some(d)) => {
            Attention::DcaVector(DcaVector::new(VectorKind::Ge, c_in, c, d, device))
        }
        (AttentionKind::Gc, Some(_)) => Attention::DcaGc(DcaGc::new(c_in, c, c / 16, device)),
        (AttentionKind::Cbam, Some(d)) => Attention::DcaCbam(DcaCbam::new(c_in, c, d, device)),
    })
}

impl ResNetConfig {
    /// The import key map of this network (see [`crate::checkpoint::KeyMap`]).
    pub fn static_key_map(&self) -> KeyMap {
        let id = format!("resnet/{:?}/{:?}", self.attention, self.dca.is_some());
        crate::mobile_layers::leak_key_map(&id, || crate::checkpoint::literal_rules(&renames(self)))
    }
}

impl<B: Backend> ResNet<B> {
    /// Build the network `cfg` describes (freshly initialised).
    pub fn new(cfg: &ResNetConfig, device: &B::Device) -> Result<Self, BackboneError> {
        cfg.validate()?;
        let (blocks, kind) = cfg.layout()?;
        let expansion = kind.expansion();
        let mut inplanes = 64;
        let mut stages: Vec<Vec<Block<B>>> = Vec::with_capacity(4);
        for (i, &n) in blocks.iter().enumerate() {
            let planes = 64 << i;
            let mut stage = Vec::with_capacity(n);
            for j in 0..n {
                let shape = BlockShape {
                    inplanes,
                    planes,
                    stride: if i > 0 && j == 0 { 2 } else { 1 },
                };
                let attn = attention(cfg, i, inplanes, planes * expansion, device);
                stage.push(match kind {
                    BlockKind::Basic => Block::Basic(BasicBlock::new(shape, attn, device)),
                    BlockKind::Bottleneck if cfg.attention == AttentionKind::Sk => {
                        Block::Sk(SkBottleneck::new(shape, cfg.dca.is_some(), device))
                    }
                    BlockKind::Bottleneck => Block::Bottleneck(Bottleneck::new(shape, attn, device)),
                });
                inplanes = planes * expansion;
            }
            stages.push(stage);
        }
        let mut stages = stages.into_iter();
        let mut next = || stages.next().unwrap_or_default();
        Ok(Self {
            conv1: conv2d(3, 64, 7, 2, 3, 1, 1, false, device),
            bn1: batch_norm(64, device),
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            fc: LinearConfig::new(512 * expansion, cfg.num_classes).init(device),
            norm_mode: NormMode::Auto,
            frozen_stages: None,
            stage_channels: [64, 128, 256, 512].map(|c| c * expansion),
        })
    }

    fn stages(&self) -> [&Vec<Block<B>>; 4] {
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
    }

    /// BatchNorm mode of stage `i` (0 = stem, 1..4 = layer1..4).
    fn mode_of(&self, i: usize) -> NormMode {
        match self.frozen_stages {
            Some(k) if i <= k => NormMode::Frozen,
            _ => self.norm_mode,
        }
    }

    /// C2..C5.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, H, W]` -> `[N, C_i, H / s_i, W / s_i]` for s = 4, 8, 16, 32 (PyTorch's floor/ceil rules of
    ///   the strided layers: `H = 224` gives 56, 28, 14, 7; `H = 800` gives 200, 100, 50, 25)
    pub fn forward_stages(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let x = conv_bn_act(&self.conv1, Some(&self.bn1), x, self.mode_of(0), Activation::Relu);
        let mut x = stem_max_pool(x);
        let mut carry = Carry::empty();
        let mut outs = Vec::with_capacity(4);
        for (i, stage) in self.stages().into_iter().enumerate() {
            let mode = self.mode_of(i + 1);
            for block in stage {
                (x, carry) = block.forward(x, carry, mode);
            }
            outs.push(x.clone());
        }
        outs
    }

    /// Class logits (before softmax).
    ///
    /// # Shapes
    /// - `x`: `[N, 3, H, W]` -> `[N, num_classes]`
    pub fn forward_logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let c5 = self.forward_stages(x).pop().expect("four stages");
        let [n, c, _, _] = c5.dims();
        self.fc.forward(gap(c5).reshape([n, c]))
    }

    /// Use `mode` for the BatchNorm layers of the stages that are not frozen (`Frozen` = mmdetection's `norm_eval`).
    pub fn with_norm_mode(mut self, mode: NormMode) -> Self {
        self.norm_mode = mode;
        self
    }

    /// Freeze the stem and the first `stages` stages (0 = stem only, 4 = everything but the head): their
    /// parameters get no gradient and their BatchNorm layers use running statistics.
    pub fn with_frozen_stages(mut self, stages: usize) -> Self {
        let stages = stages.min(4);
        self.conv1 = self.conv1.no_grad();
        self.bn1 = self.bn1.no_grad();
        let freeze = |v: Vec<Block<B>>| v.into_iter().map(|b| b.no_grad()).collect::<Vec<_>>();
        if stages >= 1 {
            self.layer1 = freeze(self.layer1);
        }
        if stages >= 2 {
            self.layer2 = freeze(self.layer2);
        }
        if stages >= 3 {
            self.layer3 = freeze(self.layer3);
        }
        if stages >= 4 {
            self.layer4 = freeze(self.layer4);
        }
        self.frozen_stages = Some(stages);
        self
    }

    /// Number of classes of the head.
    pub fn num_classes(&self) -> usize {
        self.fc.weight.lazy_shape()[1]
    }
}

impl<B: Backend> Backbone<B> for ResNet<B> {
    fn feature_specs(&self) -> Vec<FeatureSpec> {
        self.stage_channels
            .iter()
            .zip([4, 8, 16, 32])
            .map(|(&c, s)| FeatureSpec::level(c, s))
            .collect()
    }

    fn forward_features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        self.forward_stages(x)
    }

    fn with_norm_mode(self, mode: NormMode) -> Self {
        ResNet::with_norm_mode(self, mode)
    }

    fn with_frozen_stages(self, stages: usize) -> Self {
        ResNet::with_frozen_stages(self, stages)
    }
}

impl<B: Backend> CountFlops for ResNet<B> {
    fn count_flops(&self, c: &mut CostCounter, x: Chw) -> Chw {
        let y = c.conv2d("conv1", &self.conv1, x);
        c.batch_norm("bn1", &self.bn1, y);
        c.relu("relu", y);
        let mut y = c.pool("maxpool", "MaxPool2d", y, stem_pool_shape(y));
        let mut prev = None;
        for (i, stage) in self.stages().into_iter().enumerate() {
            for (j, block) in stage.iter().enumerate() {
                let out = c.scoped(format!("layer{}", i + 1), |c| {
                    c.scoped(j.to_string(), |c| block.count(c, y, prev))
                });
                prev = Some(out);
                y = out;
            }
        }
        let pooled = c.global_avg_pool("avgpool", y);
        c.linear("fc", &self.fc, 1);
        [self.num_classes(), pooled[1], pooled[2]]
    }
}

fn stem_pool_shape(x: Chw) -> Chw {
    use crate::cost::window_out;
    [
        x[0],
        window_out(x[1], 3, 2, 1, 1, 1),
        window_out(x[2], 3, 2, 1, 1, 1),
    ]
}
