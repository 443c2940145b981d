//! Feature Pyramid Network (Lin et al.) with mmdetection's options.
//!
//! torchvision's variants are settings of the same module:
//! - `LastLevelMaxPool` (Faster/Mask R-CNN): `add_extra_convs: "none"`, `num_outs = levels + 1`.
//! - `LastLevelP6P7(in, out)` (RetinaNet): `add_extra_convs: "on_input"` (or `"on_output"` when torchvision's
//!   `use_P5`, i.e. `in == out`), `relu_before_extra_convs: true`, `num_outs = levels + 2`.

use attndet_backbones::{FeatureSpec, fused};
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use serde::{Deserialize, Serialize};

use crate::structures::BlocksError;

/// Where the extra (stride-2 conv) levels above the backbone's last used level take their input from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraConvs {
    /// No convs: extra levels are `max_pool2d(kernel 1, stride 2)` of the previous output.
    #[default]
    None,
    /// From the last used backbone feature (mmdetection RetinaNet, `add_extra_convs=True`).
    OnInput,
    /// From the last lateral (1x1) output.
    OnLateral,
    /// From the last FPN output.
    OnOutput,
}

fn default_relu() -> bool {
    false
}

/// Configuration of an [`Fpn`] (mmdetection `FPN` fields); input channels come from the backbone's
/// [`FeatureSpec`]s.
///
/// RetinaNet: `{"out_channels": 256, "start_level": 1, "add_extra_convs": "on_input", "num_outs": 5}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpnConfig {
    /// Channels of every output level.
    pub out_channels: usize,
    /// Number of output levels (used backbone levels plus extra levels).
    pub num_outs: usize,
    /// First backbone level used (RetinaNet skips C2: 1).
    #[serde(default)]
    pub start_level: usize,
    /// Last backbone level used, inclusive; `None` = the last one.
    #[serde(default)]
    pub end_level: Option<usize>,
    /// Source of the extra levels.
    #[serde(default)]
    pub add_extra_convs: ExtraConvs,
    /// Apply ReLU before every extra conv after the first.
    #[serde(default = "default_relu")]
    pub relu_before_extra_convs: bool,
}

impl FpnConfig {
    /// Builds the FPN for a backbone with the given output levels (finest first).
    ///
    /// # Errors
    /// [`BlocksError::Config`] when the levels or `num_outs` are inconsistent.
    pub fn init<B: Backend>(
        &self,
        inputs: &[FeatureSpec],
        device: &B::Device,
    ) -> Result<Fpn<B>, BlocksError> {
        let num_ins = inputs.len();
        if num_ins == 0 {
            return Err(BlocksError::config(
                "in_channels",
                "the backbone reports no feature level",
            ));
        }
        let end = match self.end_level {
            None => num_ins,
            Some(e) if e < num_ins => e + 1,
            Some(e) => {
                return Err(BlocksError::config(
                    "end_level",
                    format!("{e} is past the last level ({})", num_ins - 1),
                ));
            }
        };
        if self.start_level >= end {
            return Err(BlocksError::config(
                "start_level",
                format!("{} must be below the end level", self.start_level),
            ));
        }
        let used = end - self.start_level;
        if self.num_outs < used {
            return Err(BlocksError::config(
                "num_outs",
                format!("{} is fewer than the {used} used levels", self.num_outs),
            ));
        }
        if self.end_level.is_some() && self.num_outs != used && self.add_extra_convs == ExtraConvs::None {
            // mmdetection: with an explicit end level, extra levels come only from convs.
            return Err(BlocksError::config(
                "num_outs",
                "must equal the used levels when end_level is set",
            ));
        }
        if self.out_channels == 0 {
            return Err(BlocksError::config("out_channels", "must be positive"));
        }
        let out = self.out_channels;
        let conv = |cin: usize, k: usize, stride: usize| {
            let pad = k / 2;
            let mut c: Conv2d<B> = Conv2dConfig::new([cin, out], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device);
            c.bias = Some(Param::from_tensor(Tensor::zeros([out], device)));
            c
        };
        let lateral_convs = inputs[self.start_level..end]
            .iter()
            .map(|s| conv(s.channels, 1, 1))
            .collect();
        let mut fpn_convs: Vec<Conv2d<B>> = (0..used).map(|_| conv(out, 3, 1)).collect();
        let extra = self.num_outs - used;
        if self.add_extra_convs != ExtraConvs::None {
            for i in 0..extra {
                let cin = if i == 0 && self.add_extra_convs == ExtraConvs::OnInput {
                    inputs[end - 1].channels
                } else {
                    out
                };
                fpn_convs.push(conv(cin, 3, 2));
            }
        }
        let last_stride = inputs[end - 1].stride;
        let mut out_specs: Vec<FeatureSpec> = inputs[self.start_level..end]
            .iter()
            .map(|s| pyramid_spec(out, s.stride))
            .collect();
        out_specs.extend((1..=extra).map(|i| pyramid_spec(out, last_stride << i)));
        Ok(Fpn {
            lateral_convs,
            fpn_convs,
            layout: FpnLayout {
                cfg: self.clone(),
                inputs: inputs.to_vec(),
                end,
                out_specs,
            },
        })
    }
}

