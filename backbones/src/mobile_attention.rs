//! Attention shared by the mobile networks beyond SE, GE and ECA: CBAM and DCA-CBAM (MobileNetV2 and MnasNet,
//! `ma-xu/DCANet` models/mobilenet/mobilenet_cbam*.py, models/mnas/mnasnet_cbam*.py), the selective-kernel
//! depthwise layer of SK-MobileNetV2 and its DCA version (mobilenet_sk*.py), and what a DCA chain carries from
//! block to block.
//!
//! CBAM reuses the ResNet family's gates ([`Cbam`], [`DcaCbam`]) with the mobile layouts: MLP reduction 8
//! (MobileNetV2) or 16 (MnasNet), and a channel-matching 1x1 conv without bias.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};

use crate::cost::{Chw, CostCounter};
use crate::mobile_layers::{Activation, DcaMix, bn_flops, conv_flops, conv2d, global_avg, linear_flops};
use crate::norm::{NormMode, batch_norm};
use crate::resnet::DcaConfig;
use crate::resnet::attention::{Carry, Cbam, ChannelGate, SpatialGate, channel_pool};
use crate::resnet::dca::DcaCbam;

/// What a DCA-connected block hands to the next one.
#[derive(Debug, Clone)]
pub enum DcaCarry<B: Backend> {
    /// Nothing: the first block, or a network without DCA.
    None,
    /// The attended channel descriptor `gap * attention`, `[N, C]` (DCA-SE, DCA-GE).
    Vector(Tensor<B, 2>),
    /// SK's softmax weights of its two branches, `[N, C]` each (DCA-SK).
    Branches(Tensor<B, 2>, Tensor<B, 2>),
    /// CBAM's channel-gated map and output map, `[N, C, H, W]` each (DCA-CBAM).
    Maps(Carry<B>),
}

impl<B: Backend> DcaCarry<B> {
    /// The carried descriptor, if this is one.
    pub fn vector(self) -> Option<Tensor<B, 2>> {
        match self {
            DcaCarry::Vector(v) => Some(v),
            _ => None,
        }
    }
}

/// CBAM (channel gate, then spatial gate) on a block's projected output, optionally DCA-connected.
///
/// Reference keys (prefix `cbam.`): `ChannelGate.mlp.{1,3}`, `SpatialGate.spatial.{conv,bn}`, and for DCA
/// `ChannelGate.att_fc.{0,1}`, `ChannelGate.alpha.{0,1}`, `SpatialGate.{p1,p2}`, `SpatialGate.bnrelu.0`.
#[allow(clippy::large_enum_variant)] // burn's Module derive needs unboxed module variants
#[derive(Module, Debug)]
pub enum MobileCbam<B: Backend> {
    /// Plain CBAM.
    Plain(Cbam<B>),
    /// DCA-CBAM.
    Dca(DcaCbam<B>),
}

impl<B: Backend> MobileCbam<B> {
    /// CBAM for a block with `cin` input and `cout` output channels.
    pub fn new(cin: usize, cout: usize, reduction: usize, dca: bool, device: &B::Device) -> Self {
        if dca {
            MobileCbam::Dca(DcaCbam::with_layout(
                cin,
                cout,
                reduction,
                false,
                &DcaConfig::default(),
                device,
            ))
        } else {
            MobileCbam::Plain(Cbam {
                channel: ChannelGate::new(cout, reduction, device),
                spatial: SpatialGate::new(device),
            })
        }
    }

    /// # Shapes
    /// - `y`: `[N, C, H, W]`, output the same; DCA carries `[N, C_prev, H_prev, W_prev]` maps in and
    ///   `[N, C, H, W]` maps out
    pub fn forward(
        &self,
        y: Tensor<B, 4>,
        carry: DcaCarry<B>,
        mode: NormMode,
    ) -> (Tensor<B, 4>, DcaCarry<B>) {
        match self {
            MobileCbam::Plain(m) => {
                let y = m.channel.forward(y);
                let scale = m.spatial.scale(channel_pool(y.clone()), mode);
                (y * scale, DcaCarry::None)
            }
            MobileCbam::Dca(m) => {
                let carry = match carry {
                    DcaCarry::Maps(c) => c,
                    _ => Carry::empty(),
                };
                let (y, carry) = m.forward(y, carry, mode);
                (y, DcaCarry::Maps(carry))
            }
        }
    }

