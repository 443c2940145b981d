//! Parameter and FLOPs counting in the convention of the seed papers.
//!
//! The DCANet repository's `flops_counter.py` (a ptflops ancestor) hooks `nn.Module`s and counts, per call:
//! - `Conv2d`: `k_h * k_w * C_in / groups * C_out` multiply-accumulates per output position, plus `C_out` per
//!   position for the bias;
//! - `BatchNorm2d`: 1 per input element, 2 when affine;
//! - `ReLU` (and its variants): 1 per output element;
//! - pooling (`MaxPool2d`, `AvgPool2d`, adaptive pools): 1 per input element;
//! - `Linear`: `C_in * C_out` (its bias is not counted);
//! - `Upsample`: 1 per output element.
//!
//! Everything else is free: functional calls (`F.relu`, `F.softmax`, `torch.sigmoid`), `Conv1d`, `LayerNorm`,
//! element-wise products and sums. A module called twice is counted twice; a module that exists but is never
//! called costs nothing (its parameters still count).
//!
//! Families implement [`CountFlops`] by walking their layers in forward order and calling the counter's method
//! named after the PyTorch module the reference code uses at that point; the counter computes the output shape,
//! the cost, and records one [`CostRow`] with the module's parameter count. Parameters of modules that exist but
//! are not called (e.g. DCA's matching layers in a network's first block) are recorded with [`CostCounter::idle`],
//! so the rows always add up to the model's parameter count.

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv2d};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use serde::Serialize;

/// The shape of one image's activation: `[C, H, W]` (the batch is always 1 when counting).
pub type Chw = [usize; 3];

/// One counted layer call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostRow {
    /// Dotted path of the layer, in the reference code's naming (`layer1.0.conv1`).
    pub name: String,
    /// The PyTorch module type it stands for (`Conv2d`, `BatchNorm2d`, ...).
    pub kind: &'static str,
    /// Parameters of the layer (0 for a repeated call of the same layer).
    pub params: usize,
    /// Multiply-accumulates (ptflops convention), one image.
    pub flops: u64,
    /// Output shape `[C, H, W]`.
    pub output: Chw,
}

/// Parameters of `module` as PyTorch's `model.parameters()` counts them: every tensor but BatchNorm running
/// statistics (burn keeps those in the module tree, PyTorch in buffers).
pub fn parameter_count<B: Backend, M: Module<B>>(module: &M) -> usize {
    crate::checkpoint::tensor_shapes(module)
        .iter()
        .filter(|t| !(t.path.ends_with("running_mean") || t.path.ends_with("running_var")))
        .map(|t| t.shape.iter().product::<usize>())
        .sum()
}

fn dims4<B: Backend>(p: &burn::module::Param<Tensor<B, 4>>) -> [usize; 4] {
    let s = p.lazy_shape();
    [s[0], s[1], s[2], s[3]]
}

fn dims2<B: Backend>(p: &burn::module::Param<Tensor<B, 2>>) -> [usize; 2] {
    let s = p.lazy_shape();
    [s[0], s[1]]
}

/// Collects [`CostRow`]s while a family walks its layers.
#[derive(Debug, Default)]
pub struct CostCounter {
    rows: Vec<CostRow>,
    scope: Vec<String>,
}

/// Output size of a strided window along one axis (PyTorch's floor rule).
pub fn window_out(
    size: usize,
    kernel: usize,
    stride: usize,
    pad_before: usize,
    pad_after: usize,
    dilation: usize,
) -> usize {
    let span = dilation * (kernel - 1) + 1;
    (size + pad_before + pad_after).saturating_sub(span) / stride + 1
}

fn explicit_padding(
    p: &PaddingConfig2d,
    kernel: [usize; 2],
    dilation: [usize; 2],
) -> (usize, usize, usize, usize) {
    match p {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(t, l, b, r) => (*t, *l, *b, *r),
        // `Same` (stride 1): total padding dilation*(k-1), the extra one at the end.
        PaddingConfig2d::Same => {
            let th = dilation[0] * (kernel[0] - 1);
            let tw = dilation[1] * (kernel[1] - 1);
            (th / 2, tw / 2, th - th / 2, tw - tw / 2)
        }
    }
}