fn pyramid_spec(channels: usize, stride: usize) -> FeatureSpec {
    FeatureSpec {
        name: format!("p{}", stride.trailing_zeros()),
        channels,
        stride,
    }
}

/// Constant description of an FPN (not saved with the weights).
#[derive(Debug, Clone)]
pub struct FpnLayout {
    cfg: FpnConfig,
    inputs: Vec<FeatureSpec>,
    end: usize,
    out_specs: Vec<FeatureSpec>,
}

/// A feature pyramid: 1x1 lateral convs, nearest-neighbour top-down sums, 3x3 output convs, then extra levels.
///
/// Parameter names follow mmdetection (`lateral_convs.{i}`, `fpn_convs.{i}`, extra convs after the used levels).
#[derive(Module, Debug)]
pub struct Fpn<B: Backend> {
    /// 1x1 convs, one per used backbone level.
    pub lateral_convs: Vec<Conv2d<B>>,
    /// 3x3 output convs, one per used level, then the stride-2 extra convs.
    pub fpn_convs: Vec<Conv2d<B>>,
    layout: FpnLayout,
}

impl<B: Backend> Fpn<B> {
    /// The output levels (`p{log2 stride}`, `out_channels` each), finest first.
    pub fn output_specs(&self) -> Vec<FeatureSpec> {
        self.layout.out_specs.clone()
    }

    /// Fuses the backbone features.
    ///
    /// # Shapes
    /// - inputs: one `[N, C_i, H_i, W_i]` per backbone level (all of them, finest first)
    /// - output: `num_outs` tensors `[N, out_channels, H_l, W_l]`, finest first
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the number of inputs or their channels do not match the specs.
    pub fn forward(&self, inputs: Vec<Tensor<B, 4>>) -> Result<Vec<Tensor<B, 4>>, BlocksError> {
        let l = &self.layout;
        if inputs.len() != l.inputs.len() {
            return Err(BlocksError::shape(
                "features",
                &[inputs.len()],
                &format!("{} levels (the backbone's feature specs)", l.inputs.len()),
            ));
        }
        for (i, (x, spec)) in inputs.iter().zip(&l.inputs).enumerate() {
            if x.dims()[1] != spec.channels {
                return Err(BlocksError::shape(
                    &format!("features[{i}] ({})", spec.name),
                    &x.dims(),
                    &format!("[N, {}, H, W]", spec.channels),
                ));
            }
        }
        let start = l.cfg.start_level;
        let used = l.end - start;
        let mut laterals: Vec<Tensor<B, 4>> = self
            .lateral_convs
            .iter()
            .enumerate()
            .map(|(i, c)| fused::conv(c, inputs[start + i].clone()))
            .collect();
        for i in (1..used).rev() {
            let [_, _, h, w] = laterals[i - 1].dims();
            let up = upsample_nearest(laterals[i].clone(), [h, w]);
            laterals[i - 1] = laterals[i - 1].clone() + up;
        }
        let mut outs: Vec<Tensor<B, 4>> = laterals
            .iter()
            .zip(&self.fpn_convs)
            .map(|(x, c)| fused::conv(c, x.clone()))
            .collect();
        let num_outs = l.cfg.num_outs;
        if num_outs > used {
            match l.cfg.add_extra_convs {
                ExtraConvs::None => {
                    while outs.len() < num_outs {
                        let last = outs[outs.len() - 1].clone();
                        outs.push(max_pool2d(last, [1, 1], [2, 2], [0, 0], [1, 1], false));
                    }
                }
                source => {
                    let x = match source {
                        ExtraConvs::OnInput => inputs[l.end - 1].clone(),
                        ExtraConvs::OnLateral => laterals[used - 1].clone(),
                        _ => outs[used - 1].clone(),
                    };
                    outs.push(fused::conv(&self.fpn_convs[used], x));
                    for i in used + 1..num_outs {
                        let prev = outs[outs.len() - 1].clone();
                        let prev = if l.cfg.relu_before_extra_convs {
                            relu(prev)
                        } else {
                            prev
                        };
                        outs.push(fused::conv(&self.fpn_convs[i], prev));
                    }
                }
            }
        }
        Ok(outs)
    }
}

