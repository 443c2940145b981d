//! Building blocks shared by the mobile networks (MobileNetV2, MnasNet) and the SDA networks: a conv + BN +
//! activation unit, the DCA "mix" of the current descriptor with the previous block's attention, and a FLOPs
//! tally in the ptflops convention of DCANet's `flops_counter.py`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::FeatureSpec;
use crate::cost::{Chw, CostCounter, parameter_count};
use crate::fused::conv_bn_act;
use crate::norm::NormMode;

pub use crate::layers::Activation;

/// Convolution (no bias) + BatchNorm + activation, PyTorch's `Sequential(Conv2d, BatchNorm2d, act)`.
#[derive(Module, Debug)]
pub struct ConvBnAct<B: Backend> {
    /// The convolution (`<prefix>.0` in the reference checkpoints).
    pub conv: Conv2d<B>,
    /// Its BatchNorm (`<prefix>.1`).
    pub bn: BatchNorm<B>,
    act: Activation,
}

impl<B: Backend> ConvBnAct<B> {
    /// A `kernel x kernel` convolution with "same" padding `(kernel - 1) / 2 * dilation`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        act: Activation,
        device: &B::Device,
    ) -> Self {
        Self {
            conv: conv2d(cin, cout, kernel, stride, groups, 1, false, device),
            bn: BatchNormConfig::new(cout).init(device),
            act,
        }
    }

    /// # Shapes
    /// - `x`: `[N, cin, H, W]` -> `[N, cout, H / stride, W / stride]` (rounded up)
    pub fn forward(&self, x: Tensor<B, 4>, norm: NormMode) -> Tensor<B, 4> {
        conv_bn_act(&self.conv, Some(&self.bn), x, norm, self.act)
    }

    /// FLOPs for an `[h, w]` input and the output size.
    pub fn flops(&self, hw: [usize; 2]) -> (u64, [usize; 2]) {
        let (conv, out) = conv_flops(&self.conv, hw);
        let elems = (self.bn.gamma.dims()[0] * out[0] * out[1]) as u64;
        let act = if self.act == Activation::Identity {
            0
        } else {
            elems
        };
        (conv + 2 * elems + act, out)
    }
}

/// A 2-D convolution with symmetric padding `(kernel - 1) / 2 * dilation`, PyTorch's usual "same" padding.
#[allow(clippy::too_many_arguments)]
pub fn conv2d<B: Backend>(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    dilation: usize,
    bias: bool,
    device: &B::Device,
) -> Conv2d<B> {
    let pad = (kernel - 1) / 2 * dilation;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_dilation([dilation, dilation])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(bias)
        .init(device)
}

/// Output size of a convolution (or pooling) with symmetric padding.
pub fn conv_out(
    hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
) -> [usize; 2] {
    let one =
        |i: usize| (hw[i] + 2 * pad[i]).saturating_sub(dilation[i] * (kernel[i] - 1) + 1) / stride[i] + 1;
    [one(0), one(1)]
}

/// FLOPs of a convolution in the ptflops convention (multiply-accumulates, plus one per output for the bias).
pub fn conv_flops<B: Backend>(conv: &Conv2d<B>, hw: [usize; 2]) -> (u64, [usize; 2]) {
    let pad = match &conv.padding {
        PaddingConfig2d::Explicit(top, left, _, _) => [*top, *left],
        _ => [0, 0],
    };
    let out = conv_out(hw, conv.kernel_size, conv.stride, pad, conv.dilation);
    let [cout, cin_per_group, kh, kw] = conv.weight.dims();
    let positions = (out[0] * out[1]) as u64;
    let macs = (kh * kw * cin_per_group * cout) as u64 * positions;
    let bias = if conv.bias.is_some() {
        cout as u64 * positions
    } else {
        0
    };
    (macs + bias, out)
}

/// FLOPs of a Linear layer (multiply-accumulates; ptflops does not count its bias).
pub fn linear_flops<B: Backend>(linear: &Linear<B>) -> u64 {
    let [din, dout] = linear.weight.dims();
    (din * dout) as u64
}

/// FLOPs of a BatchNorm over `channels x positions` elements (2 per element, affine).
pub fn bn_flops(channels: usize, hw: [usize; 2]) -> u64 {
    2 * (channels * hw[0] * hw[1]) as u64
}

/// DCA's learnable connection (`alpha * current + beta * previous`, then LayerNorm and ReLU), as the official
/// code writes it: a 1x1 `Conv2d(2 -> 1)` over the two descriptors stacked as channels, `LayerNorm(C)`, ReLU.
/// The conv's two weights are the paper's alpha (current) and beta (previous attention).
#[derive(Module, Debug)]
pub struct DcaMix<B: Backend> {
    /// `Conv2d(2, 1, kernel_size=1)`: weight `[1, 2, 1, 1]` = (alpha, beta).
    pub conv: Conv2d<B>,
    /// `LayerNorm(C)` over the channel descriptor.
    pub norm: LayerNorm<B>,
}

impl<B: Backend> DcaMix<B> {
    /// A mix over `channels`-long descriptors; the reference code has a conv bias in some variants only.
    pub fn new(channels: usize, bias: bool, device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([2, 1], [1, 1]).with_bias(bias).init(device),
            norm: LayerNormConfig::new(channels).init(device),
        }
    }

    /// # Shapes
    /// - `current`, `previous`: `[N, C]` -> `[N, C]`
    pub fn forward(&self, current: Tensor<B, 2>, previous: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, c] = current.dims();
        let stacked = Tensor::cat(
            vec![current.reshape([n, 1, 1, c]), previous.reshape([n, 1, 1, c])],
            1,
        );
        relu(self.norm.forward(self.conv.forward(stacked))).reshape([n, c])
    }

    /// The connection weights `(alpha, beta)`: how much the current descriptor and the previous block's
    /// attention contribute.
    pub fn alpha_beta(&self) -> (f32, f32) {
        let w: Vec<f32> = self
            .conv
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        (
            w.first().copied().unwrap_or(f32::NAN),
            w.get(1).copied().unwrap_or(f32::NAN),
        )
    }
}

