//! The selective-kernel bottleneck of the DCANet repository (`resnet_sk2.py`, the paper's SK-ResNet), and its
//! DCA version (`resnet_sk2_dca.py`).
//!
//! The 3x3 stage has two branches, a 3x3 and a dilated 3x3 (dilation 2), each with BatchNorm and ReLU. Their
//! global averages are summed, squeezed (1x1 conv to `planes / 16`, BatchNorm, ReLU) and expanded to `2 x planes`
//! logits; a softmax over the two branches weights them before they are summed into the 1x1 expansion. The DCA
//! version merges each branch's global average with the previous block's (its weighted branch average,
//! channel-matched by Linear + LayerNorm + ReLU where the width doubles) through Conv2d(2 -> 1) + LayerNorm +
//! ReLU, and carries the two weighted branch averages.

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};

use super::attention::Carry;
use super::block::{BlockShape, Downsample};
use crate::cost::{Chw, CostCounter};
use crate::fused::{add_act, conv_bn_act};
use crate::layers::Activation::{Identity, Relu};
use crate::layers::{batch_norm, conv_nobias, conv2d, gap};
use crate::norm::{NormMode, batch_norm as bn};

/// DCA link of one SK branch: optional channel matching, then the merge.
#[derive(Module, Debug)]
pub struct SkLink<B: Backend> {
    /// Matching Linear (C/2 -> C), where the width doubles.
    pub fc: Option<Linear<B>>,
    /// Its LayerNorm.
    pub fc_norm: Option<LayerNorm<B>>,
    /// Merge Conv2d(2 -> 1, bias).
    pub conv: Conv2d<B>,
    /// Its LayerNorm.
    pub conv_norm: LayerNorm<B>,
}

impl<B: Backend> SkLink<B> {
    fn new(c_prev: usize, c: usize, device: &B::Device) -> Self {
        let matching = c_prev != c;
        Self {
            fc: matching.then(|| LinearConfig::new(c_prev, c).init(device)),
            fc_norm: matching.then(|| LayerNormConfig::new(c).init(device)),
            conv: conv2d(2, 1, 1, 1, 0, 1, 1, true, device),
            conv_norm: LayerNormConfig::new(c).init(device),
        }
    }

    /// # Shapes
    /// - `current`: `[N, C, 1, 1]`, `previous`: `[N, C_prev, 1, 1]` -> `[N, C, 1, 1]`
    fn forward(&self, current: Tensor<B, 4>, previous: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, _, _] = current.dims();
        let [_, c_prev, _, _] = previous.dims();
        let mut prev = previous.reshape([n, c_prev]);
        if let (Some(fc), Some(norm)) = (&self.fc, &self.fc_norm) {
            prev = relu(norm.forward(fc.forward(prev)));
        }
        let pair = Tensor::cat(vec![current.reshape([n, 1, 1, c]), prev.reshape([n, 1, 1, c])], 1);
        relu(self.conv_norm.forward(self.conv.forward(pair).reshape([n, c]))).reshape([n, c, 1, 1])
    }

    fn count(&self, c: &mut CostCounter, index: usize, planes: usize, called: bool) {
        if !called {
            c.idle(&format!("att_conv{index}"), self);
            return;
        }
        if let (Some(fc), Some(norm)) = (&self.fc, &self.fc_norm) {
            c.linear(&format!("att_fc_{index}.0"), fc, 1);
            c.free(&format!("att_fc_{index}.1"), "LayerNorm", norm, [planes, 1, 1]);
            c.relu(&format!("att_fc_{index}.2"), [planes, 1, 1]);
        }
        c.conv2d(&format!("att_conv{index}.0"), &self.conv, [2, 1, planes]);
        c.free(
            &format!("att_conv{index}.1"),
            "LayerNorm",
            &self.conv_norm,
            [planes, 1, 1],
        );
        c.relu(&format!("att_conv{index}.2"), [planes, 1, 1]);
    }
}

/// Selective-kernel bottleneck (optionally DCA-linked).
///
/// Reference keys: `conv1, bn1, conv2, bn2, conv2g, bn2g, conv3, bn3, conv_fc1, bn_fc1, conv_fc2,
/// downsample.{0,1}`; DCA adds `att_fc_{1,2}.{0,1}` (where the width doubles) and `att_conv{1,2}.{0,1}`.
#[derive(Module, Debug)]
pub struct SkBottleneck<B: Backend> {
    /// 1x1 reduce.
    pub conv1: Conv2d<B>,
    /// BN after conv1.
    pub bn1: BatchNorm<B>,
    /// 3x3 branch (strided).
    pub conv2: Conv2d<B>,
    /// BN of the 3x3 branch.
    pub bn2: BatchNorm<B>,
    /// Dilated 3x3 branch (strided).
    pub conv2g: Conv2d<B>,
    /// BN of the dilated branch.
    pub bn2g: BatchNorm<B>,
    /// 1x1 expand.
    pub conv3: Conv2d<B>,
    /// BN after conv3.
    pub bn3: BatchNorm<B>,
    /// Squeeze 1x1 (planes -> planes/16).
    pub conv_fc1: Conv2d<B>,
    /// BN of the squeeze.
    pub bn_fc1: BatchNorm<B>,
    /// Expand 1x1 to the two branches' logits (planes/16 -> 2 planes).
    pub conv_fc2: Conv2d<B>,
    /// Projection shortcut.
    pub downsample: Option<Downsample<B>>,
    /// DCA link of the 3x3 branch.
    pub link1: Option<SkLink<B>>,
    /// DCA link of the dilated branch.
    pub link2: Option<SkLink<B>>,
}

