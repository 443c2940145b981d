//! The bottleneck blocks of the SDA networks and of the plain baselines they are compared with.
//!
//! All four share `conv1x1 -> BN -> ReLU -> middle -> conv1x1 -> BN (+ SE) + shortcut`; they differ in the
//! middle:
//! - SDA-ResNet / SDA-SENet: one 3x3 convolution (8 groups for SDA-ResNet) + BN + ReLU;
//! - PyConv: a pyramid of convolutions with growing kernels and groups (3x3/1, 5x5/4, 7x7/8, 9x9/16; fewer
//!   levels in deeper stages), concatenated along channels, + BN + ReLU. Its strided shortcut max-pools first;
//! - Res2Net (26w x 4s): the `4w` channels are split in four groups of `w`; group `i < 3` goes through its own
//!   3x3 conv + BN + ReLU after adding the previous group's output (not in a stage's first block), the last
//!   group passes unchanged (average-pooled 3x3 in a stage's first block). There is no `bn2`.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};

use super::SdaVariant;
use crate::fused::{self, conv_bn_act};
use crate::mobile_layers::{
    Activation, ConvBnAct, bn_flops, conv_flops, conv_out, conv2d, global_avg, linear_flops,
};
use crate::norm::{NormMode, batch_norm};

/// Res2Net's base width (`26w`) and scale (`4s`).
const RES2_BASE_WIDTH: usize = 26;
const RES2_SCALE: usize = 4;