impl CostCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `f` with `name` appended to the current scope (`layer1` then `0` gives `layer1.0.*`).
    pub fn scoped<R>(&mut self, name: impl Into<String>, f: impl FnOnce(&mut Self) -> R) -> R {
        self.scope.push(name.into());
        let r = f(self);
        self.scope.pop();
        r
    }

    fn path(&self, name: &str) -> String {
        let mut parts: Vec<&str> = self.scope.iter().map(String::as_str).collect();
        if !name.is_empty() {
            parts.push(name);
        }
        parts.join(".")
    }

    /// Record a row by hand (for layers the helpers below do not cover). A layer called again (same path)
    /// adds its FLOPs but not its parameters a second time.
    pub fn record(&mut self, name: &str, kind: &'static str, params: usize, flops: u64, output: Chw) {
        let name = self.path(name);
        let params = if self.rows.iter().any(|r| r.name == name) {
            0
        } else {
            params
        };
        self.rows.push(CostRow {
            name,
            kind,
            params,
            flops,
            output,
        });
    }

    /// `nn.Conv2d` on an input `[C, H, W]`: returns the output shape.
    pub fn conv2d<B: Backend>(&mut self, name: &str, conv: &Conv2d<B>, x: Chw) -> Chw {
        let [c_out, c_in_per_group, kh, kw] = dims4(&conv.weight);
        debug_assert_eq!(c_in_per_group * conv.groups, x[0], "conv {name}: input channels");
        let (t, l, b, r) = explicit_padding(&conv.padding, conv.kernel_size, conv.dilation);
        let h = window_out(x[1], kh, conv.stride[0], t, b, conv.dilation[0]);
        let w = window_out(x[2], kw, conv.stride[1], l, r, conv.dilation[1]);
        let positions = (h * w) as u64;
        let per_position = (kh * kw * c_in_per_group * c_out) as u64;
        let bias = if conv.bias.is_some() {
            c_out as u64 * positions
        } else {
            0
        };
        let out = [c_out, h, w];
        self.record(
            name,
            "Conv2d",
            parameter_count(conv),
            per_position * positions + bias,
            out,
        );
        out
    }

    /// `nn.BatchNorm2d` (affine) on `[C, H, W]`.
    pub fn batch_norm<B: Backend>(&mut self, name: &str, bn: &BatchNorm<B>, x: Chw) -> Chw {
        let elems = (x[0] * x[1] * x[2]) as u64;
        self.record(name, "BatchNorm2d", parameter_count(bn), 2 * elems, x);
        x
    }

    /// `nn.ReLU` (or ReLU6, ...) on `[C, H, W]`.
    pub fn relu(&mut self, name: &str, x: Chw) -> Chw {
        self.record(name, "ReLU", 0, (x[0] * x[1] * x[2]) as u64, x);
        x
    }

    /// A pooling module (`MaxPool2d`, `AvgPool2d`, adaptive pools) from `x` to `out`: 1 per input element.
    pub fn pool(&mut self, name: &str, kind: &'static str, x: Chw, out: Chw) -> Chw {
        self.record(name, kind, 0, (x[0] * x[1] * x[2]) as u64, out);
        out
    }

    /// Adaptive average pooling to 1x1.
    pub fn global_avg_pool(&mut self, name: &str, x: Chw) -> Chw {
        self.pool(name, "AdaptiveAvgPool2d", x, [x[0], 1, 1])
    }

    /// `nn.Linear` applied to `rows` vectors (usually 1): `rows * C_in * C_out`.
    pub fn linear<B: Backend>(&mut self, name: &str, linear: &Linear<B>, rows: usize) -> usize {
        let [d_in, d_out] = dims2(&linear.weight);
        self.record(
            name,
            "Linear",
            parameter_count(linear),
            (rows * d_in * d_out) as u64,
            [d_out, rows, 1],
        );
        d_out
    }

    /// A layer the convention does not count (`LayerNorm`, `Conv1d`, bare parameters): parameters only.
    pub fn free<M: Module<B>, B: Backend>(
        &mut self,
        name: &str,
        kind: &'static str,
        module: &M,
        out: Chw,
    ) -> Chw {
        self.record(name, kind, parameter_count(module), 0, out);
        out
    }

    /// `nn.Conv1d` (not counted by the convention) with output `out`.
    pub fn conv1d<B: Backend>(&mut self, name: &str, conv: &Conv1d<B>, out: Chw) -> Chw {
        self.free(name, "Conv1d", conv, out)
    }

    /// A module that exists (its parameters are in the model and its checkpoints) but is not called.
    pub fn idle<M: Module<B>, B: Backend>(&mut self, name: &str, module: &M) {
        self.record(name, "(not called)", parameter_count(module), 0, [0, 0, 0]);
    }

    /// The rows so far, in call order.
    pub fn rows(&self) -> &[CostRow] {
        &self.rows
    }

    /// Total multiply-accumulates so far.
    pub fn flops(&self) -> u64 {
        self.rows.iter().map(|r| r.flops).sum()
    }

    /// Finish: the report.
    pub fn finish(self) -> CostReport {
        CostReport {
            params: self.rows.iter().map(|r| r.params).sum(),
            flops: self.flops(),
            rows: self.rows,
        }
    }
}