    /// FLOPs on a block output of shape `x`; `prev`: the previous block's output shape (`None` in the first
    /// block, where no carry arrives).
    pub fn flops(&self, x: Chw, prev: Option<Chw>) -> u64 {
        let mut counter = CostCounter::new();
        match self {
            MobileCbam::Plain(m) => {
                m.channel.count(&mut counter, x);
                m.spatial.count_conv(&mut counter, x);
            }
            MobileCbam::Dca(m) => m.count(&mut counter, x, prev),
        }
        counter.finish().flops
    }

    /// The DCA channel-gate connection weights `(alpha, beta)` (the 1x1 `Conv2d(2 -> 1)` merging the current
    /// and the previous pooled descriptors).
    pub fn alpha_beta(&self) -> Option<(f32, f32)> {
        let MobileCbam::Dca(m) = self else {
            return None;
        };
        let w: Vec<f32> = m
            .alpha
            .as_ref()?
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .ok()?;
        Some((*w.first()?, *w.get(1)?))
    }
}

/// DCA-SK channel matching: `Linear(C_prev, C / 8) + LayerNorm + ReLU + Linear(C / 8, C) + LayerNorm + ReLU`
/// (reference `att_fc1`, `att_fc2`: slots 0, 1, 3, 4).
#[derive(Module, Debug)]
pub struct SkMatch<B: Backend> {
    /// First Linear.
    pub fc1: Linear<B>,
    /// Its LayerNorm.
    pub norm1: LayerNorm<B>,
    /// Second Linear.
    pub fc2: Linear<B>,
    /// Its LayerNorm.
    pub norm2: LayerNorm<B>,
}

impl<B: Backend> SkMatch<B> {
    fn new(c_prev: usize, c: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(c_prev, hidden).init(device),
            norm1: LayerNormConfig::new(hidden).init(device),
            fc2: LinearConfig::new(hidden, c).init(device),
            norm2: LayerNormConfig::new(c).init(device),
        }
    }

    fn forward(&self, v: Tensor<B, 2>) -> Tensor<B, 2> {
        let v = relu(self.norm1.forward(self.fc1.forward(v)));
        relu(self.norm2.forward(self.fc2.forward(v)))
    }

    fn flops(&self) -> u64 {
        let hidden = self.fc1.weight.dims()[1] as u64;
        let c = self.fc2.weight.dims()[1] as u64;
        linear_flops(&self.fc1) + hidden + linear_flops(&self.fc2) + c
    }
}

/// SK-MobileNetV2's selective-kernel depthwise layer (reference `SKLayer`): two depthwise 3x3 branches
/// (dilation 1 and 2) with BN + ReLU6, fused by a softmax over the branches computed from the sum of their
/// pooled descriptors (`1x1 conv C -> C/8 + BN + ReLU`, `1x1 conv C/8 -> 2C`). DCA-SK merges each branch's
/// pooled descriptor with the previous block's softmax weight of the same branch before the sum.
#[derive(Module, Debug)]
pub struct SkDepthwise<B: Backend> {
    /// Depthwise 3x3 branch.
    pub conv3: Conv2d<B>,
    /// Its BatchNorm.
    pub bn3: BatchNorm<B>,
    /// Depthwise 3x3 branch with dilation 2 (a 5x5 receptive field).
    pub conv5: Conv2d<B>,
    /// Its BatchNorm.
    pub bn5: BatchNorm<B>,
    /// Squeeze `1x1 conv C -> C / 8` (no bias).
    pub conv_fc1: Conv2d<B>,
    /// Its BatchNorm.
    pub bn_fc1: BatchNorm<B>,
    /// Branch logits `1x1 conv C / 8 -> 2C` (no bias).
    pub conv_fc2: Conv2d<B>,
    /// DCA: merge of branch 1's descriptor with the previous weights (reference `att_conv1`).
    pub mix1: Option<DcaMix<B>>,
    /// DCA: the same for branch 2 (`att_conv2`).
    pub mix2: Option<DcaMix<B>>,
    /// DCA channel matching of the previous branch-1 weights when widths differ (`att_fc1`).
    pub match1: Option<SkMatch<B>>,
    /// The same for branch 2 (`att_fc2`).
    pub match2: Option<SkMatch<B>>,
}

