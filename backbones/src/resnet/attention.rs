//! Attention modules placed on a residual branch (after its last BatchNorm, before the identity is added), and
//! the state that DCA threads from block to block.

use burn::module::Param;
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig1d};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid, softmax};

use super::dca::{DcaCbam, DcaGc, DcaVector};
use crate::cost::{Chw, CostCounter};
use crate::layers::{conv2d, gap, gmp};
use crate::norm::{NormMode, batch_norm as bn};

/// What a block hands to the next one: the previous block's attention, for the DCA versions (`None` in the
/// first block and in networks without DCA). Shapes depend on the attention type, see each module.
#[derive(Debug, Clone)]
pub struct Carry<B: Backend> {
    /// Channel attention of the previous block.
    pub channel: Option<Tensor<B, 4>>,
    /// Second part (SK's second branch, CBAM's spatial attention).
    pub other: Option<Tensor<B, 4>>,
}

impl<B: Backend> Carry<B> {
    /// Nothing carried (first block).
    pub fn empty() -> Self {
        Self {
            channel: None,
            other: None,
        }
    }
}

/// Squeeze-and-excitation: `x * sigmoid(fc2(relu(fc1(gap(x)))))`, reduction 16.
///
/// Reference keys: `se.fc.0` (Linear C -> C/16), `se.fc.2` (Linear C/16 -> C).
#[derive(Module, Debug)]
pub struct Se<B: Backend> {
    /// Squeeze.
    pub fc1: Linear<B>,
    /// Excite.
    pub fc2: Linear<B>,
}

impl<B: Backend> Se<B> {
    /// SE for `channels` channels.
    pub fn new(channels: usize, reduction: usize, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(channels, channels / reduction).init(device),
            fc2: LinearConfig::new(channels / reduction, channels).init(device),
        }
    }

    /// The excitation `[N, C]` of a descriptor `[N, C]`.
    pub fn excite(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        sigmoid(self.fc2.forward(relu(self.fc1.forward(pooled))))
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, _, _] = x.dims();
        let a = self.excite(gap(x.clone()).reshape([n, c]));
        x * a.reshape([n, c, 1, 1])
    }

    /// Cost of the MLP (`fc.0`, ReLU `fc.1`, `fc.2`; the sigmoid is free).
    pub fn count_mlp(&self, c: &mut CostCounter) {
        let hidden = c.linear("fc.0", &self.fc1, 1);
        c.relu("fc.1", [hidden, 1, 1]);
        c.linear("fc.2", &self.fc2, 1);
    }
}

/// ECA: `x * sigmoid(conv1d_k(gap(x)))`, the 1-D convolution (no bias) running across channels.
///
/// Reference key: `eca.conv.weight` `[1, 1, k]`.
#[derive(Module, Debug)]
pub struct Eca<B: Backend> {
    /// Cross-channel 1-D convolution.
    pub conv: Conv1d<B>,
}

impl<B: Backend> Eca<B> {
    /// ECA with odd kernel size `k`.
    pub fn new(k: usize, device: &B::Device) -> Self {
        let conv = Conv1dConfig::new(1, 1, k)
            .with_padding(PaddingConfig1d::Explicit((k - 1) / 2, (k - 1) / 2))
            .with_bias(false)
            .init(device);
        Self { conv }
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, _, _] = x.dims();
        let y = self.conv.forward(gap(x.clone()).reshape([n, 1, c]));
        x * sigmoid(y).reshape([n, c, 1, 1])
    }
}

/// CBAM's channel gate: `x * sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))`, reduction 16.
///
/// Reference keys: `ChannelGate.mlp.1`, `ChannelGate.mlp.3` (the MLP's Linear layers).
#[derive(Module, Debug)]
pub struct ChannelGate<B: Backend> {
    /// First Linear (C -> C/16).
    pub fc1: Linear<B>,
    /// Second Linear (C/16 -> C).
    pub fc2: Linear<B>,
}

impl<B: Backend> ChannelGate<B> {
    /// Gate for `channels` channels.
    pub fn new(channels: usize, reduction: usize, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(channels, channels / reduction).init(device),
            fc2: LinearConfig::new(channels / reduction, channels).init(device),
        }
    }

    /// The shared MLP on a descriptor `[N, C]`.
    pub fn mlp(&self, v: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2.forward(relu(self.fc1.forward(v)))
    }

    /// The MLP's cost for one descriptor.
    pub fn count_mlp(&self, c: &mut CostCounter) {
        let hidden = c.linear("mlp.1", &self.fc1, 1);
        c.relu("mlp.2", [hidden, 1, 1]);
        c.linear("mlp.3", &self.fc2, 1);
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, _, _] = x.dims();
        let sum = self.mlp(gap(x.clone()).reshape([n, c])) + self.mlp(gmp(x.clone()).reshape([n, c]));
        x * sigmoid(sum).reshape([n, c, 1, 1])
    }

    /// The gate's cost on a map of shape `x`: both poolings and the MLP twice.
    pub fn count(&self, c: &mut CostCounter, x: Chw) {
        c.global_avg_pool("avgpool", x);
        self.count_mlp(c);
        c.pool("maxpool", "AdaptiveMaxPool2d", x, [x[0], 1, 1]);
        self.count_mlp(c);
    }
}

