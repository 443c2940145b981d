//! Anchor generation: mmdetection's `AnchorGenerator` (strides, ratios, scales or octave scales, centre offset,
//! scale-major order) with torchvision's rounded base anchors as an option, and valid flags against each image's
//! padded size.
//!
//! Anchor order within a level is location-major: row `y`, then column `x`, then the level's base anchors
//! (ratio-major when `scale_major`), i.e. index `(y * W + x) * A + a`, as in both references.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::structures::BlocksError;

fn default_center_offset() -> f32 {
    0.0
}
fn default_true() -> bool {
    true
}

/// Configuration of an [`AnchorGenerator`] (mmdetection `AnchorGenerator` fields).
///
/// JSON example (RetinaNet):
/// `{"strides": [8, 16, 32, 64, 128], "ratios": [0.5, 1.0, 2.0], "octave_base_scale": 4, "scales_per_octave": 3}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorGeneratorConfig {
    /// Stride of each level in pixels.
    pub strides: Vec<usize>,
    /// Height / width ratios.
    pub ratios: Vec<f32>,
    /// Explicit scales, multiplied by the level's base size (Faster R-CNN RPN: `[8]`). Exclusive with the
    /// octave fields.
    #[serde(default)]
    pub scales: Option<Vec<f32>>,
    /// Octave scales `octave_base_scale * 2^(i / scales_per_octave)`, `i in 0..scales_per_octave`
    /// (RetinaNet: 4 and 3).
    #[serde(default)]
    pub octave_base_scale: Option<f32>,
    /// See `octave_base_scale`.
    #[serde(default)]
    pub scales_per_octave: Option<usize>,
    /// Base size per level; defaults to the strides.
    #[serde(default)]
    pub base_sizes: Option<Vec<f32>>,
    /// Whether base anchors are ordered ratio-major (`true`, mmdetection default) or scale-major.
    #[serde(default = "default_true")]
    pub scale_major: bool,
    /// Centre of the base anchors as a fraction of the base size (0 in mmdetection 2+, 0.5 for "centred").
    #[serde(default = "default_center_offset")]
    pub center_offset: f32,
    /// Round base anchors to integers (torchvision `AnchorGenerator`, ties to even as `torch.round`).
    #[serde(default)]
    pub round_base_anchors: bool,
    /// torchvision's `sizes`: per level, the sides in pixels of the ratio-1 anchors, so that a base anchor is
    /// `w = size / sqrt(ratio)`, `h = size * sqrt(ratio)` (torchvision's RetinaNet truncates its octave sizes,
    /// `int(32 * 2^(1/3)) = 40`, which no `scales` list reproduces). Exclusive with `scales`, the octave fields
    /// and `base_sizes`.
    #[serde(default)]
    pub sizes: Option<Vec<Vec<f32>>>,
    /// Shift the anchors of a level by torchvision's stride, `batch size // feature size` per axis, instead of
    /// the level's nominal stride (they differ where a level is not an exact division of the padded batch,
    /// e.g. P6 of an 800-pixel-high batch: 800 // 13 = 61, not 64).
    #[serde(default)]
    pub strides_from_batch: bool,
}

impl AnchorGeneratorConfig {
    /// RetinaNet's anchors: strides 8..128, ratios 0.5/1/2, octave base scale 4 with 3 scales per octave.
    pub fn retinanet() -> Self {
        Self {
            strides: vec![8, 16, 32, 64, 128],
            ratios: vec![0.5, 1.0, 2.0],
            scales: None,
            octave_base_scale: Some(4.0),
            scales_per_octave: Some(3),
            base_sizes: None,
            scale_major: true,
            center_offset: 0.0,
            round_base_anchors: false,
            sizes: None,
            strides_from_batch: false,
        }
    }

