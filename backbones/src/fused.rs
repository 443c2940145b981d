//! Convolution + BatchNorm + activation, max pooling and residual sums on the CPU kernels of
//! [`crate::kernels`].
//!
//! Layers call [`conv_bn_act`] (or [`conv`], [`max_pool2d`], [`add_act`]) instead of burn's modules and ops.
//! The backend's type picks the implementation:
//! - `Flex` (burn's CPU backend without autodiff, i.e. inference): the convolution, the inference BatchNorm
//!   and the activation run as one fused, multi-threaded kernel; pooling and residual sums on theirs;
//! - `Autodiff<Flex>` (training on the CPU): the convolution is an autodiff op whose forward and backward
//!   are the kernels of [`crate::kernels::conv`] and [`crate::kernels::conv_grad`]; BatchNorm, activation and
//!   the rest stay burn ops;
//! - any other backend (CUDA): burn's own `act(batch_norm(conv.forward(x)))`.
//!
//! burn 0.21 has no hook to replace one backend op for one backend inside generic model code, so the choice
//! is made here by `TypeId`; the kernels only ever see `Flex` tensors. All paths compute the same function
//! (tested against each other, gradients included; the PyTorch parity fixtures run through the fused one).

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::FlexTensor;

use crate::kernels::{self, conv::ConvGeometry, conv::Epilogue, pool::PoolGeometry};
use crate::layers::Activation;
use crate::norm::{NormMode, batch_norm, frozen_affine};

/// `act(bn(conv(x)))`, with `bn` skipped when `None`. The BatchNorm follows `mode` (see [`batch_norm`]).
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]` -> `[N, C_out, H_out, W_out]`
pub fn conv_bn_act<B: Backend>(
    conv: &Conv2d<B>,
    bn: Option<&BatchNorm<B>>,
    x: Tensor<B, 4>,
    mode: NormMode,
    act: Activation,
) -> Tensor<B, 4> {
    let geometry = kernel_geometry(conv, &x);
    let y = match geometry {
        Some(geometry) if is_flex::<B>() => return fused(conv, bn, x, geometry, act),
        Some(geometry) if is_autodiff_flex::<B>() => conv_autodiff(conv, x, geometry),
        _ => conv.forward(x),
    };
    let y = match bn {
        Some(bn) => batch_norm(bn, y, mode),
        None => y,
    };
    act.apply(y)
}

/// `conv(x)` (with its bias), through the fused kernel on the CPU backend.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]` -> `[N, C_out, H_out, W_out]`
pub fn conv<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    conv_bn_act(conv, None, x, NormMode::Auto, Activation::Identity)
}

/// `act(a + b)`, the residual sum of a block.
///
/// # Shapes
/// - `a`, `b`: the same shape, output that shape
pub fn add_act<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    act: Activation,
) -> Tensor<B, D> {
    if !is_flex::<B>() || a.dims() != b.dims() {
        return act.apply(a + b);
    }
    let shape = a.shape();
    let (a, b) = (to_flex(a), to_flex(b));
    let (lo, hi) = act.bounds();
    let out = kernels::eltwise::add_clamp(&flex_values(&a), &flex_values(&b), lo, hi);
    from_flex(FlexTensor::from_data(TensorData::new(out, shape)))
}

/// `MaxPool2d(kernel, stride, padding)` (dilation 1, floor mode), PyTorch's semantics.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` -> `[N, C, (H + 2 p - k) / s + 1, (W + 2 p - k) / s + 1]`
pub fn max_pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<B, 4> {
    if !is_flex::<B>() {
        return burn::tensor::module::max_pool2d(x, kernel, stride, padding, [1, 1], false);
    }
    let [n, c, h, w] = x.dims();
    let geometry = PoolGeometry {
        planes: n * c,
        in_hw: [h, w],
        kernel,
        stride,
        padding,
    };
    let [oh, ow] = geometry.out_hw();
    let out = kernels::pool::max_pool2d(&flex_values(&to_flex(x)), &geometry);
    from_flex(FlexTensor::from_data(TensorData::new(out, [n, c, oh, ow])))
}