/// The PyConv pyramid of stage `stage` (0-based): `(kernel, groups, output channels as a fraction 1/d of the
/// middle width)` per level (`PyConv4/3/2` and the plain 3x3 of the reference code).
fn pyconv_levels(stage: usize) -> &'static [(usize, usize, usize)] {
    match stage {
        0 => &[(3, 1, 4), (5, 4, 4), (7, 8, 4), (9, 16, 4)],
        1 => &[(3, 1, 4), (5, 4, 4), (7, 8, 2)],
        2 => &[(3, 1, 2), (5, 4, 2)],
        _ => &[(3, 1, 1)],
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

/// Res2Net's hierarchical split convolutions (reference `convs`, `bns`, `pool`).
#[derive(Module, Debug)]
pub struct Res2Split<B: Backend> {
    /// One 3x3 convolution per group except the last.
    pub convs: Vec<Conv2d<B>>,
    /// Their BatchNorms.
    pub bns: Vec<BatchNorm<B>>,
    /// Average pool of the last group, in a stage's first block only (which also skips the hierarchical sums).
    pool: Option<AvgPool2d>,
}

impl<B: Backend> Res2Split<B> {
    /// # Shapes
    /// - `x`: `[N, 4w, H, W]` -> `[N, 4w, H / s, W / s]`
    fn forward(&self, x: Tensor<B, 4>, norm: NormMode) -> Tensor<B, 4> {
        let mut groups = x.chunk(self.convs.len() + 1, 1);
        let last = groups.pop().expect("scale >= 2 groups");
        let mut outputs = Vec::with_capacity(groups.len() + 1);
        let mut previous: Option<Tensor<B, 4>> = None;
        for ((group, conv), bn) in groups.into_iter().zip(&self.convs).zip(&self.bns) {
            let input = match previous.take() {
                Some(prev) if self.pool.is_none() => prev + group,
                _ => group,
            };
            let y = conv_bn_act(conv, Some(bn), input, norm, Activation::Relu);
            outputs.push(y.clone());
            previous = Some(y);
        }
        outputs.push(match &self.pool {
            Some(pool) => pool.forward(last),
            None => last,
        });
        Tensor::cat(outputs, 1)
    }

    fn flops(&self, hw: [usize; 2]) -> (u64, [usize; 2]) {
        let width = self.bns[0].gamma.dims()[0];
        let mut total = 0;
        let mut out = hw;
        for conv in &self.convs {
            let (f, o) = conv_flops(conv, hw);
            // conv, BN, and the block's shared ReLU module.
            total += f + bn_flops(width, o) + (width * o[0] * o[1]) as u64;
            out = o;
        }
        if self.pool.is_some() {
            // Pooling counts its input elements.
            total += (width * hw[0] * hw[1]) as u64;
        }
        (total, out)
    }
}

/// A bottleneck that also returns its pre-activation output (reference `Bottleneck`, `SEBottleneck`,
/// `Bottle2neck`, `PyConvBlock`).
#[derive(Module, Debug)]
pub struct SdaBottleneck<B: Backend> {
    /// 1x1 reduction.
    pub conv1: Conv2d<B>,
    /// BN of `conv1`.
    pub bn1: BatchNorm<B>,
    /// The middle convolution: one 3x3 (strided, grouped for SDA-ResNet), or PyConv's pyramid levels whose
    /// outputs are concatenated (reference `conv2` or `conv2.conv2_1..4`); empty for Res2Net.
    pub conv2: Vec<Conv2d<B>>,
    /// BN of the middle convolution (none for Res2Net).
    pub bn2: Option<BatchNorm<B>>,
    /// Res2Net's split convolutions in place of `conv2`.
    pub res2: Option<Res2Split<B>>,
    /// 1x1 expansion.
    pub conv3: Conv2d<B>,
    /// BN of `conv3`.
    pub bn3: BatchNorm<B>,
    /// SE (SDA-SENet only).
    pub se: Option<BlockSe<B>>,
    /// Projection shortcut of the first block.
    pub downsample: Option<ConvBnAct<B>>,
    /// PyConv's strided shortcut max-pools before its 1x1 projection.
    downsample_pool: Option<MaxPool2d>,
}

impl<B: Backend> SdaBottleneck<B> {
    /// Block of stage `stage` (0-based), `planes` wide (output `4 * planes`).
    pub(super) fn new(
        variant: SdaVariant,
        stage: usize,
        cin: usize,
        planes: usize,
        stride: usize,
        device: &B::Device,
    ) -> Self {
        let cout = planes * 4;
        let first = stride != 1 || cin != cout;
        let mut conv2 = Vec::new();
        let mut bn2 = None;
        let mut res2 = None;
        let mut mid = planes;
        match variant {
            SdaVariant::ResNet | SdaVariant::SeResNet => {
                let groups = if variant == SdaVariant::ResNet { 8 } else { 1 };
                conv2.push(conv2d(planes, planes, 3, stride, groups, 1, false, device));
                bn2 = Some(BatchNormConfig::new(planes).init(device));
            }
            SdaVariant::PyConv => {
                for &(kernel, groups, fraction) in pyconv_levels(stage) {
                    conv2.push(conv2d(
                        planes,
                        planes / fraction,
                        kernel,
                        stride,
                        groups,
                        1,
                        false,
                        device,
                    ));
                }
                bn2 = Some(BatchNormConfig::new(planes).init(device));
            }
            SdaVariant::Res2Net => {
                let width = planes * RES2_BASE_WIDTH / 64;
                mid = width * RES2_SCALE;
                res2 = Some(Res2Split {
                    convs: (1..RES2_SCALE)
                        .map(|_| conv2d(width, width, 3, stride, 1, 1, false, device))
                        .collect(),
                    bns: (1..RES2_SCALE)
                        .map(|_| BatchNormConfig::new(width).init(device))
                        .collect(),
                    pool: first.then(|| {
                        AvgPool2dConfig::new([3, 3])
                            .with_strides([stride, stride])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .init()
                    }),
                });
            }
        }
        // PyTorch's round() is round-half-even; planes / 4 is an integer for every stage here.
        let hidden = planes / 4;
        let pooled_shortcut = variant == SdaVariant::PyConv && stride != 1;
        Self {
            conv1: conv2d(cin, mid, 1, 1, 1, 1, false, device),
            bn1: BatchNormConfig::new(mid).init(device),
            conv2,
            bn2,
            res2,
            conv3: conv2d(mid, cout, 1, 1, 1, 1, false, device),
            bn3: BatchNormConfig::new(cout).init(device),
            se: (variant == SdaVariant::SeResNet).then(|| BlockSe {
                fc1: LinearConfig::new(cout, hidden).init(device),
                fc2: LinearConfig::new(hidden, cout).init(device),
            }),
            downsample: first.then(|| {
                let conv_stride = if pooled_shortcut { 1 } else { stride };
                ConvBnAct::new(cin, cout, 1, conv_stride, 1, Activation::Identity, device)
            }),
            downsample_pool: pooled_shortcut.then(|| {
                MaxPool2dConfig::new([3, 3])
                    .with_strides([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init()
            }),
        }
    }

    /// Output channels (`4 * planes`).
    pub fn out_channels(&self) -> usize {
        self.bn3.gamma.dims()[0]
    }

    /// Returns the pre-activation output `Z` (residual sum, before the ReLU).
    ///
    /// # Shapes
    /// - `x`: `[N, cin, H, W]` -> `[N, 4p, H / s, W / s]`
    pub fn forward(&self, x: Tensor<B, 4>, norm: NormMode) -> Tensor<B, 4> {
        let y = conv_bn_act(&self.conv1, Some(&self.bn1), x.clone(), norm, Activation::Relu);
        let y = match (&self.res2, &self.bn2) {
            (Some(res2), _) => res2.forward(y, norm),
            (None, bn2) => {
                let levels: Vec<Tensor<B, 4>> =
                    self.conv2.iter().map(|c| fused::conv(c, y.clone())).collect();
                let y = Tensor::cat(levels, 1);
                match bn2 {
                    Some(bn) => relu(batch_norm(bn, y, norm)),
                    None => relu(y),
                }
            }
        };
        let mut y = conv_bn_act(&self.conv3, Some(&self.bn3), y, norm, Activation::Identity);
        if let Some(se) = &self.se {
            let [n, c, _, _] = y.dims();
            let att = sigmoid(se.fc2.forward(relu(se.fc1.forward(global_avg(y.clone())))));
            y = y * att.reshape([n, c, 1, 1]);
        }
        let shortcut = match (&self.downsample_pool, &self.downsample) {
            (Some(pool), Some(down)) => down.forward(fused::max_pool(pool, x), norm),
            (None, Some(down)) => down.forward(x, norm),
            (Some(pool), None) => fused::max_pool(pool, x),
            (None, None) => x,
        };
        y + shortcut
    }

    /// FLOPs for an `[h, w]` input (ptflops convention) and the output size. `final_relu`: the reference calls
    /// its ReLU module on the block output (the plain networks; SDA blocks use the uncounted `F.relu`).
    pub fn flops(&self, hw: [usize; 2], final_relu: bool) -> (u64, [usize; 2]) {
        let mid = self.bn1.gamma.dims()[0];
        let cout = self.out_channels();
        let (f1, o1) = conv_flops(&self.conv1, hw);
        let mut total = f1 + bn_flops(mid, o1) + (mid * o1[0] * o1[1]) as u64;
        let o2 = match &self.res2 {
            Some(res2) => {
                let (f, o) = res2.flops(o1);
                total += f;
                o
            }
            None => {
                let mut out = o1;
                for conv in &self.conv2 {
                    let (f, o) = conv_flops(conv, o1);
                    total += f;
                    out = o;
                }
                let planes = self.bn2.as_ref().map_or(0, |bn| bn.gamma.dims()[0]);
                total += bn_flops(planes, out) + (planes * out[0] * out[1]) as u64;
                out
            }
        };
        let (f3, o3) = conv_flops(&self.conv3, o2);
        total += f3 + bn_flops(cout, o3);
        if let Some(se) = &self.se {
            // AvgPool2d over the map, fc1, the shared ReLU module once more, fc2.
            let hidden = se.fc1.weight.dims()[1];
            total +=
                (cout * o3[0] * o3[1]) as u64 + linear_flops(&se.fc1) + hidden as u64 + linear_flops(&se.fc2);
        }
        let mut short_hw = hw;
        if self.downsample_pool.is_some() {
            let cin = self.conv1.weight.dims()[1];
            total += (cin * hw[0] * hw[1]) as u64;
            short_hw = pooled_size(hw, self.downsample_pool.as_ref());
        }
        if let Some(down) = &self.downsample {
            total += down.flops(short_hw).0;
        }
        if final_relu {
            total += (cout * o3[0] * o3[1]) as u64;
        }
        (total, o3)
    }
}

/// Output size of the shortcut's 3x3 max pool (padding 1).
fn pooled_size(hw: [usize; 2], pool: Option<&MaxPool2d>) -> [usize; 2] {
    match pool {
        Some(pool) => conv_out(hw, [3, 3], pool.stride, [1, 1], [1, 1]),
        None => hw,
    }
}