/// CBAM's channel pool: channel-wise max and mean, `[N, C, H, W]` -> `[N, 2, H, W]`.
pub fn channel_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    Tensor::cat(vec![x.clone().max_dim(1), x.mean_dim(1)], 1)
}

/// CBAM's spatial gate: `x * sigmoid(bn(conv7x7(channel_pool(x))))`.
///
/// Reference keys: `SpatialGate.spatial.conv` (Conv2d 2 -> 1, 7x7, no bias), `SpatialGate.spatial.bn`.
#[derive(Module, Debug)]
pub struct SpatialGate<B: Backend> {
    /// 7x7 convolution.
    pub conv: Conv2d<B>,
    /// Its BatchNorm (PyTorch momentum 0.01).
    pub bn: BatchNorm<B>,
}

impl<B: Backend> SpatialGate<B> {
    /// The gate.
    pub fn new(device: &B::Device) -> Self {
        Self {
            conv: conv2d(2, 1, 7, 1, 3, 1, 1, false, device),
            bn: BatchNormConfig::new(1)
                .with_epsilon(1e-5)
                .with_momentum(0.01)
                .init(device),
        }
    }

    /// The gate's scale `[N, 1, H, W]` from a compressed map `[N, 2, H, W]`.
    pub fn scale(&self, compressed: Tensor<B, 4>, mode: NormMode) -> Tensor<B, 4> {
        sigmoid(bn(&self.bn, self.conv.forward(compressed), mode))
    }

    /// The conv + BN cost on an `H x W` map.
    pub fn count_conv(&self, c: &mut CostCounter, x: Chw) {
        let y = c.conv2d("spatial.conv", &self.conv, [2, x[1], x[2]]);
        c.batch_norm("spatial.bn", &self.bn, y);
    }
}

/// CBAM: channel gate then spatial gate.
#[derive(Module, Debug)]
pub struct Cbam<B: Backend> {
    /// Channel gate.
    pub channel: ChannelGate<B>,
    /// Spatial gate.
    pub spatial: SpatialGate<B>,
}

/// Global context block (GCNet), attention pooling and `channel_add` fusion:
/// `x + conv2(relu(ln(conv1(softmax_hw(conv_mask(x)) . x))))`.
///
/// Reference keys: `gc.conv_mask` (Conv2d C -> 1, bias), `gc.channel_add_conv.0` (Conv2d C -> C/16, bias),
/// `.1` (LayerNorm over `[C/16, 1, 1]`), `.3` (Conv2d C/16 -> C, bias).
#[derive(Module, Debug)]
pub struct Gc<B: Backend> {
    /// Attention-pooling mask.
    pub conv_mask: Conv2d<B>,
    /// Transform, first 1x1.
    pub add_conv1: Conv2d<B>,
    /// LayerNorm of the transform.
    pub add_norm: ContextNorm<B>,
    /// Transform, second 1x1.
    pub add_conv2: Conv2d<B>,
}

/// `nn.LayerNorm([C, 1, 1])` on a `[N, C, 1, 1]` context (parameters shaped `[C, 1, 1]` as in the reference).
#[derive(Module, Debug)]
pub struct ContextNorm<B: Backend> {
    /// Scale `[C, 1, 1]`.
    pub weight: Param<Tensor<B, 3>>,
    /// Shift `[C, 1, 1]`.
    pub bias: Param<Tensor<B, 3>>,
}

impl<B: Backend> ContextNorm<B> {
    /// Identity-initialised norm over `c` channels.
    pub fn new(c: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([c, 1, 1], device)),
            bias: Param::from_tensor(Tensor::zeros([c, 1, 1], device)),
        }
    }

    /// # Shapes
    /// - `x`: `[N, C, 1, 1]`, output the same; normalised over `C` (eps 1e-5, biased variance)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, _, _] = x.dims();
        let flat = x.reshape([n, c]);
        let mean = flat.clone().mean_dim(1);
        let centred = flat - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(1);
        let normed = (centred / (var + 1e-5).sqrt()).reshape([n, c, 1, 1]);
        normed * self.weight.val().unsqueeze::<4>() + self.bias.val().unsqueeze::<4>()
    }
}

impl<B: Backend> Gc<B> {
    /// GC for `channels` channels, transform width `planes`.
    pub fn new(channels: usize, planes: usize, device: &B::Device) -> Self {
        Self {
            conv_mask: conv2d(channels, 1, 1, 1, 0, 1, 1, true, device),
            add_conv1: conv2d(channels, planes, 1, 1, 0, 1, 1, true, device),
            add_norm: ContextNorm::new(planes, device),
            add_conv2: conv2d(planes, channels, 1, 1, 0, 1, 1, true, device),
        }
    }

