//! Mask R-CNN's mask branch as mmdetection builds it (`FCNMaskHead`): RoIAlign 14x14 features through 4 x
//! (3x3 conv 256 + ReLU), a 2x2 stride-2 deconvolution + ReLU and a 1x1 conv to one 28x28 logit map per
//! class. Targets: the assigned instance's mask cropped to each positive RoI and resampled to 28x28 with
//! RoIAlign semantics (scale 1, adaptive sampling, aligned), binarised at 0.5; loss: BCE on the ground-truth
//! class's map, averaged over RoIs and pixels. Inference: the predicted class's probabilities pasted into the
//! original image (bilinear, `grid_sample` with `align_corners=False` as mmdetection's `_do_paste_mask`),
//! thresholded, run-length encoded straight from the box's window (no full-image buffer per detection).
//!
//! torchvision's conventions (`targets` / `paste: "torchvision"`, its `maskrcnn_resnet50_fpn`): targets
//! pooled with `aligned=False` and kept soft ([`mask_targets`]); the map pasted by [`paste_mask_torchvision`]
//! (`paste_masks_in_image`: the map padded by one zero pixel and the box widened to match, the box truncated
//! to integers, the map resized to it by `F.interpolate(bilinear, align_corners=False)`).

use attndet_backbones::fused;
use attndet_backbones::layers::Activation;
use attndet_backbones::norm::NormMode;
use attndet_coco::Rle;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};

use crate::config::{FcnMaskHeadConfig, MaskConvention};
use crate::losses::mask_cross_entropy;
use crate::models::{DetBackend, LossTerm, ModelError, Normaliser};
use crate::ops::{RoiAlignOptions, roi_align};
use crate::structures::RleMask;

/// kaiming_normal(mode=fan_out, nonlinearity=relu), mmdetection's initialisation of the mask head:
/// N(0, sqrt(2 / fan_out)) with PyTorch's fan_out, `weight.size(0) * kh * kw` (for a transposed convolution,
/// whose weight is `[C_in, C_out, kh, kw]`, that is `C_in * kh * kw`).
fn kaiming_fan_out(size0: usize, k: usize) -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: (2.0 / (size0 * k * k) as f64).sqrt(),
    }
}

/// The mask head's layers.
#[derive(Module, Debug)]
pub struct FcnMaskHead<B: Backend> {
    /// The 3x3 convs.
    pub convs: Vec<Conv2d<B>>,
    /// The 2x upsampling deconvolution.
    pub upsample: ConvTranspose2d<B>,
    /// One logit map per class (or one, class-agnostic).
    pub conv_logits: Conv2d<B>,
    num_classes: usize,
    class_agnostic: bool,
    mask_thr: f32,
    loss_weight: f32,
    paste: MaskConvention,
    targets: MaskConvention,
}

impl FcnMaskHeadConfig {
    /// Build the head for features of `in_channels` channels.
    ///
    /// # Errors
    /// Zero sizes, naming the field.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<FcnMaskHead<B>, ModelError> {
        if self.num_classes == 0 || self.conv_out_channels == 0 || self.roi_feat_size == 0 {
            return Err(ModelError(
                "model.roi_head.mask_head: num_classes, conv_out_channels and roi_feat_size must be positive"
                    .into(),
            ));
        }
        let zero_bias = |c: usize| Some(Param::from_tensor(Tensor::zeros([c], device)));
        let convs = (0..self.num_convs)
            .map(|i| {
                let cin = if i == 0 {
                    self.in_channels
                } else {
                    self.conv_out_channels
                };
                let mut c = Conv2dConfig::new([cin, self.conv_out_channels], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_initializer(kaiming_fan_out(self.conv_out_channels, 3))
                    .init(device);
                c.bias = zero_bias(self.conv_out_channels);
                c
            })
            .collect();
        let last = if self.num_convs == 0 {
            self.in_channels
        } else {
            self.conv_out_channels
        };
        let mut upsample = ConvTranspose2dConfig::new([last, self.conv_out_channels], [2, 2])
            .with_stride([2, 2])
            .with_initializer(kaiming_fan_out(last, 2))
            .init(device);
        upsample.bias = zero_bias(self.conv_out_channels);
        let out = if self.class_agnostic { 1 } else { self.num_classes };
        let mut conv_logits = Conv2dConfig::new([self.conv_out_channels, out], [1, 1])
            .with_initializer(kaiming_fan_out(out, 1))
            .init(device);
        conv_logits.bias = zero_bias(out);
        Ok(FcnMaskHead {
            convs,
            upsample,
            conv_logits,
            num_classes: self.num_classes,
            class_agnostic: self.class_agnostic,
            mask_thr: self.mask_thr_binary as f32,
            loss_weight: self.loss_weight as f32,
            paste: self.paste,
            targets: self.targets,
        })
    }
}