/// Global average pooling to a channel descriptor.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` -> `[N, C]`
pub fn global_avg<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

/// What MobileNetV2 and MnasNet share past their blocks: the last 1x1 conv (the C5 level) feeds a global average
/// pool and a Linear classifier.
///
/// # Shapes
/// - `last`: `[N, C, H, W]` -> `[N, num_classes]`
pub fn pooled_logits<B: Backend>(classifier: &Linear<B>, last: Tensor<B, 4>) -> Tensor<B, 2> {
    classifier.forward(global_avg(last))
}

/// [`crate::Backbone`] and [`crate::Classifier`] for a mobile network (`impl_mobile_backbone!(MnasNet,
/// LAST_CHANNELS)`): MobileNetV2 and MnasNet delegate the same way to their inherent `run` (the four levels),
/// `block_level_channels`, `with_norm_mode`, `with_frozen_stages` and `forward`, and count classes on their
/// `classifier`.
macro_rules! impl_mobile_backbone {
    ($net:ident, $last_channels:expr) => {
        impl<B: Backend> $crate::Backbone<B> for $net<B> {
            fn feature_specs(&self) -> Vec<$crate::FeatureSpec> {
                $crate::mobile_layers::mobile_feature_specs(self.block_level_channels(), $last_channels)
            }

            fn forward_features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
                self.run(x)
            }

            fn with_norm_mode(self, mode: $crate::NormMode) -> Self {
                $net::with_norm_mode(self, mode)
            }

            fn with_frozen_stages(self, stages: usize) -> Self {
                $net::with_frozen_stages(self, stages)
            }
        }

        impl<B: Backend> $crate::Classifier<B> for $net<B> {
            fn forward_logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
                self.forward(x)
            }

            fn num_classes(&self) -> usize {
                self.classifier.weight.dims()[1]
            }
        }
    };
}
pub(crate) use impl_mobile_backbone;

/// Freeze the first `end` units (blocks or stacks): no gradients for their parameters.
pub fn freeze_prefix<B: Backend, M: Module<B>>(units: Vec<M>, end: usize) -> Vec<M> {
    units
        .into_iter()
        .enumerate()
        .map(|(i, unit)| if i < end { unit.no_grad() } else { unit })
        .collect()
}

/// The norm mode of unit `unit` of `units` (`None`: the stem; `Some(units)`: the last conv, frozen with the
/// last stage) when the units before `frozen_end` are frozen.
pub fn frozen_norm(frozen_end: Option<usize>, unit: Option<usize>, units: usize, norm: NormMode) -> NormMode {
    match (frozen_end, unit) {
        (Some(_), None) => NormMode::Frozen,
        (Some(end), Some(i)) if i < end || (i == units && end == units) => NormMode::Frozen,
        _ => norm,
    }
}

/// Their detection levels: three block outputs at strides 4, 8, 16, then the last conv at stride 32.
pub fn mobile_feature_specs(block_channels: [usize; 3], last_channels: usize) -> Vec<FeatureSpec> {
    let mut specs: Vec<FeatureSpec> = block_channels
        .iter()
        .zip([4, 8, 16])
        .map(|(&c, s)| FeatureSpec::level(c, s))
        .collect();
    specs.push(FeatureSpec::level(last_channels, 32));
    specs
}

/// One cost row for an inverted residual block whose output is `channels x out`.
pub fn record_block<B: Backend, M: Module<B>>(
    counter: &mut CostCounter,
    name: &str,
    block: &M,
    (flops, out): (u64, [usize; 2]),
    channels: usize,
) {
    counter.record(
        name,
        "InvertedResidual",
        parameter_count(block),
        flops,
        [channels, out[0], out[1]],
    );
}

/// The cost rows of the last conv (on an `hw` map) and of the classifier; returns the logits' shape.
pub fn record_head<B: Backend>(
    counter: &mut CostCounter,
    head: &ConvBnAct<B>,
    classifier: &Linear<B>,
    hw: [usize; 2],
) -> Chw {
    let (flops, out) = head.flops(hw);
    let channels = head.bn.gamma.dims()[0];
    counter.record(
        "head",
        "ConvBNReLU",
        parameter_count(head),
        flops,
        [channels, out[0], out[1]],
    );
    let classes = classifier.weight.dims()[1];
    counter.record(
        "classifier",
        "Linear",
        parameter_count(classifier),
        linear_flops(classifier),
        [classes, 1, 1],
    );
    [classes, 1, 1]
}

/// A key map generated at run time, leaked once per `id` so it can serve as the zoo's `&'static` key map.
/// Bounded: one small list per architecture variant for the life of the process.
pub fn leak_key_map(id: &str, make: impl FnOnce() -> Vec<(String, String)>) -> crate::checkpoint::KeyMap {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Leaked = &'static [(&'static str, &'static str)];
    static MAPS: OnceLock<Mutex<HashMap<String, Leaked>>> = OnceLock::new();
    let mut maps = MAPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(map) = maps.get(id) {
        return map;
    }
    let leaked: Vec<(&'static str, &'static str)> = make()
        .into_iter()
        .map(|(from, to)| {
            (
                &*Box::leak(from.into_boxed_str()),
                &*Box::leak(to.into_boxed_str()),
            )
        })
        .collect();
    let leaked: Leaked = Box::leak(leaked.into_boxed_slice());
    maps.insert(id.to_string(), leaked);
    leaked
}