/// `pool.forward(x)`, through [`max_pool2d`] when the pool is one it covers (symmetric padding, no
/// dilation, floor mode).
///
/// # Shapes
/// - `x`: `[N, C, H, W]` -> pooled
pub fn max_pool<B: Backend>(pool: &MaxPool2d, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match symmetric_padding(&pool.padding) {
        Some(p)
            if pool.dilation == [1, 1]
                && !pool.ceil_mode
                && 2 * p[0] <= pool.kernel_size[0]
                && 2 * p[1] <= pool.kernel_size[1] =>
        {
            max_pool2d(x, pool.kernel_size, pool.stride, p)
        }
        _ => pool.forward(x),
    }
}

/// The padding `[height, width]` of a layer padded the same on both sides of each axis (the only kind the
/// kernels take), `None` for any other.
fn symmetric_padding(padding: &PaddingConfig2d) -> Option<[usize; 2]> {
    match *padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    }
}

/// Whether `B` is the CPU backend, `Flex` or `Autodiff<Flex>` (for code that picks a formulation by backend).
pub fn is_cpu<B: Backend>() -> bool {
    is_flex::<B>() || is_autodiff_flex::<B>()
}

/// Whether `B` is `Flex`, the CPU backend without autodiff, whose tensors the kernels can work on.
fn is_flex<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// The CPU backend under autodiff, as the trainer builds it.
type AutodiffFlex = Autodiff<Flex>;

/// Whether `B` is `Autodiff<Flex>`.
fn is_autodiff_flex<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<AutodiffFlex>()
}

/// The kernel's geometry when the CPU kernels can compute this convolution: symmetric padding, and not
/// depthwise-like (a grouped convolution with few input channels per group makes GEMMs with a tiny inner
/// dimension, which burn's depthwise kernel does better).
fn kernel_geometry<B: Backend>(conv: &Conv2d<B>, x: &Tensor<B, 4>) -> Option<ConvGeometry> {
    let padding = symmetric_padding(&conv.padding)?;
    let [c_out, c_in_per_group, kh, kw] = conv.weight.dims();
    let [batch, c_in, h, w] = x.dims();
    if (conv.groups > 1 && c_in_per_group < 8) || c_in != c_in_per_group * conv.groups {
        return None;
    }
    Some(ConvGeometry {
        batch,
        c_in,
        in_hw: [h, w],
        c_out,
        kernel: [kh, kw],
        stride: conv.stride,
        padding,
        dilation: conv.dilation,
        groups: conv.groups,
    })
}

fn fused<B: Backend>(
    conv: &Conv2d<B>,
    bn: Option<&BatchNorm<B>>,
    x: Tensor<B, 4>,
    geometry: ConvGeometry,
    act: Activation,
) -> Tensor<B, 4> {
    let x = to_flex(x);
    let weight = to_flex(conv.weight.val());
    // Inference BatchNorm is the affine `y * scale + shift` of `norm::frozen_affine`; a conv bias b becomes
    // part of the shift: (acc + b) * scale + shift.
    let affine = bn.map(|bn| {
        let (scale, shift) = frozen_affine(bn);
        (host(scale), host(shift))
    });
    let bias = conv.bias.as_ref().map(|b| host(b.val()));
    let (scale, shift) = match (affine, bias) {
        (Some((scale, shift)), Some(bias)) => {
            let shift = bias
                .iter()
                .zip(&scale)
                .zip(shift)
                .map(|((b, s), t)| b * s + t)
                .collect();
            (Some(scale), Some(shift))
        }
        (Some((scale, shift)), None) => (Some(scale), Some(shift)),
        (None, bias) => (None, bias),
    };
    let (lo, hi) = act.bounds();
    let epilogue = Epilogue {
        scale: scale.as_deref(),
        shift: shift.as_deref(),
        lo,
        hi,
    };
    let out = kernels::conv::conv2d(&flex_values(&x), &flex_values(&weight), &geometry, &epilogue);
    from_flex(FlexTensor::from_data(TensorData::new(out, geometry.out_shape())))
}