impl<B: Backend> FcnMaskHead<B> {
    /// Mask logits of pooled RoI features.
    ///
    /// # Shapes
    /// - x: `[R, C, S, S]`; output: `[R, K, 2S, 2S]` (`[R, 1, 2S, 2S]` class-agnostic)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.convs.iter().fold(x, |x, c| {
            fused::conv_bn_act(c, None, x, NormMode::Auto, Activation::Relu)
        });
        fused::conv(&self.conv_logits, relu(self.upsample.forward(x)))
    }

    /// `loss_mask`: BCE of the logits of each positive RoI's class against its target, averaged over the
    /// `P * M * M` pixels (the [`Normaliser`]; `P = 0` gives a zero term that still reaches the head).
    ///
    /// # Shapes
    /// - logits: `[P, K, M, M]`; targets: `[P, M, M]`; labels: `[P]`
    pub fn loss(
        &self,
        logits: Tensor<B, 4>,
        targets: Tensor<B, 3>,
        labels: Tensor<B, 1, Int>,
    ) -> Result<LossTerm<B>, ModelError> {
        let [p, _, m, m2] = logits.dims();
        let value = mask_cross_entropy(logits, targets, labels)
            .map_err(|e| ModelError(format!("loss_mask: {e}")))?
            * self.loss_weight;
        Ok(LossTerm::new(
            "loss_mask",
            value,
            Normaliser::new((p * m * m2) as f64, 0.0),
        ))
    }

    /// Per-detection probability maps of their own class, on the host.
    ///
    /// # Shapes
    /// - logits: `[D, K, M, M]`; labels: D classes; output: D maps of `M * M`, row-major
    pub fn probabilities(&self, logits: Tensor<B, 4>, labels: &[usize]) -> Vec<Vec<f32>> {
        let [d, k, m, _] = logits.dims();
        if d == 0 {
            return Vec::new();
        }
        let values: Vec<f32> = sigmoid(logits)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        (0..d)
            .map(|i| {
                let c = if self.class_agnostic || k == 1 {
                    0
                } else {
                    labels[i].min(self.num_classes - 1)
                };
                let o = (i * k + c) * m * m;
                values[o..o + m * m].to_vec()
            })
            .collect()
    }

    /// The binarisation threshold of pasted masks.
    pub fn mask_threshold(&self) -> f32 {
        self.mask_thr
    }

    /// Whose training targets the head learns ([`mask_targets`]).
    pub fn target_convention(&self) -> MaskConvention {
        self.targets
    }

    /// Paste one detection's `m x m` probability map (row-major) into the `h x w` original image inside
    /// `bbox` (`[x1, y1, x2, y2]`, original pixels) by the configured convention, thresholded at
    /// [`Self::mask_threshold`].
    pub fn paste(&self, probs: &[f32], m: usize, bbox: [f32; 4], size: (u32, u32)) -> Rle {
        match self.paste {
            MaskConvention::Mmdetection => paste_mask(probs, m, bbox, size, self.mask_thr),
            MaskConvention::Torchvision => paste_mask_torchvision(probs, m, bbox, size, self.mask_thr),
        }
    }
}

