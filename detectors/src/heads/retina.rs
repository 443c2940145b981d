//! RetinaNet's dense head: two towers of `stacked_convs` 3x3 conv + ReLU (one for classification, one for
//! box regression) shared across FPN levels, then a 3x3 conv to `A * C` class logits and one to `A * 4` box
//! deltas per location.
//!
//! Initialisation as in mmdetection: conv weights ~ N(0, 0.01), biases 0, except the classifier bias
//! `-log((1 - p) / p)` with the prior probability `p = 0.01`, so that every anchor starts as background with
//! confidence 0.99 and the focal loss is not swamped by the easy negatives in the first iterations.

use attndet_backbones::fused;
use attndet_backbones::layers::Activation;
use attndet_backbones::norm::NormMode;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;

/// Sizes of a [`RetinaHead`].
#[derive(Debug, Clone, PartialEq)]
pub struct RetinaHeadSizes {
    /// Channels of the FPN levels.
    pub in_channels: usize,
    /// Channels of the towers.
    pub feat_channels: usize,
    /// Convs per tower.
    pub stacked_convs: usize,
    /// Object classes.
    pub num_classes: usize,
    /// Anchors per location.
    pub num_anchors: usize,
    /// Prior foreground probability for the classifier bias.
    pub prior_prob: f64,
}

/// The head's modules.
#[derive(Module, Debug)]
pub struct RetinaHead<B: Backend> {
    cls_convs: Vec<Conv2d<B>>,
    reg_convs: Vec<Conv2d<B>>,
    retina_cls: Conv2d<B>,
    retina_reg: Conv2d<B>,
    num_classes: usize,
    num_anchors: usize,
}

fn conv3x3<B: Backend>(cin: usize, cout: usize, bias: f32, device: &B::Device) -> Conv2d<B> {
    let mut conv = Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
        .init(device);
    conv.bias = Some(Param::from_tensor(Tensor::full([cout], bias, device)));
    conv
}

impl RetinaHeadSizes {
    /// Build the head with mmdetection's initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RetinaHead<B> {
        let tower = || {
            (0..self.stacked_convs)
                .map(|i| {
                    conv3x3(
                        if i == 0 {
                            self.in_channels
                        } else {
                            self.feat_channels
                        },
                        self.feat_channels,
                        0.0,
                        device,
                    )
                })
                .collect::<Vec<_>>()
        };
        let tower_out = if self.stacked_convs == 0 {
            self.in_channels
        } else {
            self.feat_channels
        };
        let p = self.prior_prob;
        let cls_bias = -((1.0 - p) / p).ln() as f32;
        RetinaHead {
            cls_convs: tower(),
            reg_convs: tower(),
            retina_cls: conv3x3(tower_out, self.num_anchors * self.num_classes, cls_bias, device),
            retina_reg: conv3x3(tower_out, self.num_anchors * 4, 0.0, device),
            num_classes: self.num_classes,
            num_anchors: self.num_anchors,
        }
    }
}

impl<B: Backend> RetinaHead<B> {
    /// Object classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Anchors per location.
    pub fn num_anchors(&self) -> usize {
        self.num_anchors
    }

    /// Raw outputs of one level.
    ///
    /// # Shapes
    /// - x: `[N, C_in, H, W]`
    /// - output: class logits `[N, A * K, H, W]`, box deltas `[N, A * 4, H, W]`
    pub fn forward_level(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        // `fused`: on the CPU backend at inference the conv + ReLU run as one multi-threaded kernel.
        let conv_relu = |t, c| fused::conv_bn_act(c, None, t, NormMode::Auto, Activation::Relu);
        let cls = self.cls_convs.iter().fold(x.clone(), conv_relu);
        let reg = self.reg_convs.iter().fold(x, conv_relu);
        (
            fused::conv(&self.retina_cls, cls),
            fused::conv(&self.retina_reg, reg),
        )
    }

