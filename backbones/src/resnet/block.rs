//! Residual blocks (torchvision layout: `conv1, bn1, conv2, bn2[, conv3, bn3], downsample.{0,1}`).

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use super::attention::{Attention, Carry};
use super::sk::SkBottleneck;
use crate::cost::{Chw, CostCounter};
use crate::fused::{add_act, conv_bn_act};
use crate::layers::Activation::{Identity, Relu};
use crate::layers::{batch_norm, conv_nobias};
use crate::norm::NormMode;

/// The projection shortcut: 1x1 convolution (strided) + BatchNorm. Reference keys `downsample.0`, `downsample.1`.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// 1x1 convolution.
    pub conv: Conv2d<B>,
    /// Its BatchNorm.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> Downsample<B> {
    /// Shortcut from `c_in` to `c_out` channels with `stride`.
    pub fn new(c_in: usize, c_out: usize, stride: usize, device: &B::Device) -> Self {
        Self {
            conv: conv_nobias(c_in, c_out, 1, stride, device),
            bn: batch_norm(c_out, device),
        }
    }

    /// # Shapes
    /// - `x`: `[N, C_in, H, W]` -> `[N, C_out, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<B, 4>, mode: NormMode) -> Tensor<B, 4> {
        conv_bn_act(&self.conv, Some(&self.bn), x, mode, Identity)
    }

    pub(crate) fn count(&self, c: &mut CostCounter, x: Chw) -> Chw {
        c.scoped("downsample", |c| {
            let y = c.conv2d("0", &self.conv, x);
            c.batch_norm("1", &self.bn, y)
        })
    }
}

/// Two 3x3 convolutions (ResNet-18/34), the first one strided.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// 3x3, stride.
    pub conv1: Conv2d<B>,
    /// BN after conv1.
    pub bn1: BatchNorm<B>,
    /// 3x3.
    pub conv2: Conv2d<B>,
    /// BN after conv2.
    pub bn2: BatchNorm<B>,
    /// Attention on the branch.
    pub attn: Option<Attention<B>>,
    /// Projection shortcut of a stage's first block.
    pub downsample: Option<Downsample<B>>,
}

/// 1x1 reduce, 3x3 (strided, torchvision "v1.5"), 1x1 expand x4 (ResNet-50/101/152).
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// 1x1 reduce.
    pub conv1: Conv2d<B>,
    /// BN after conv1.
    pub bn1: BatchNorm<B>,
    /// 3x3, stride.
    pub conv2: Conv2d<B>,
    /// BN after conv2.
    pub bn2: BatchNorm<B>,
    /// 1x1 expand.
    pub conv3: Conv2d<B>,
    /// BN after conv3.
    pub bn3: BatchNorm<B>,
    /// Attention on the branch.
    pub attn: Option<Attention<B>>,
    /// Projection shortcut of a stage's first block.
    pub downsample: Option<Downsample<B>>,
}

/// The shape a block needs to be built.
#[derive(Debug, Clone, Copy)]
pub struct BlockShape {
    /// Input channels.
    pub inplanes: usize,
    /// Width of the 3x3 stage (output = planes * expansion).
    pub planes: usize,
    /// Stride of the 3x3 convolution and the shortcut.
    pub stride: usize,
}

impl<B: Backend> BasicBlock<B> {
    /// Build with an optional attention and the shortcut if the shape changes.
    pub fn new(s: BlockShape, attn: Option<Attention<B>>, device: &B::Device) -> Self {
        let downsample = (s.stride != 1 || s.inplanes != s.planes)
            .then(|| Downsample::new(s.inplanes, s.planes, s.stride, device));
        Self {
            conv1: conv_nobias(s.inplanes, s.planes, 3, s.stride, device),
            bn1: batch_norm(s.planes, device),
            conv2: conv_nobias(s.planes, s.planes, 3, 1, device),
            bn2: batch_norm(s.planes, device),
            attn,
            downsample,
        }
    }