impl<B: Backend> Fpn<B> {
    /// Record the FPN's layers for backbone levels of `[C_i, H_i, W_i]` (all of them, finest first) in
    /// `counter` (ptflops convention: convs with bias, the top-down sums and upsampling free, 1 per input
    /// element for the max-pooled extra levels); returns the output levels' `[C, H, W]`.
    pub fn count_flops(
        &self,
        counter: &mut attndet_backbones::cost::CostCounter,
        inputs: &[attndet_backbones::cost::Chw],
    ) -> Vec<attndet_backbones::cost::Chw> {
        let l = &self.layout;
        let start = l.cfg.start_level;
        let used = l.end - start;
        let laterals: Vec<_> = self
            .lateral_convs
            .iter()
            .enumerate()
            .map(|(i, c)| counter.conv2d(&format!("lateral_convs.{i}"), c, inputs[start + i]))
            .collect();
        let mut outs: Vec<_> = laterals
            .iter()
            .zip(&self.fpn_convs)
            .enumerate()
            .map(|(i, (&x, c))| counter.conv2d(&format!("fpn_convs.{i}"), c, x))
            .collect();
        while outs.len() < l.cfg.num_outs {
            let i = outs.len();
            let last = outs[i - 1];
            let next = match l.cfg.add_extra_convs {
                ExtraConvs::None => {
                    let out = [last[0], last[1].div_ceil(2), last[2].div_ceil(2)];
                    counter.pool(&format!("max_pool.{i}"), "MaxPool2d", last, out)
                }
                source => {
                    let x = match (i == used, source) {
                        (true, ExtraConvs::OnInput) => inputs[l.end - 1],
                        (true, ExtraConvs::OnLateral) => laterals[used - 1],
                        _ => last,
                    };
                    if i > used && l.cfg.relu_before_extra_convs {
                        counter.relu(&format!("fpn_convs.{i}.relu"), x);
                    }
                    counter.conv2d(&format!("fpn_convs.{i}"), &self.fpn_convs[i], x)
                }
            };
            outs.push(next);
        }
        outs
    }
}

/// Nearest-neighbour resize of `x` to `[h, w]` (PyTorch's `interpolate(mode="nearest")`: output pixel `y`
/// reads input row `floor(y * H_in / h)`).
///
/// On the CPU this is burn's nearest `interpolate`. On the other backends an integer factor (FPN's top-down
/// 2x) is [`upsample_broadcast`]: burn 0.21's wgpu backend gets the backward of its nearest `interpolate` wrong
/// (the gradient reaching FPN's top lateral conv differed from the CPU's by its own size; found by
/// `tests/gpu_path.rs`), and on the CPU the broadcast's backward is about 2x slower than `interpolate`'s.
///
/// # Shapes
/// - x: `[N, C, H, W]` -> `[N, C, h, w]`
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, [h, w]: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, hi, wi] = x.dims();
    let integer_factor = hi > 0 && wi > 0 && h % hi == 0 && w % wi == 0;
    if integer_factor && !attndet_backbones::fused::is_cpu::<B>() {
        return upsample_broadcast(x, [h / hi, w / wi]);
    }
    interpolate(x, [h, w], InterpolateOptions::new(InterpolateMode::Nearest))
}