/// `conv(x)` on `Autodiff<Flex>` as an autodiff op running the CPU kernels both ways; the bias (if any) is
/// added by burn.
fn conv_autodiff<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, geometry: ConvGeometry) -> Tensor<B, 4> {
    let x = downcast::<B, AutodiffFlex, 4>(x);
    let weight = downcast::<B, AutodiffFlex, 4>(conv.weight.val());
    let out = kernels::conv::conv2d(
        &flex_values(&x.primitive),
        &flex_values(&weight.primitive),
        &geometry,
        &Epilogue::NONE,
    );
    let out = FlexTensor::from_data(TensorData::new(out, geometry.out_shape()));
    let y = match ConvBackward
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, weight.primitive, geometry), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    let y: Tensor<B, 4> = upcast::<AutodiffFlex, B, 4>(y);
    match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, geometry.c_out, 1, 1]),
        None => y,
    }
}

/// Backward step of [`conv_autodiff`]: parents (input, weights), state (input, weights, geometry).
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = (FlexTensor, FlexTensor, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [input, weights] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let dy = flex_values(&dy);
        let (x, w, g) = ops.state;
        if let Some(node) = input {
            let dx = kernels::conv_grad::conv2d_grad_input(&dy, &flex_values(&w), &g);
            let shape = [g.batch, g.c_in, g.in_hw[0], g.in_hw[1]];
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
        }
        if let Some(node) = weights {
            let dw = kernels::conv_grad::conv2d_grad_weight(&flex_values(&x), &dy, &g);
            let shape = w.layout().shape().clone();
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dw, shape)));
        }
    }
}

/// The primitive of a tensor of backend `B`, known (by its `TypeId`) to be backend `T`.
fn downcast<B: Backend, T: Backend, const D: usize>(t: Tensor<B, D>) -> T::FloatTensorPrimitive {
    let primitive: Box<dyn Any> = Box::new(t.into_primitive().tensor());
    *primitive
        .downcast::<T::FloatTensorPrimitive>()
        .expect("CPU kernel path taken on another backend")
}

/// A tensor of backend `B` from a primitive of backend `T`, the same type (checked by `TypeId`).
fn upcast<T: Backend, B: Backend, const D: usize>(t: T::FloatTensorPrimitive) -> Tensor<B, D> {
    let primitive: Box<dyn Any> = Box::new(t);
    let primitive = primitive
        .downcast::<B::FloatTensorPrimitive>()
        .expect("CPU kernel path taken on another backend");
    Tensor::from_primitive(TensorPrimitive::Float(*primitive))
}

/// The `Flex` tensor behind a tensor of a backend known (by [`is_flex`]) to be `Flex`.
fn to_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
    downcast::<B, Flex, D>(t)
}

/// The inverse of [`to_flex`].
fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    upcast::<Flex, B, D>(t)
}

/// The values of an f32 `Flex` tensor in row-major order, copied only if it is a strided view (empty for
/// another dtype). For CPU kernels written against plain slices.
pub fn flex_values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .map(<[f32]>::to_vec)
                .unwrap_or_default(),
        ),
    }
}