impl<B: Backend> SkDepthwise<B> {
    /// On `c` channels with stride `stride`; `dca`: connected to a previous block whose layer had `c_prev`
    /// channels.
    pub fn new(c_prev: usize, c: usize, stride: usize, dca: bool, device: &B::Device) -> Self {
        let hidden = c / 8;
        let matching = dca && c_prev != c;
        Self {
            conv3: conv2d(c, c, 3, stride, c, 1, false, device),
            bn3: BatchNormConfig::new(c).init(device),
            conv5: conv2d(c, c, 3, stride, c, 2, false, device),
            bn5: BatchNormConfig::new(c).init(device),
            conv_fc1: conv2d(c, hidden, 1, 1, 1, 1, false, device),
            bn_fc1: BatchNormConfig::new(hidden).init(device),
            conv_fc2: conv2d(hidden, 2 * c, 1, 1, 1, 1, false, device),
            mix1: dca.then(|| DcaMix::new(c, true, device)),
            mix2: dca.then(|| DcaMix::new(c, true, device)),
            match1: matching.then(|| SkMatch::new(c_prev, c, hidden, device)),
            match2: matching.then(|| SkMatch::new(c_prev, c, hidden, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]` -> `[N, C, H / s, W / s]`; DCA carries the branch weights `[N, C_prev]` in and
    ///   `[N, C]` out
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        carry: DcaCarry<B>,
        norm: NormMode,
    ) -> (Tensor<B, 4>, DcaCarry<B>) {
        let relu6 = Activation::Relu6;
        let d1 = relu6.apply(batch_norm(&self.bn3, self.conv3.forward(x.clone()), norm));
        let d2 = relu6.apply(batch_norm(&self.bn5, self.conv5.forward(x), norm));
        let [n, c, _, _] = d1.dims();
        let mut gap1 = global_avg(d1.clone());
        let mut gap2 = global_avg(d2.clone());
        if let (DcaCarry::Branches(p1, p2), Some(mix1), Some(mix2)) = (carry, &self.mix1, &self.mix2) {
            let (p1, p2) = match (&self.match1, &self.match2) {
                (Some(m1), Some(m2)) => (m1.forward(p1), m2.forward(p2)),
                _ => (p1, p2),
            };
            gap1 = mix1.forward(gap1, p1);
            gap2 = mix2.forward(gap2, p2);
        }
        let d = (gap1 + gap2).reshape([n, c, 1, 1]);
        let d = relu(batch_norm(&self.bn_fc1, self.conv_fc1.forward(d), norm));
        let weights = softmax(self.conv_fc2.forward(d).reshape([n, 2, c]), 1);
        let w1 = weights.clone().narrow(1, 0, 1).reshape([n, c]);
        let w2 = weights.narrow(1, 1, 1).reshape([n, c]);
        let y = d1 * w1.clone().reshape([n, c, 1, 1]) + d2 * w2.clone().reshape([n, c, 1, 1]);
        let carry = if self.mix1.is_some() {
            DcaCarry::Branches(w1, w2)
        } else {
            DcaCarry::None
        };
        (y, carry)
    }

    /// FLOPs for an `[h, w]` input (ptflops convention) and the output size; `has_prev`: a previous block's
    /// weights arrive (the DCA connection runs).
    pub fn flops(&self, hw: [usize; 2], has_prev: bool) -> (u64, [usize; 2]) {
        let c = self.bn3.gamma.dims()[0];
        let (f3, out) = conv_flops(&self.conv3, hw);
        let (f5, _) = conv_flops(&self.conv5, hw);
        let elems = (c * out[0] * out[1]) as u64;
        // Per branch: conv, BN, the shared ReLU6 module, and the shared AdaptiveAvgPool2d (counts its input).
        let mut total = f3 + f5 + 2 * (bn_flops(c, out) + elems + elems);
        let hidden = self.bn_fc1.gamma.dims()[0];
        total += conv_flops(&self.conv_fc1, [1, 1]).0 + bn_flops(hidden, [1, 1]);
        total += conv_flops(&self.conv_fc2, [1, 1]).0;
        if has_prev && self.mix1.is_some() {
            let c = c as u64;
            // Per branch: matching (Linear + ReLU twice), the 2 -> 1 conv (2 MACs + bias per channel) and ReLU.
            let matching: u64 = [&self.match1, &self.match2]
                .into_iter()
                .flatten()
                .map(SkMatch::flops)
                .sum();
            total += matching + 2 * (3 * c + c);
        }
        (total, out)
    }

    /// DCA connection weights `(alpha, beta)` of the first branch's merge.
    pub fn alpha_beta(&self) -> Option<(f32, f32)> {
        self.mix1.as_ref().map(DcaMix::alpha_beta)
    }
}