/// Mask targets of the positive RoIs of one image. mmdetection's (`mask_target`): each RoI's assigned
/// instance mask pooled by RoIAlign (output `size x size`, scale 1, adaptive sampling, aligned) and binarised
/// at 0.5. torchvision's (`project_masks_on_boxes`): pooled the same way but with `aligned=False`, and the
/// pooled fractions kept as they are (soft targets of the BCE).
///
/// # Shapes
/// - masks: the image's instance masks (in the transformed image); rois: `[P, 4]` positives; gt_index: `P`
///   indices into `masks`; output: `[P, size, size]` in `{0, 1}` (torchvision: in `[0, 1]`)
pub fn mask_targets<B: DetBackend>(
    masks: &[RleMask],
    rois: &[[f32; 4]],
    gt_index: &[usize],
    size: usize,
    convention: MaskConvention,
    device: &B::Device,
) -> Result<Tensor<B, 3>, ModelError> {
    let p = rois.len();
    if p == 0 {
        return Ok(Tensor::zeros([0, size, size], device));
    }
    let [h, w] = masks
        .first()
        .map(|m| m.size)
        .ok_or_else(|| ModelError("mask targets: positives but no instance mask".into()))?;
    // only the instances some RoI is assigned to are decoded, each once
    let mut used: Vec<usize> = gt_index.to_vec();
    used.sort_unstable();
    used.dedup();
    let mut planes = Vec::with_capacity(used.len() * h * w);
    for &g in &used {
        let m = masks
            .get(g)
            .ok_or_else(|| ModelError(format!("mask targets: no mask for instance {g}")))?;
        if m.size != [h, w] {
            return Err(ModelError(format!(
                "mask targets: instance {g} has a {:?} mask in a {h}x{w} image",
                m.size
            )));
        }
        planes.extend(m.decode().into_iter().map(|b| if b { 1.0f32 } else { 0.0 }));
    }
    let planes = Tensor::<B, 4>::from_data(TensorData::new(planes, [used.len(), 1, h, w]), device);
    let rows: Vec<f32> = rois
        .iter()
        .zip(gt_index)
        .flat_map(|(r, g)| {
            let plane = used.binary_search(g).unwrap_or(0) as f32;
            [plane, r[0], r[1], r[2], r[3]]
        })
        .collect();
    let rois = Tensor::<B, 2>::from_data(TensorData::new(rows, [p, 5]), device);
    let torchvision = convention == MaskConvention::Torchvision;
    let pooled = roi_align(
        planes,
        rois,
        RoiAlignOptions {
            output_size: [size, size],
            spatial_scale: 1.0,
            sampling_ratio: 0,
            aligned: !torchvision,
        },
    )
    .map_err(|e| ModelError(format!("mask targets: {e}")))?;
    let pooled = pooled.reshape([p, size, size]);
    Ok(if torchvision {
        pooled
    } else {
        pooled.greater_equal_elem(0.5).float()
    })
}

/// Appends runs to a column-major run-length encoding (runs alternate 0s and 1s, starting with 0s).
struct Runs {
    counts: Vec<u32>,
    value: bool,
    run: u32,
}

impl Runs {
    fn new() -> Self {
        Self {
            counts: Vec::new(),
            value: false,
            run: 0,
        }
    }

    fn push(&mut self, value: bool, n: u32) {
        if n == 0 {
            return;
        }
        if value != self.value {
            self.counts.push(self.run);
            self.value = value;
            self.run = 0;
        }
        self.run += n;
    }

    fn finish(mut self) -> Vec<u32> {
        self.counts.push(self.run);
        self.counts
    }
}