/// Parameters and FLOPs of a model for one input size.
#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    /// Parameter count (trainable tensors; BatchNorm running statistics excluded, as `model.parameters()`).
    pub params: usize,
    /// Multiply-accumulates for one image (ptflops convention).
    pub flops: u64,
    /// Every counted call, in forward order.
    pub rows: Vec<CostRow>,
}

impl CostReport {
    /// Rows summed by their first `depth` name components (`depth = 2`: `layer1.0`, `conv1`, `fc`), in order.
    pub fn grouped(&self, depth: usize) -> Vec<(String, usize, u64)> {
        let mut out: Vec<(String, usize, u64)> = Vec::new();
        for row in &self.rows {
            let key: String = row.name.split('.').take(depth).collect::<Vec<_>>().join(".");
            match out.iter_mut().find(|(k, _, _)| *k == key) {
                Some(entry) => {
                    entry.1 += row.params;
                    entry.2 += row.flops;
                }
                None => out.push((key, row.params, row.flops)),
            }
        }
        out
    }
}

/// A model (or part of one) whose cost can be counted in the ptflops convention.
pub trait CountFlops {
    /// Walk the layers as the forward pass would for one image of shape `x = [C, H, W]`, recording each call
    /// in `counter`; return the output shape.
    fn count_flops(&self, counter: &mut CostCounter, x: Chw) -> Chw;
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::BatchNormConfig;
    use burn::nn::conv::Conv2dConfig;

    #[test]
    fn conv_and_bn_costs_by_hand() {
        let device = Default::default();
        // ResNet stem: 7x7/2, pad 3, 3 -> 64 on 224x224 gives 112x112;
        // 7*7*3*64 = 9408 MACs per position, 112*112 = 12544 positions -> 118,013,952.
        let conv: Conv2d<Flex> = Conv2dConfig::new([3, 64], [7, 7])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
            .with_bias(false)
            .init(&device);
        let bn: BatchNorm<Flex> = BatchNormConfig::new(64).init(&device);
        let mut c = CostCounter::new();
        let y = c.conv2d("conv1", &conv, [3, 224, 224]);
        assert_eq!(y, [64, 112, 112]);
        c.batch_norm("bn1", &bn, y);
        c.relu("relu", y);
        c.pool("maxpool", "MaxPool2d", y, [64, 56, 56]);
        let r = c.finish();
        assert_eq!(r.rows[0].flops, 118_013_952);
        // BN: 2 * 64*112*112 = 1,605,632; ReLU and pool: 802,816 each.
        assert_eq!(r.rows[1].flops, 1_605_632);
        assert_eq!(r.rows[2].flops, 802_816);
        assert_eq!(r.rows[3].flops, 802_816);
        assert_eq!(r.params, 9408 + 128);
    }

    #[test]
    fn window_rule_matches_pytorch_floor() {
        // MaxPool 3x3/2 pad 1 on 112 -> 56; on 7 -> 4; conv 3x3/2 pad 1 on 1 -> 1.
        assert_eq!(window_out(112, 3, 2, 1, 1, 1), 56);
        assert_eq!(window_out(7, 3, 2, 1, 1, 1), 4);
        assert_eq!(window_out(1, 3, 2, 1, 1, 1), 1);
        // Dilated 3x3, pad 2, stride 1 keeps size.
        assert_eq!(window_out(14, 3, 1, 2, 2, 2), 14);
    }

    #[test]
    fn empty_counter_is_zero() {
        let r = CostCounter::new().finish();
        assert_eq!((r.params, r.flops, r.rows.len()), (0, 0, 0));
        assert!(r.grouped(2).is_empty());
    }
}