/// A small `Flex` parameter vector on the host.
fn host<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
    flex_values(&to_flex(t)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::square_conv;
    use crate::layers::{batch_norm as new_bn, conv2d as new_conv};
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;

    type A = Autodiff<Flex>;

    /// A BatchNorm with non-trivial statistics and affine parameters.
    fn bn_with_stats<B: Backend>(c: usize, device: &B::Device) -> BatchNorm<B> {
        let mut bn = new_bn::<B>(c, device);
        let ramp = |a: f32, b: f32| {
            Tensor::<B, 1>::from_floats(
                (0..c).map(|i| a + b * i as f32).collect::<Vec<_>>().as_slice(),
                device,
            )
        };
        bn.gamma = bn.gamma.map(|_| ramp(0.5, 0.1).require_grad());
        bn.beta = bn.beta.map(|_| ramp(-0.3, 0.05).require_grad());
        bn.running_mean = burn::module::RunningState::new(ramp(0.2, -0.02));
        bn.running_var = burn::module::RunningState::new(ramp(0.7, 0.03));
        bn
    }

    /// A convolution of geometry `g` (square kernel) with Kaiming-initialised weights.
    fn conv_of<B: Backend>(g: &ConvGeometry, bias: bool, device: &B::Device) -> Conv2d<B> {
        new_conv::<B>(
            g.c_in,
            g.c_out,
            g.kernel[0],
            g.stride[0],
            g.padding[0],
            g.dilation[0],
            g.groups,
            bias,
            device,
        )
    }

    /// The fused path on `Flex` against burn's `Conv2d::forward` + inference BatchNorm + activation with the
    /// same module.
    fn compare(g: ConvGeometry, bias: bool) {
        let device = Default::default();
        let conv = conv_of::<Flex>(&g, bias, &device);
        let bn = bn_with_stats::<Flex>(g.c_out, &device);
        let x = Tensor::<Flex, 4>::random(
            [g.batch, g.c_in, g.in_hw[0], g.in_hw[1]],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        assert_eq!(kernel_geometry(&conv, &x), Some(g));
        for (bn_used, act) in [
            (Some(&bn), Activation::Relu),
            (None, Activation::Identity),
            (Some(&bn), Activation::Relu6),
        ] {
            let got = conv_bn_act(&conv, bn_used, x.clone(), NormMode::Auto, act);
            let y = conv.forward(x.clone());
            let want = act.apply(bn_used.map_or(y.clone(), |bn| batch_norm(bn, y, NormMode::Frozen)));
            assert_eq!(got.dims(), want.dims());
            got.into_data()
                .assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::absolute(1e-4));
        }
    }

    /// Training on `Autodiff<Flex>`: output and every gradient (input, weights, bias, BatchNorm affine) of
    /// `sum(conv_bn_act(x) * u)` against burn's conv + training BatchNorm + ReLU on the same module.
    fn compare_training(g: ConvGeometry) {
        let device = Default::default();
        let conv = conv_of::<A>(&g, true, &device);
        let bn = bn_with_stats::<A>(g.c_out, &device);
        let shape = [g.batch, g.c_in, g.in_hw[0], g.in_hw[1]];
        let x = Tensor::<A, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
        assert_eq!(kernel_geometry(&conv, &x), Some(g));
        let u = Tensor::<A, 4>::random(g.out_shape(), Distribution::Normal(0.0, 1.0), &device);
        let ours = conv_bn_act(&conv, Some(&bn), x.clone(), NormMode::Auto, Activation::Relu);
        let burns = relu(batch_norm(&bn, conv.forward(x.clone()), NormMode::Auto));
        ours.clone().into_data().assert_approx_eq::<f32>(
            &burns.clone().into_data(),
            burn::tensor::Tolerance::absolute(1e-4),
        );
        let grads_ours = (ours * u.clone()).sum().backward();
        let grads_burn = (burns * u).sum().backward();
        let pairs = [
            (x.grad(&grads_ours).unwrap(), x.grad(&grads_burn).unwrap()),
            (
                conv.weight.grad(&grads_ours).unwrap(),
                conv.weight.grad(&grads_burn).unwrap(),
            ),
        ];
        for (a, b) in pairs {
            a.into_data()
                .assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::absolute(1e-3));
        }
        let bias = conv.bias.as_ref().unwrap();
        for (p, name) in [(bias, "bias"), (&bn.gamma, "gamma"), (&bn.beta, "beta")] {
            let (a, b) = (p.grad(&grads_ours).unwrap(), p.grad(&grads_burn).unwrap());
            assert_eq!(a.dims(), b.dims(), "{name}");
            a.into_data()
                .assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::absolute(1e-3));
        }
    }

    #[test]
    fn fused_equals_conv_batchnorm_activation() {
        compare(square_conv(2, 8, [9, 7], 16, 3, 1, 1), false);
        compare(square_conv(2, 16, [10, 11], 8, 3, 2, 1), true);
        compare(square_conv(2, 16, [5, 6], 24, 1, 1, 0), false);
        compare(square_conv(2, 3, [15, 12], 8, 7, 2, 3), false); // the ResNet stem
        compare(
            ConvGeometry {
                groups: 2,
                ..square_conv(2, 32, [6, 6], 16, 3, 1, 1)
            },
            true,
        );
        compare(
            ConvGeometry {
                dilation: [2, 2],
                ..square_conv(2, 16, [9, 9], 16, 3, 1, 2)
            },
            true,
        );
    }

    #[test]
    fn training_path_equals_burns_conv_with_gradients() {
        compare_training(square_conv(2, 8, [9, 7], 16, 3, 1, 1));
        compare_training(square_conv(2, 16, [10, 11], 8, 3, 2, 1));
        compare_training(square_conv(2, 16, [5, 6], 24, 1, 1, 0));
        compare_training(square_conv(2, 3, [15, 12], 8, 7, 2, 3));
        compare_training(ConvGeometry {
            groups: 2,
            ..square_conv(2, 32, [6, 6], 16, 3, 1, 1)
        });
        // the ResNet-18 stages of a 64 x 64 batch
        compare_training(square_conv(2, 64, [16, 16], 64, 3, 1, 1));
        compare_training(square_conv(2, 64, [16, 16], 128, 3, 2, 1));
        compare_training(square_conv(2, 64, [16, 16], 128, 1, 2, 0));
        compare_training(square_conv(2, 128, [8, 8], 128, 3, 1, 1));
        compare_training(square_conv(2, 256, [4, 4], 256, 3, 1, 1));
    }

    #[test]
    fn frozen_weights_and_constant_inputs_get_no_gradient() {
        let device = Default::default();
        let g = square_conv(2, 8, [5, 5], 8, 3, 1, 1);
        let conv = conv_of::<A>(&g, false, &device);
        let frozen = Conv2d::<A> {
            weight: conv.weight.clone().set_require_grad(false),
            ..conv.clone()
        };
        let x = Tensor::<A, 4>::random([2, 8, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        // Neither the input nor the weights are tracked: the op is recorded untracked.
        let y = super::conv(&frozen, x.clone());
        assert!(!y.is_require_grad());
        // Only the input is tracked: it gets a gradient, the frozen weights none.
        let x = x.require_grad();
        let grads = super::conv(&frozen, x.clone()).sum().backward();
        assert!(x.grad(&grads).is_some());
        assert!(frozen.weight.grad(&grads).is_none());
    }

    #[test]
    fn residual_sum_and_max_pool_equal_burns() {
        let device = Default::default();
        let a = Tensor::<Flex, 4>::random([2, 3, 9, 7], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<Flex, 4>::random([2, 3, 9, 7], Distribution::Normal(0.0, 1.0), &device);
        for act in [Activation::Relu, Activation::Relu6, Activation::Identity] {
            let want = act.apply(a.clone() + b.clone());
            add_act(a.clone(), b.clone(), act)
                .into_data()
                .assert_eq(&want.into_data(), true);
        }
        for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
            let want = burn::tensor::module::max_pool2d(a.clone(), [k, k], [s, s], [p, p], [1, 1], false);
            max_pool2d(a.clone(), [k, k], [s, s], [p, p])
                .into_data()
                .assert_eq(&want.into_data(), true);
        }
    }

    #[test]
    fn depthwise_and_asymmetric_padding_stay_on_burns_kernel() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::zeros([1, 16, 4, 4], &device);
        let depthwise = new_conv::<Flex>(16, 16, 3, 1, 1, 1, 16, false, &device);
        assert!(kernel_geometry(&depthwise, &x).is_none());
        let mut asym = new_conv::<Flex>(16, 16, 3, 1, 1, 1, 1, false, &device);
        asym.padding = PaddingConfig2d::Explicit(0, 0, 1, 1);
        assert!(kernel_geometry(&asym, &x).is_none());
        let y = conv(&asym, x);
        assert_eq!(y.dims(), [1, 16, 3, 3]);
    }

    #[test]
    fn empty_batch_gives_an_empty_output() {
        let device = Default::default();
        let conv = new_conv::<Flex>(8, 4, 3, 1, 1, 1, 1, false, &device);
        let bn = bn_with_stats::<Flex>(4, &device);
        let x = Tensor::<Flex, 4>::zeros([0, 8, 5, 5], &device);
        let y = conv_bn_act(&conv, Some(&bn), x, NormMode::Auto, Activation::Relu);
        assert_eq!(y.dims(), [0, 4, 5, 5]);
    }
}