/// Paste an `m x m` probability map (row-major) onto an `h x w` image inside box `[x1, y1, x2, y2]`
/// (original-image pixels) and threshold it at `thr` (`>=`), as mmdetection's `_do_paste_mask`: pixel
/// centres `x + 0.5` map to `((x + 0.5 - x1) / (x2 - x1)) * m - 0.5` in the map, sampled bilinearly with
/// zeros outside; only the box's window widened by one pixel (clipped to the image) is computed. The RLE is
/// built directly from that window.
pub fn paste_mask(probs: &[f32], m: usize, bbox: [f32; 4], (h, w): (u32, u32), thr: f32) -> Rle {
    let [x1, y1, x2, y2] = bbox;
    let x0i = ((x1.floor() - 1.0).max(0.0) as u32).min(w);
    let y0i = ((y1.floor() - 1.0).max(0.0) as u32).min(h);
    let x1i = ((x2.ceil() + 1.0).max(0.0) as u32).min(w).max(x0i);
    let y1i = ((y2.ceil() + 1.0).max(0.0) as u32).min(h).max(y0i);
    let (bw, bh) = (x2 - x1, y2 - y1);
    let sample = |u: f32, v: f32| -> f32 {
        // bilinear with zero padding (grid_sample's padding_mode="zeros")
        let (u0, v0) = (u.floor(), v.floor());
        let (fu, fv) = (u - u0, v - v0);
        let tap = |uu: f32, vv: f32| -> f32 {
            if uu < 0.0 || vv < 0.0 || uu >= m as f32 || vv >= m as f32 {
                0.0
            } else {
                probs[vv as usize * m + uu as usize]
            }
        };
        tap(u0, v0) * (1.0 - fu) * (1.0 - fv)
            + tap(u0 + 1.0, v0) * fu * (1.0 - fv)
            + tap(u0, v0 + 1.0) * (1.0 - fu) * fv
            + tap(u0 + 1.0, v0 + 1.0) * fu * fv
    };
    let map = |p: f32, lo: f32, extent: f32| -> f32 {
        if extent > 0.0 {
            (p + 0.5 - lo) / extent * m as f32 - 0.5
        } else {
            f32::NAN
        }
    };
    let mut runs = Runs::new();
    runs.push(false, x0i * h);
    for x in x0i..x1i {
        let u = map(x as f32, x1, bw);
        runs.push(false, y0i);
        for y in y0i..y1i {
            let v = map(y as f32, y1, bh);
            let on = !u.is_nan() && !v.is_nan() && sample(u, v) >= thr;
            runs.push(on, 1);
        }
        runs.push(false, h - y1i);
    }
    runs.push(false, (w - x1i) * h);
    Rle {
        h,
        w,
        counts: runs.finish(),
    }
}

/// One axis of `F.interpolate(mode="bilinear", align_corners=False)` from `input` to `output` samples, as
/// PyTorch's CPU kernel computes it in f32: output `i` reads `src = max((i + 0.5) * input / output - 0.5, 0)`,
/// taps `i0 = min(floor(src), input - 1)` and `i0 + 1` (`i0` itself at the last sample) with weights
/// `1 - l, l`, `l = clamp(src - i0, 0, 1)`. Returns `(i0, i1, 1 - l, l)` per output sample.
fn linear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| {
            let src = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let l = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l, l)
        })
        .collect()
}