    /// Attention pooling: `[N, C, H, W]` -> context `[N, C, 1, 1]`.
    pub fn context(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let mask = softmax(self.conv_mask.forward(x.clone()).reshape([n, h * w, 1]), 1);
        x.reshape([n, c, h * w]).matmul(mask).reshape([n, c, 1, 1])
    }

    /// The `channel_add` transform of a context.
    pub fn transform(&self, context: Tensor<B, 4>) -> Tensor<B, 4> {
        self.add_conv2
            .forward(relu(self.add_norm.forward(self.add_conv1.forward(context))))
    }

    /// Cost of the pooling on `x`.
    pub fn count_context(&self, c: &mut CostCounter, x: Chw) {
        c.conv2d("conv_mask", &self.conv_mask, x);
    }

    /// Cost of the transform.
    pub fn count_transform(&self, c: &mut CostCounter, channels: usize) {
        let y = c.conv2d("channel_add_conv.0", &self.add_conv1, [channels, 1, 1]);
        c.free("channel_add_conv.1", "LayerNorm", &self.add_norm, y);
        c.relu("channel_add_conv.2", y);
        c.conv2d("channel_add_conv.3", &self.add_conv2, y);
    }
}

/// Gather-excite theta-minus: `x * sigmoid(gap(x))`. No parameters.
#[derive(Module, Debug)]
pub struct Ge<B: Backend> {
    _backend: core::marker::PhantomData<B>,
}

impl<B: Backend> Ge<B> {
    /// The module.
    pub fn new() -> Self {
        Self {
            _backend: core::marker::PhantomData,
        }
    }
}

impl<B: Backend> Default for Ge<B> {
    fn default() -> Self {
        Self::new()
    }
}

/// The attention of one residual block.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // burn's Module derive needs unboxed module variants
pub enum Attention<B: Backend> {
    /// Squeeze-and-excitation.
    Se(Se<B>),
    /// Efficient channel attention.
    Eca(Eca<B>),
    /// Convolutional block attention module.
    Cbam(Cbam<B>),
    /// Global context.
    Gc(Gc<B>),
    /// Gather-excite theta-minus.
    Ge(Ge<B>),
    /// DCA-SE and DCA-GE (the same connection on a channel vector).
    DcaVector(DcaVector<B>),
    /// DCA-GC.
    DcaGc(DcaGc<B>),
    /// DCA-CBAM.
    DcaCbam(DcaCbam<B>),
}

impl<B: Backend> Attention<B> {
    /// Apply to the residual branch `x`, given what the previous block carried; return the re-weighted branch
    /// and what to carry to the next block.
    ///
    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>, mode: NormMode) -> (Tensor<B, 4>, Carry<B>) {
        match self {
            Attention::Se(m) => (m.forward(x), carry),
            Attention::Eca(m) => (m.forward(x), carry),
            Attention::Cbam(m) => {
                let x = m.channel.forward(x);
                let s = m.spatial.scale(channel_pool(x.clone()), mode);
                (x * s, carry)
            }
            Attention::Gc(m) => {
                let t = m.transform(m.context(x.clone()));
                (x + t, carry)
            }
            Attention::Ge(_) => {
                let s = sigmoid(gap(x.clone()));
                (x * s, carry)
            }
            Attention::DcaVector(m) => m.forward(x, carry),
            Attention::DcaGc(m) => m.forward(x, carry),
            Attention::DcaCbam(m) => m.forward(x, carry, mode),
        }
    }

    /// Record the cost for a branch of shape `x`; `prev` is the shape of the previous block's branch (`None`
    /// in the network's first block, where no previous attention arrives).
    pub fn count(&self, c: &mut CostCounter, x: Chw, prev: Option<Chw>) {
        match self {
            Attention::Se(m) => c.scoped("se", |c| {
                c.global_avg_pool("avg_pool", x);
                m.count_mlp(c);
            }),
            Attention::Eca(m) => c.scoped("eca", |c| {
                c.global_avg_pool("avg_pool", x);
                c.conv1d("conv", &m.conv, [x[0], 1, 1]);
            }),
            Attention::Cbam(m) => c.scoped("cbam", |c| {
                c.scoped("ChannelGate", |c| m.channel.count(c, x));
                c.scoped("SpatialGate", |c| m.spatial.count_conv(c, x));
            }),
            Attention::Gc(m) => c.scoped("gc", |c| {
                m.count_context(c, x);
                m.count_transform(c, x[0]);
            }),
            Attention::Ge(_) => c.scoped("ge", |c| {
                c.global_avg_pool("gap", x);
            }),
            Attention::DcaVector(m) => m.count(c, x, prev),
            Attention::DcaGc(m) => c.scoped("rgc", |c| m.count(c, x, prev)),
            Attention::DcaCbam(m) => c.scoped("cbam", |c| m.count(c, x, prev)),
        }
    }
}
