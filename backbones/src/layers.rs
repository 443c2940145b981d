//! Small building blocks shared by the families: PyTorch-style conv/BN constructors and pooling helpers.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;

/// The activation after a convolution's BatchNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNetV2).
    Relu6,
    /// No activation (the linear bottleneck's projection).
    Identity,
}

impl Activation {
    /// Apply the activation.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Relu => relu(x),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Identity => x,
        }
    }

    /// The activation as a clamp `[lo, hi]` (infinite bounds where it has none).
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::Relu6 => (0.0, 6.0),
            Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY),
        }
    }
}

/// `nn.Conv2d(c_in, c_out, k, stride, padding=pad, dilation, groups, bias)` with Kaiming-normal (fan-out)
/// initialisation, as the reference code initialises its convolutions.
#[allow(clippy::too_many_arguments)]
pub fn conv2d<B: Backend>(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    groups: usize,
    bias: bool,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_dilation([dilation, dilation])
        .with_groups(groups)
        .with_bias(bias)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

/// Bias-free `k x k` convolution with "same" padding `dilation * (k - 1) / 2`.
pub fn conv_nobias<B: Backend>(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    device: &B::Device,
) -> Conv2d<B> {
    conv2d(c_in, c_out, kernel, stride, kernel / 2, 1, 1, false, device)
}

/// `nn.BatchNorm2d(c)`: eps 1e-5, PyTorch momentum 0.1 (burn's momentum is the same convention).
pub fn batch_norm<B: Backend>(c: usize, device: &B::Device) -> BatchNorm<B> {
    BatchNormConfig::new(c)
        .with_epsilon(1e-5)
        .with_momentum(0.1)
        .init(device)
}

/// Global average pool: `[N, C, H, W]` -> `[N, C, 1, 1]`.
pub fn gap<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    adaptive_avg_pool2d(x, [1, 1])
}

/// Global max pool: `[N, C, H, W]` -> `[N, C, 1, 1]`.
pub fn gmp<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, _, _] = x.dims();
    x.flatten::<3>(2, 3).max_dim(2).reshape([n, c, 1, 1])
}

/// The ResNet stem's max pool: 3x3, stride 2, padding 1.
pub fn stem_max_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    crate::fused::max_pool2d(x, [3, 3], [2, 2], [1, 1])
}