/// Paste an `m x m` probability map (row-major) onto an `h x w` image for box `[x1, y1, x2, y2]`
/// (original-image pixels) as torchvision's `paste_masks_in_image`, and threshold it at `thr` (`>`, as
/// torchvision's COCO evaluation binarises its pasted masks):
/// - the map is padded by one zero pixel on each side (`(m + 2) x (m + 2)`) and the box widened about its
///   centre by `(m + 2) / m` (in f32: `c -/+ (x2 - x1) * 0.5 * scale`), then truncated to integers toward
///   zero (`.to(torch.int64)`), giving `[bx0, by0, bx1, by1]`;
/// - the padded map is resized to `max(bx1 - bx0 + 1, 1)` columns and `max(by1 - by0 + 1, 1)` rows
///   (bilinear, `align_corners=False`, [`linear_taps`]) and laid with its top-left pixel at `(bx0, by0)`,
///   clipped to the image.
///
/// Only that window is computed, and the RLE (column-major) is built straight from it.
pub fn paste_mask_torchvision(probs: &[f32], m: usize, bbox: [f32; 4], (h, w): (u32, u32), thr: f32) -> Rle {
    let mut runs = Runs::new();
    if m == 0 || probs.len() < m * m {
        runs.push(false, h * w);
        return Rle {
            h,
            w,
            counts: runs.finish(),
        };
    }
    let padded = m + 2;
    let scale = padded as f32 / m as f32;
    let [x1, y1, x2, y2] = bbox;
    let (w_half, h_half) = ((x2 - x1) * 0.5 * scale, (y2 - y1) * 0.5 * scale);
    let (xc, yc) = ((x2 + x1) * 0.5, (y2 + y1) * 0.5);
    // `as i64` truncates toward zero, as torch's float-to-int64 conversion
    let (bx0, bx1) = ((xc - w_half) as i64, (xc + w_half) as i64);
    let (by0, by1) = ((yc - h_half) as i64, (yc + h_half) as i64);
    let out_w = (bx1 - bx0 + 1).max(1) as usize;
    let out_h = (by1 - by0 + 1).max(1) as usize;
    // the window of the image the resized map covers (torchvision's slice bounds)
    let clip = |v: i64, hi: u32| v.clamp(0, hi as i64) as u32;
    let wx0 = clip(bx0, w);
    let wx1 = clip(bx1 + 1, w).max(wx0);
    let wy0 = clip(by0, h);
    let wy1 = clip(by1 + 1, h).max(wy0);
    let cols = linear_taps(padded, out_w);
    let rows = linear_taps(padded, out_h);
    // the padded map's value at (row, col): the border is zero
    let at = |r: usize, c: usize| -> f32 {
        if r == 0 || c == 0 || r > m || c > m {
            0.0
        } else {
            probs[(r - 1) * m + (c - 1)]
        }
    };
    runs.push(false, wx0 * h);
    for x in wx0..wx1 {
        let (c0, c1, cw0, cw1) = cols[(x as i64 - bx0) as usize];
        runs.push(false, wy0);
        for y in wy0..wy1 {
            let (r0, r1, rw0, rw1) = rows[(y as i64 - by0) as usize];
            // PyTorch's order: each row's horizontal blend, then the vertical one
            let v = (at(r0, c0) * cw0 + at(r0, c1) * cw1) * rw0 + (at(r1, c0) * cw0 + at(r1, c1) * cw1) * rw1;
            runs.push(v > thr, 1);
        }
        runs.push(false, h - wy1);
    }
    runs.push(false, (w - wx1) * h);
    Rle {
        h,
        w,
        counts: runs.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// The paste by hand: a 2x2 map of ones pasted into the box [2, 2, 6, 6] of an 8x8 image. Pixel centres
    /// map to `(x + 0.5 - 2) / 4 * 2 - 0.5`: x = 1 -> -0.75 (0.25 of column 0, off),
    /// x = 2 -> -0.25 (0.75 of column 0 -> 0.75 >= 0.5, on), x = 5 -> 1.25 (0.75 of column 1, on),
    /// x = 6 -> 1.75 (0.25, off). So columns and rows 2..=5 are on: a 4x4 square, area 16, at [2, 2, 4, 4].
    #[test]
    fn paste_by_hand_and_window_rle_equals_the_full_encoding() {
        let rle = paste_mask(&[1.0; 4], 2, [2.0, 2.0, 6.0, 6.0], (8, 8), 0.5);
        assert_eq!(rle.area(), 16);
        assert_eq!(rle.to_bbox(), [2.0, 2.0, 4.0, 4.0]);
        // the direct RLE equals encoding the decoded full bitmap
        let full = rle.decode().unwrap();
        assert_eq!(Rle::encode(&full, 8, 8).unwrap(), rle);
        // a box at the border and one smaller than a pixel
        let edge = paste_mask(&[1.0; 4], 2, [5.0, 0.0, 8.0, 3.0], (8, 8), 0.5);
        assert_eq!(edge.counts.iter().sum::<u32>(), 64);
        assert!(edge.area() > 0);
        let tiny = paste_mask(&[1.0; 4], 2, [3.2, 3.2, 3.4, 3.4], (8, 8), 0.5);
        assert_eq!(tiny.counts.iter().sum::<u32>(), 64);
        assert_eq!(tiny.area(), 0, "no pixel centre lies inside a 0.2 px box");
        let empty = paste_mask(&[0.0; 4], 2, [0.0, 0.0, 8.0, 8.0], (8, 8), 0.5);
        assert_eq!(empty.counts, vec![64]);
    }

    /// torchvision's paste by hand, a 2x2 map of ones in the box [2, 2, 6, 6] of an 8x8 image: padded to 4x4
    /// (`[0, 1, 1, 0]` on each axis), the box widened by 4 / 2 about its centre 4 to [0, 8], so the padded map
    /// is resized to 9 samples per axis, `src = max((i + 0.5) * 4 / 9 - 0.5, 0)`: i = 0 -> 0 (value 0),
    /// 1 -> 0.167, 2 -> 0.611, 3 -> 1.056, 4 -> 1.5, 5 -> 1.944 (value 1), 6 -> 2.389 (0.611), 7 -> 2.833
    /// (0.167). The map is the product of the two profiles: > 0.5 where both are >= 0.611 and not both 0.611
    /// (0.373), i.e. rows and columns 2..=6 but the 4 corners: 21 pixels, bounding box [2, 2, 5, 5] (xywh).
    /// mmdetection's paste of the same map covers 2..=5 (16 pixels, the test above).
    #[test]
    fn torchvision_paste_by_hand() {
        let rle = paste_mask_torchvision(&[1.0; 4], 2, [2.0, 2.0, 6.0, 6.0], (8, 8), 0.5);
        assert_eq!(rle.area(), 21);
        assert_eq!(rle.to_bbox(), [2.0, 2.0, 5.0, 5.0]);
        let full = rle.decode().unwrap();
        assert_eq!(Rle::encode(&full, 8, 8).unwrap(), rle);
        // the decoded bitmap is column-major
        for (y, x) in [(2, 2), (2, 6), (6, 2), (6, 6), (1, 4), (7, 4)] {
            assert_eq!(full[x * 8 + y], 0, "({y}, {x}) is off");
        }
        for (y, x) in [(2, 3), (4, 4), (6, 5), (3, 6)] {
            assert_eq!(full[x * 8 + y], 1, "({y}, {x}) is on");
        }
    }

    /// A box at the border, map 0.8 everywhere, box [5, 0, 8, 3] in an 8x8 image: widened by 2 about
    /// (6.5, 1.5) to [3.5, -1.5, 9.5, 4.5], truncated toward zero to [3, -1, 9, 4]: 7 columns (x = 3..=9,
    /// clipped to 3..=7) and 6 rows (y = -1..=4, clipped to 0..=4). Columns (4 -> 7 samples, scale 4/7):
    /// x = 3..=7 -> 0, 0.357, 0.929, 1, 0.929; rows (4 -> 6, scale 2/3): y = 0..=4 -> 0.5, 1, 1, 0.5, 0. On
    /// where 0.8 * column * row > 0.5: rows 1 and 2, columns 5..=7: 6 pixels, [5, 1, 3, 2] (xywh).
    /// A 0.2 px box [3.2, 3.2, 3.4, 3.4] truncates to the single pixel (3, 3), which samples the middle of
    /// the padded map (value 1): one pixel on, where mmdetection's paste has none.
    #[test]
    fn torchvision_paste_at_the_border_and_under_a_pixel() {
        let edge = paste_mask_torchvision(&[0.8; 4], 2, [5.0, 0.0, 8.0, 3.0], (8, 8), 0.5);
        assert_eq!(edge.counts.iter().sum::<u32>(), 64);
        assert_eq!(edge.area(), 6);
        assert_eq!(edge.to_bbox(), [5.0, 1.0, 3.0, 2.0]);
        let tiny = paste_mask_torchvision(&[1.0; 4], 2, [3.2, 3.2, 3.4, 3.4], (8, 8), 0.5);
        assert_eq!(tiny.area(), 1);
        assert_eq!(tiny.to_bbox(), [3.0, 3.0, 1.0, 1.0]);
    }

    /// Empty inputs of torchvision's paste: a zero map, a box outside the image (torchvision's slicing raises
    /// there; detections are clipped to the image before it is reached), no map at all, and an empty image
    /// give empty masks of the image's size.
    #[test]
    fn torchvision_paste_of_nothing_is_empty() {
        let zero = paste_mask_torchvision(&[0.0; 4], 2, [0.0, 0.0, 8.0, 8.0], (8, 8), 0.5);
        assert_eq!(zero.counts, vec![64]);
        let outside = paste_mask_torchvision(&[1.0; 4], 2, [20.0, 20.0, 30.0, 30.0], (8, 8), 0.5);
        assert_eq!(outside.counts, vec![64]);
        let left = paste_mask_torchvision(&[1.0; 4], 2, [-30.0, 2.0, -20.0, 4.0], (8, 8), 0.5);
        assert_eq!(left.counts, vec![64]);
        let no_map = paste_mask_torchvision(&[], 0, [0.0, 0.0, 8.0, 8.0], (8, 8), 0.5);
        assert_eq!(no_map.counts, vec![64]);
        let no_image = paste_mask_torchvision(&[1.0; 4], 2, [0.0, 0.0, 8.0, 8.0], (0, 0), 0.5);
        assert_eq!(no_image.area(), 0);
    }

    /// torchvision's targets by hand: the left-half instance, RoI [0, 0, 8, 8] pooled to 2x2 with
    /// `aligned=False` and 4 x 4 samples per bin (adaptive: 8 / 2): the left bin samples x = 0.5, 1.5, 2.5,
    /// 3.5 in pixel-index coordinates, i.e. 1, 1, 1 and 0.5 (halfway between pixel 3, on, and 4, off), mean
    /// 0.875, kept soft; the right bin 0. (mmdetection's aligned sampling gives exactly 1 and 0.)
    #[test]
    fn torchvision_mask_targets_are_soft_and_unaligned() {
        let device = Default::default();
        let bits: Vec<bool> = (0..64).map(|i| i % 8 < 4).collect();
        let masks = [RleMask::encode(&bits, [8, 8])];
        let t = mask_targets::<Flex>(
            &masks,
            &[[0.0, 0.0, 8.0, 8.0]],
            &[0],
            2,
            MaskConvention::Torchvision,
            &device,
        )
        .unwrap();
        let v: Vec<f32> = t.into_data().to_vec().unwrap();
        for (got, want) in v.iter().zip([0.875, 0.0, 0.875, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{v:?}");
        }
    }

    /// Targets by hand: an instance covering the left half of a 8x8 image; a RoI over the whole image
    /// pooled to 2x2 gives left column 1, right column 0; a RoI inside the instance gives all ones.
    #[test]
    fn mask_targets_crop_and_binarise() {
        let device = Default::default();
        let bits: Vec<bool> = (0..64).map(|i| i % 8 < 4).collect();
        let masks = [RleMask::encode(&bits, [8, 8])];
        let t = mask_targets::<Flex>(
            &masks,
            &[[0.0, 0.0, 8.0, 8.0], [0.0, 2.0, 3.0, 6.0]],
            &[0, 0],
            2,
            MaskConvention::Mmdetection,
            &device,
        )
        .unwrap();
        let v: Vec<f32> = t.into_data().to_vec().unwrap();
        assert_eq!(v, vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        let none = mask_targets::<Flex>(&masks, &[], &[], 28, MaskConvention::Torchvision, &device).unwrap();
        assert_eq!(none.dims(), [0, 28, 28]);
    }
}