    /// Builds the generator (computes the base anchors).
    ///
    /// # Errors
    /// [`BlocksError::Config`] for empty lists, non-positive values or mismatched lengths.
    pub fn init(&self) -> Result<AnchorGenerator, BlocksError> {
        if let Some(sizes) = &self.sizes {
            return self.init_from_sizes(sizes);
        }
        let scales = self.scale_values()?;
        if self.strides.is_empty() || self.strides.contains(&0) {
            return Err(BlocksError::config(
                "strides",
                "must be a non-empty list of positive integers",
            ));
        }
        if self.ratios.is_empty() || self.ratios.iter().any(|r| r.is_nan() || *r <= 0.0) {
            return Err(BlocksError::config(
                "ratios",
                "must be a non-empty list of positive numbers",
            ));
        }
        if scales.is_empty() || scales.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(BlocksError::config(
                "scales",
                "must give at least one positive scale",
            ));
        }
        if !(0.0..=1.0).contains(&self.center_offset) {
            return Err(BlocksError::config("center_offset", "must be in [0, 1]"));
        }
        let base_sizes: Vec<f32> = match &self.base_sizes {
            Some(b) if b.len() != self.strides.len() => {
                return Err(BlocksError::config(
                    "base_sizes",
                    format!("has {} entries, strides has {}", b.len(), self.strides.len()),
                ));
            }
            Some(b) => b.clone(),
            None => self.strides.iter().map(|&s| s as f32).collect(),
        };
        let base_anchors = base_sizes
            .iter()
            .map(|&size| self.level_base_anchors(size, &scales))
            .collect();
        Ok(AnchorGenerator {
            strides: self.strides.clone(),
            base_anchors,
            strides_from_batch: self.strides_from_batch,
        })
    }

    /// torchvision's `AnchorGenerator`: the ratio-1 sides are given per level.
    fn init_from_sizes(&self, sizes: &[Vec<f32>]) -> Result<AnchorGenerator, BlocksError> {
        if self.scales.is_some()
            || self.octave_base_scale.is_some()
            || self.scales_per_octave.is_some()
            || self.base_sizes.is_some()
        {
            return Err(BlocksError::config(
                "sizes",
                "excludes `scales`, `octave_base_scale`, `scales_per_octave` and `base_sizes`",
            ));
        }
        if sizes.len() != self.strides.len() || self.strides.contains(&0) {
            return Err(BlocksError::config(
                "sizes",
                format!(
                    "has {} levels for {} positive strides",
                    sizes.len(),
                    self.strides.len()
                ),
            ));
        }
        if sizes
            .iter()
            .any(|l| l.is_empty() || l.iter().any(|s| s.is_nan() || *s <= 0.0))
        {
            return Err(BlocksError::config(
                "sizes",
                "every level needs at least one positive size",
            ));
        }
        if self.ratios.is_empty() || self.ratios.iter().any(|r| r.is_nan() || *r <= 0.0) {
            return Err(BlocksError::config(
                "ratios",
                "must be a non-empty list of positive numbers",
            ));
        }
        // a size is a scale of a base size of 1
        let base_anchors = sizes.iter().map(|s| self.level_base_anchors(1.0, s)).collect();
        Ok(AnchorGenerator {
            strides: self.strides.clone(),
            base_anchors,
            strides_from_batch: self.strides_from_batch,
        })
    }

    /// The per-level scales (explicit, or computed from the octave fields).
    ///
    /// # Errors
    /// [`BlocksError::Config`] unless exactly one of `scales` or the two octave fields is given.
    pub fn scale_values(&self) -> Result<Vec<f32>, BlocksError> {
        match (&self.scales, self.octave_base_scale, self.scales_per_octave) {
            (Some(s), None, None) => Ok(s.clone()),
            (None, Some(base), Some(n)) => {
                Ok((0..n).map(|i| base * 2f32.powf(i as f32 / n as f32)).collect())
            }
            _ => Err(BlocksError::config(
                "scales",
                "give either `scales` or both `octave_base_scale` and `scales_per_octave`",
            )),
        }
    }

    fn level_base_anchors(&self, base_size: f32, scales: &[f32]) -> Vec<[f32; 4]> {
        let (cx, cy) = (self.center_offset * base_size, self.center_offset * base_size);
        let mut out = Vec::with_capacity(self.ratios.len() * scales.len());
        let mut push = |ratio: f32, scale: f32| {
            let h_ratio = ratio.sqrt();
            let w_ratio = 1.0 / h_ratio;
            let (w, h) = (base_size * w_ratio * scale, base_size * h_ratio * scale);
            let mut a = [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h];
            if self.round_base_anchors {
                a = a.map(f32::round_ties_even);
            }
            out.push(a);
        };
        if self.scale_major {
            for &r in &self.ratios {
                for &s in scales {
                    push(r, s);
                }
            }
        } else {
            for &s in scales {
                for &r in &self.ratios {
                    push(r, s);
                }
            }
        }
        out
    }
}

/// Anchors of every level, built from an [`AnchorGeneratorConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorGenerator {
    strides: Vec<usize>,
    base_anchors: Vec<Vec<[f32; 4]>>,
    strides_from_batch: bool,
}