impl<B: Backend> SkBottleneck<B> {
    /// Build; `dca`: add the links to the previous block.
    pub fn new(s: BlockShape, dca: bool, device: &B::Device) -> Self {
        let p = s.planes;
        let out = p * 4;
        let downsample =
            (s.stride != 1 || s.inplanes != out).then(|| Downsample::new(s.inplanes, out, s.stride, device));
        // The reference matches the previous attention where `inplanes == 2 * planes` (a stage's first block).
        let c_prev = if s.inplanes == 2 * p { p / 2 } else { p };
        Self {
            conv1: conv_nobias(s.inplanes, p, 1, 1, device),
            bn1: batch_norm(p, device),
            conv2: conv_nobias(p, p, 3, s.stride, device),
            bn2: batch_norm(p, device),
            conv2g: conv2d(p, p, 3, s.stride, 2, 2, 1, false, device),
            bn2g: batch_norm(p, device),
            conv3: conv_nobias(p, out, 1, 1, device),
            bn3: batch_norm(out, device),
            conv_fc1: conv_nobias(p, p / 16, 1, 1, device),
            bn_fc1: batch_norm(p / 16, device),
            conv_fc2: conv_nobias(p / 16, 2 * p, 1, 1, device),
            downsample,
            link1: dca.then(|| SkLink::new(c_prev, p, device)),
            link2: dca.then(|| SkLink::new(c_prev, p, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[N, C_in, H, W]` -> `[N, 4 * planes, H / stride, W / stride]`; DCA carries `[N, planes, 1, 1]` twice
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>, mode: NormMode) -> (Tensor<B, 4>, Carry<B>) {
        let identity = match &self.downsample {
            Some(d) => d.forward(x.clone(), mode),
            None => x.clone(),
        };
        let out = conv_bn_act(&self.conv1, Some(&self.bn1), x, mode, Relu);
        let d1 = conv_bn_act(&self.conv2, Some(&self.bn2), out.clone(), mode, Relu);
        let d2 = conv_bn_act(&self.conv2g, Some(&self.bn2g), out, mode, Relu);
        let [n, p, _, _] = d1.dims();
        let mut g1 = gap(d1.clone());
        let mut g2 = gap(d2.clone());
        if let (Some(l1), Some(l2), Some(c1), Some(c2)) =
            (&self.link1, &self.link2, carry.channel, carry.other)
        {
            g1 = l1.forward(g1, c1);
            g2 = l2.forward(g2, c2);
        }
        let z = relu(bn(&self.bn_fc1, self.conv_fc1.forward(g1 + g2), mode));
        let logits = self.conv_fc2.forward(z).reshape([n, 2, p, 1, 1]);
        let weights = softmax(logits, 1);
        let w1 = weights.clone().slice([0..n, 0..1]).reshape([n, p, 1, 1]);
        let w2 = weights.slice([0..n, 1..2]).reshape([n, p, 1, 1]);
        let d1 = d1 * w1;
        let d2 = d2 * w2;
        let carry = if self.link1.is_some() {
            Carry {
                channel: Some(gap(d1.clone())),
                other: Some(gap(d2.clone())),
            }
        } else {
            Carry::empty()
        };
        let out = conv_bn_act(&self.conv3, Some(&self.bn3), d1 + d2, mode, Identity);
        (add_act(out, identity, Relu), carry)
    }

    /// Record the cost (`prev`: the previous block's branch shape, `None` in the network's first block).
    pub fn count(&self, c: &mut CostCounter, x: Chw, prev: Option<Chw>) -> Chw {
        let y = c.conv2d("conv1", &self.conv1, x);
        c.batch_norm("bn1", &self.bn1, y);
        c.relu("relu", y);
        let d = c.conv2d("conv2", &self.conv2, y);
        c.batch_norm("bn2", &self.bn2, d);
        c.relu("relu", d);
        c.conv2d("conv2g", &self.conv2g, y);
        c.batch_norm("bn2g", &self.bn2g, d);
        c.relu("relu", d);
        c.global_avg_pool("avg_pool", d);
        c.global_avg_pool("avg_pool", d);
        let p = d[0];
        if let (Some(l1), Some(l2)) = (&self.link1, &self.link2) {
            l1.count(c, 1, p, prev.is_some());
            l2.count(c, 2, p, prev.is_some());
        }
        let z = c.conv2d("conv_fc1", &self.conv_fc1, [p, 1, 1]);
        c.batch_norm("bn_fc1", &self.bn_fc1, z);
        c.conv2d("conv_fc2", &self.conv_fc2, z);
        let out = c.conv2d("conv3", &self.conv3, d);
        c.batch_norm("bn3", &self.bn3, out);
        if let Some(ds) = &self.downsample {
            c.scoped("downsample", |c| {
                let y = c.conv2d("0", &ds.conv, x);
                c.batch_norm("1", &ds.bn, y);
            });
        }
        c.relu("relu", out);
        if self.link1.is_some() {
            c.global_avg_pool("avg_pool", d);
            c.global_avg_pool("avg_pool", d);
        }
        out
    }
}