    /// # Shapes
    /// - `x`: `[N, C_in, H, W]` -> `[N, planes, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>, mode: NormMode) -> (Tensor<B, 4>, Carry<B>) {
        let identity = match &self.downsample {
            Some(d) => d.forward(x.clone(), mode),
            None => x.clone(),
        };
        let out = conv_bn_act(&self.conv1, Some(&self.bn1), x, mode, Relu);
        let out = conv_bn_act(&self.conv2, Some(&self.bn2), out, mode, Identity);
        let (out, carry) = match &self.attn {
            Some(a) => a.forward(out, carry, mode),
            None => (out, carry),
        };
        (add_act(out, identity, Relu), carry)
    }

    fn count(&self, c: &mut CostCounter, x: Chw, prev: Option<Chw>) -> Chw {
        let y = c.conv2d("conv1", &self.conv1, x);
        c.batch_norm("bn1", &self.bn1, y);
        c.relu("relu", y);
        let y = c.conv2d("conv2", &self.conv2, y);
        c.batch_norm("bn2", &self.bn2, y);
        if let Some(a) = &self.attn {
            a.count(c, y, prev);
        }
        if let Some(d) = &self.downsample {
            d.count(c, x);
        }
        c.relu("relu", y)
    }
}

impl<B: Backend> Bottleneck<B> {
    /// Build with an optional attention and the shortcut if the shape changes.
    pub fn new(s: BlockShape, attn: Option<Attention<B>>, device: &B::Device) -> Self {
        let out = s.planes * 4;
        let downsample =
            (s.stride != 1 || s.inplanes != out).then(|| Downsample::new(s.inplanes, out, s.stride, device));
        Self {
            conv1: conv_nobias(s.inplanes, s.planes, 1, 1, device),
            bn1: batch_norm(s.planes, device),
            conv2: conv_nobias(s.planes, s.planes, 3, s.stride, device),
            bn2: batch_norm(s.planes, device),
            conv3: conv_nobias(s.planes, out, 1, 1, device),
            bn3: batch_norm(out, device),
            attn,
            downsample,
        }
    }

    /// # Shapes
    /// - `x`: `[N, C_in, H, W]` -> `[N, 4 * planes, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>, mode: NormMode) -> (Tensor<B, 4>, Carry<B>) {
        let identity = match &self.downsample {
            Some(d) => d.forward(x.clone(), mode),
            None => x.clone(),
        };
        let out = conv_bn_act(&self.conv1, Some(&self.bn1), x, mode, Relu);
        let out = conv_bn_act(&self.conv2, Some(&self.bn2), out, mode, Relu);
        let out = conv_bn_act(&self.conv3, Some(&self.bn3), out, mode, Identity);
        let (out, carry) = match &self.attn {
            Some(a) => a.forward(out, carry, mode),
            None => (out, carry),
        };
        (add_act(out, identity, Relu), carry)
    }

    fn count(&self, c: &mut CostCounter, x: Chw, prev: Option<Chw>) -> Chw {
        let y = c.conv2d("conv1", &self.conv1, x);
        c.batch_norm("bn1", &self.bn1, y);
        c.relu("relu", y);
        let y = c.conv2d("conv2", &self.conv2, y);
        c.batch_norm("bn2", &self.bn2, y);
        c.relu("relu", y);
        let y = c.conv2d("conv3", &self.conv3, y);
        c.batch_norm("bn3", &self.bn3, y);
        if let Some(a) = &self.attn {
            a.count(c, y, prev);
        }
        if let Some(d) = &self.downsample {
            d.count(c, x);
        }
        c.relu("relu", y)
    }
}

/// Any residual block of the family.
// Variants stay unboxed: burn's `Module` derive needs the module types themselves.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Block<B: Backend> {
    /// ResNet-18/34 block.
    Basic(BasicBlock<B>),
    /// ResNet-50/101/152 block.
    Bottleneck(Bottleneck<B>),
    /// Selective-kernel bottleneck.
    Sk(SkBottleneck<B>),
}

impl<B: Backend> Block<B> {
    /// # Shapes
    /// - `x`: `[N, C_in, H, W]` -> `[N, C_out, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>, mode: NormMode) -> (Tensor<B, 4>, Carry<B>) {
        match self {
            Block::Basic(b) => b.forward(x, carry, mode),
            Block::Bottleneck(b) => b.forward(x, carry, mode),
            Block::Sk(b) => b.forward(x, carry, mode),
        }
    }

    /// Record the block's cost; `prev` is the previous block's output shape (`None` for the network's first
    /// block, which no previous attention reaches).
    pub fn count(&self, c: &mut CostCounter, x: Chw, prev: Option<Chw>) -> Chw {
        match self {
            Block::Basic(b) => b.count(c, x, prev),
            Block::Bottleneck(b) => b.count(c, x, prev),
            Block::Sk(b) => b.count(c, x, prev),
        }
    }
}