impl AnchorGenerator {
    /// Check that the generator has one stride per feature level and that they are the levels' strides
    /// (`level_strides`, finest first); the message says which differ.
    pub fn check_level_strides(&self, level_strides: &[usize]) -> Result<(), String> {
        if level_strides.len() != self.num_levels() {
            return Err(format!(
                "{} strides for {} FPN levels",
                self.num_levels(),
                level_strides.len()
            ));
        }
        for (&level, &stride) in level_strides.iter().zip(self.strides()) {
            if level != stride {
                return Err(format!("{stride} for an FPN level of stride {level}"));
            }
        }
        Ok(())
    }

    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.strides.len()
    }

    /// Strides of the levels.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Number of anchors per location of each level (`A`).
    pub fn num_base_anchors(&self) -> Vec<usize> {
        self.base_anchors.iter().map(Vec::len).collect()
    }

    /// The base anchors (centred at the origin shifted by the centre offset) of a level.
    pub fn base_anchors(&self, level: usize) -> &[[f32; 4]] {
        &self.base_anchors[level]
    }

    fn check_levels(&self, featmap_sizes: &[[usize; 2]]) -> Result<(), BlocksError> {
        if featmap_sizes.len() != self.num_levels() {
            return Err(BlocksError::shape(
                "featmap_sizes",
                &[featmap_sizes.len()],
                &format!("one [H, W] per anchor level ({})", self.num_levels()),
            ));
        }
        Ok(())
    }

    /// Anchors of every level on the device.
    ///
    /// # Shapes
    /// - featmap_sizes: one `[H_l, W_l]` per level
    /// - output: one `[H_l * W_l * A_l, 4]` xyxy tensor per level
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the number of levels differs from the generator's.
    pub fn grid_anchors<B: Backend>(
        &self,
        featmap_sizes: &[[usize; 2]],
        device: &B::Device,
    ) -> Result<Vec<Tensor<B, 2>>, BlocksError> {
        self.grid_anchors_in::<B>(featmap_sizes, None, device)
    }

    /// [`Self::grid_anchors`] for a batch tensor of `[H, W]`: with `strides_from_batch` a level's anchors are
    /// shifted by `(H // H_l, W // W_l)` (torchvision); otherwise, or without `batch_hw`, by the stride.
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the number of levels differs from the generator's.
    pub fn grid_anchors_in<B: Backend>(
        &self,
        featmap_sizes: &[[usize; 2]],
        batch_hw: Option<[usize; 2]>,
        device: &B::Device,
    ) -> Result<Vec<Tensor<B, 2>>, BlocksError> {
        self.check_levels(featmap_sizes)?;
        Ok(featmap_sizes
            .iter()
            .enumerate()
            .map(|(l, &[h, w])| {
                let a = self.base_anchors[l].len();
                let (stride_y, stride_x) = match batch_hw {
                    Some([bh, bw]) if self.strides_from_batch && h * w > 0 => {
                        ((bh / h) as f32, (bw / w) as f32)
                    }
                    _ => (self.strides[l] as f32, self.strides[l] as f32),
                };
                if h * w == 0 {
                    return Tensor::zeros([0, 4], device);
                }
                let base_flat: Vec<f32> = self.base_anchors[l].iter().flatten().copied().collect();
                let base = Tensor::<B, 2>::from_data(TensorData::new(base_flat, [a, 4]), device);
                let xs = Tensor::<B, 1, Int>::arange(0..w as i64, device)
                    .float()
                    .mul_scalar(stride_x);
                let ys = Tensor::<B, 1, Int>::arange(0..h as i64, device)
                    .float()
                    .mul_scalar(stride_y);
                let xx = xs.reshape([1, w]).expand([h, w]).reshape([h * w, 1]);
                let yy = ys.reshape([h, 1]).expand([h, w]).reshape([h * w, 1]);
                let shifts = Tensor::cat(vec![xx.clone(), yy.clone(), xx, yy], 1); // [HW,4]
                (shifts.reshape([h * w, 1, 4]) + base.reshape([1, a, 4])).reshape([h * w * a, 4])
            })
            .collect())
    }

    /// Which anchors lie on this image's padded area: a location `(y, x)` of level `l` is valid when
    /// `y < min(ceil(pad_h / s_l), H_l)` and `x < min(ceil(pad_w / s_l), W_l)` (mmdetection `valid_flags`).
    ///
    /// # Shapes
    /// - output: one `[H_l * W_l * A_l]` mask per level, in [`Self::grid_anchors`] order
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the number of levels differs from the generator's.
    pub fn valid_flags<B: Backend>(
        &self,
        featmap_sizes: &[[usize; 2]],
        pad_size: [usize; 2],
        device: &B::Device,
    ) -> Result<Vec<Tensor<B, 1, Bool>>, BlocksError> {
        self.check_levels(featmap_sizes)?;
        Ok(featmap_sizes
            .iter()
            .enumerate()
            .map(|(l, &[h, w])| {
                let a = self.base_anchors[l].len();
                let s = self.strides[l];
                let valid_h = pad_size[0].div_ceil(s).min(h) as i64;
                let valid_w = pad_size[1].div_ceil(s).min(w) as i64;
                if h * w == 0 {
                    return Tensor::<B, 1, Int>::zeros([0], device).equal_elem(1);
                }
                let vx = Tensor::<B, 1, Int>::arange(0..w as i64, device)
                    .lower_elem(valid_w)
                    .reshape([1, w]);
                let vy = Tensor::<B, 1, Int>::arange(0..h as i64, device)
                    .lower_elem(valid_h)
                    .reshape([h, 1]);
                let v = vx.expand([h, w]).bool_and(vy.expand([h, w])).reshape([h * w, 1]);
                v.expand([h * w, a]).reshape([h * w * a])
            })
            .collect())
    }
}