/// Nearest upsampling by integer factors `[fh, fw]` as a broadcast: `[N, C, H, 1, W, 1]` expanded to
/// `[N, C, H, fh, W, fw]`, whose backward is a sum over each `fh x fw` block on every backend.
///
/// # Shapes
/// - x: `[N, C, H, W]` -> `[N, C, H * fh, W * fw]`
pub fn upsample_broadcast<B: Backend>(x: Tensor<B, 4>, [fh, fw]: [usize; 2]) -> Tensor<B, 4> {
    let [n, c, hi, wi] = x.dims();
    let (h, w) = (hi * fh, wi * fw);
    if n * c * hi * wi == 0 {
        // burn's expand refuses zero sizes
        return Tensor::zeros([n, c, h, w], &x.device());
    }
    if fh == 1 && fw == 1 {
        return x;
    }
    x.reshape([n, c, hi, 1, wi, 1])
        .expand([n, c, hi, fh, wi, fw])
        .reshape([n, c, h, w])
}

#[cfg(test)]
mod upsample_tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type A = Autodiff<Flex>;

    fn input<B: Backend>(shape: [usize; 4]) -> Tensor<B, 4> {
        let len = shape.iter().product::<usize>();
        let v: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    #[test]
    fn forward_equals_burns_nearest_interpolate_for_any_ratio() {
        for (shape, out) in [
            ([2, 3, 4, 5], [8, 10]),
            ([1, 2, 3, 3], [12, 6]),
            ([1, 1, 3, 5], [5, 9]),
            ([1, 2, 4, 4], [4, 4]),
        ] {
            let x = input::<Flex>(shape);
            let want = interpolate(x.clone(), out, InterpolateOptions::new(InterpolateMode::Nearest));
            let got = if out[0] % shape[2] == 0 && out[1] % shape[3] == 0 {
                upsample_broadcast(x, [out[0] / shape[2], out[1] / shape[3]])
            } else {
                upsample_nearest(x, out)
            };
            assert_eq!(got.dims(), want.dims());
            assert_eq!(
                got.into_data().to_vec::<f32>().unwrap(),
                want.into_data().to_vec::<f32>().unwrap(),
                "{shape:?} -> {out:?}"
            );
        }
    }

    #[test]
    fn backward_of_a_2x_upsample_sums_each_block() {
        // both the broadcast and the CPU's interpolate
        for broadcast in [true, false] {
            backward_sums_each_block(broadcast);
        }
    }

    fn backward_sums_each_block(broadcast: bool) {
        // d/dx sum(up(x) * g) = the sum of g over the 2 x 2 block that x[i, j] was copied to (by hand)
        let x = input::<A>([1, 2, 3, 4]).require_grad();
        let g = input::<A>([1, 2, 6, 8]).mul_scalar(1.5);
        let up = if broadcast {
            upsample_broadcast(x.clone(), [2, 2])
        } else {
            upsample_nearest(x.clone(), [6, 8])
        };
        let grads = (up * g.clone()).sum().backward();
        let got = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        let gv = g.into_data().to_vec::<f32>().unwrap();
        let mut want = vec![0f32; 2 * 3 * 4];
        for c in 0..2 {
            for y in 0..6 {
                for xx in 0..8 {
                    want[c * 12 + (y / 2) * 4 + xx / 2] += gv[c * 48 + y * 8 + xx];
                }
            }
        }
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5,
                "broadcast {broadcast}: {got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn an_empty_batch_stays_empty() {
        let x = Tensor::<Flex, 4>::zeros([0, 3, 2, 2], &Default::default());
        assert_eq!(upsample_broadcast(x.clone(), [2, 2]).dims(), [0, 3, 4, 4]);
        assert_eq!(upsample_nearest(x, [4, 4]).dims(), [0, 3, 4, 4]);
    }
}