    /// Outputs of every level, flattened in anchor order (location-major: `(y * W + x) * A + a`).
    ///
    /// # Shapes
    /// - feats: one `[N, C_in, H_l, W_l]` per level
    /// - output: one `([N, H_l * W_l * A, K], [N, H_l * W_l * A, 4])` per level
    pub fn forward(&self, feats: &[Tensor<B, 4>]) -> Vec<(Tensor<B, 3>, Tensor<B, 3>)> {
        feats
            .iter()
            .map(|f| {
                let (cls, reg) = self.forward_level(f.clone());
                (flatten_anchors(cls, self.num_classes), flatten_anchors(reg, 4))
            })
            .collect()
    }
}

impl<B: Backend> RetinaHead<B> {
    /// Record the head's layers on every level of `[C, H, W]` in `counter` (ptflops convention).
    pub fn count_flops(
        &self,
        counter: &mut attndet_backbones::cost::CostCounter,
        levels: &[attndet_backbones::cost::Chw],
    ) {
        for &x in levels {
            for (tower, convs) in [("cls_convs", &self.cls_convs), ("reg_convs", &self.reg_convs)] {
                let mut y = x;
                for (i, c) in convs.iter().enumerate() {
                    y = counter.conv2d(&format!("{tower}.{i}"), c, y);
                    counter.relu(&format!("{tower}.{i}.relu"), y);
                }
                let last = if tower == "cls_convs" {
                    ("retina_cls", &self.retina_cls)
                } else {
                    ("retina_reg", &self.retina_reg)
                };
                counter.conv2d(last.0, last.1, y);
            }
        }
    }
}

/// `[N, A * D, H, W]` -> `[N, H * W * A, D]` (anchor index `(y * W + x) * A + a`, as the anchor generator).
pub fn flatten_anchors<B: Backend>(t: Tensor<B, 4>, d: usize) -> Tensor<B, 3> {
    let [n, ad, h, w] = t.dims();
    let a = ad / d.max(1);
    t.reshape([n, a, d, h, w])
        .permute([0, 3, 4, 1, 2])
        .reshape([n, h * w * a, d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn sizes() -> RetinaHeadSizes {
        RetinaHeadSizes {
            in_channels: 8,
            feat_channels: 8,
            stacked_convs: 2,
            num_classes: 3,
            num_anchors: 9,
            prior_prob: 0.01,
        }
    }

    #[test]
    fn output_shapes_and_prior_bias() {
        let device = Default::default();
        let head = sizes().init::<B>(&device);
        let feats = vec![
            Tensor::<B, 4>::zeros([2, 8, 4, 6], &device),
            Tensor::zeros([2, 8, 2, 3], &device),
        ];
        let out = head.forward(&feats);
        assert_eq!(out[0].0.dims(), [2, 4 * 6 * 9, 3]);
        assert_eq!(out[0].1.dims(), [2, 4 * 6 * 9, 4]);
        assert_eq!(out[1].0.dims(), [2, 2 * 3 * 9, 3]);
        // zero input: towers give relu(0 + 0) = 0, so the logits are the bias -log(0.99 / 0.01) = -4.59512
        let logits: Vec<f32> = out[0].0.clone().into_data().to_vec().unwrap();
        assert!(
            logits.iter().all(|&l| (l + 4.595_12).abs() < 1e-4),
            "{:?}",
            &logits[..3]
        );
        let deltas: Vec<f32> = out[0].1.clone().into_data().to_vec().unwrap();
        assert!(deltas.iter().all(|&d| d == 0.0));
    }

    #[test]
    fn flatten_is_location_major_then_anchor() {
        let device = Default::default();
        // [1, A=2 * D=1, H=1, W=2]: channel a at location x holds 10 * a + x
        let t = Tensor::<B, 4>::from_floats([[[[0.0, 1.0]], [[10.0, 11.0]]]], &device);
        let f: Vec<f32> = flatten_anchors(t, 1).into_data().to_vec().unwrap();
        // order (x=0,a=0), (x=0,a=1), (x=1,a=0), (x=1,a=1)
        assert_eq!(f, vec![0.0, 10.0, 1.0, 11.0]);
    }

    #[test]
    fn empty_batch_gives_empty_outputs() {
        let device = Default::default();
        let head = sizes().init::<B>(&device);
        let out = head.forward(&[Tensor::<B, 4>::zeros([0, 8, 4, 4], &device)]);
        assert_eq!(out[0].0.dims(), [0, 16 * 9, 3]);
    }
}