impl AnchorGenerator {
    /// Anchors of all levels concatenated (level-major, the order in which heads flatten their outputs).
    ///
    /// # Shapes
    /// - output: `[sum_l H_l * W_l * A_l, 4]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the number of levels differs from the generator's.
    pub fn flat_anchors<B: Backend>(
        &self,
        featmap_sizes: &[[usize; 2]],
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, BlocksError> {
        Ok(Tensor::cat(self.grid_anchors::<B>(featmap_sizes, device)?, 0))
    }

    /// Valid flags of all levels concatenated, one row per image of a batch (for
    /// [`crate::assigners::MaxIouAssigner::assign_batch`]).
    ///
    /// # Shapes
    /// - metas: `B` images (their `pad_size` is used)
    /// - output: `[B, sum_l H_l * W_l * A_l]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the number of levels differs from the generator's.
    pub fn batch_valid_flags<B: Backend>(
        &self,
        featmap_sizes: &[[usize; 2]],
        metas: &[crate::structures::ImageMeta],
        device: &B::Device,
    ) -> Result<Tensor<B, 2, Bool>, BlocksError> {
        let total: usize = featmap_sizes
            .iter()
            .zip(&self.base_anchors)
            .map(|(&[h, w], a)| h * w * a.len())
            .sum();
        if metas.is_empty() || total == 0 {
            self.check_levels(featmap_sizes)?;
            return Ok(Tensor::<B, 2, Int>::zeros([metas.len(), total], device).equal_elem(1));
        }
        let rows = metas
            .iter()
            .map(|m| {
                let pad = [m.pad_size.1 as usize, m.pad_size.0 as usize];
                Ok(Tensor::cat(self.valid_flags::<B>(featmap_sizes, pad, device)?, 0))
            })
            .collect::<Result<Vec<_>, BlocksError>>()?;
        Ok(Tensor::stack(rows, 0))
    }
}

/// Anchors usable for training: valid and, when `allowed_border >= 0`, inside the image extended by
/// `allowed_border` pixels (mmdetection `anchor_inside_flags`; RetinaNet uses `-1`, i.e. only the valid flags).
///
/// # Shapes
/// - anchors: `[N, 4]` xyxy, valid: `[N]`, image_size: `[height, width]`
/// - output: `[N]`
pub fn anchor_inside_flags<B: Backend>(
    anchors: Tensor<B, 2>,
    valid: Tensor<B, 1, Bool>,
    image_size: [usize; 2],
    allowed_border: f32,
) -> Tensor<B, 1, Bool> {
    if allowed_border < 0.0 {
        return valid;
    }
    let n = anchors.dims()[0];
    let col = |i: usize| anchors.clone().slice(s![.., i..i + 1]).reshape([n]);
    let (h, w) = (image_size[0] as f32, image_size[1] as f32);
    valid
        .bool_and(col(0).greater_equal_elem(-allowed_border))
        .bool_and(col(1).greater_equal_elem(-allowed_border))
        .bool_and(col(2).lower_elem(w + allowed_border))
        .bool_and(col(3).lower_elem(h + allowed_border))
}
