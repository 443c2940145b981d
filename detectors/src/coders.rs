//! Box coders: the `(dx, dy, dw, dh)` regression targets of R-CNN (mmdetection `DeltaXYWHBBoxCoder`).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::structures::BlocksError;
use crate::structures::error::check_boxes;

fn default_means() -> [f32; 4] {
    [0.0; 4]
}
fn default_stds() -> [f32; 4] {
    [1.0; 4]
}
fn default_true() -> bool {
    true
}
fn default_ctr_clamp() -> f32 {
    32.0
}
fn default_wh_ratio_clip() -> f32 {
    16.0 / 1000.0
}

/// Configuration of the delta XYWH coder (mmdetection field names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaXywhCoderConfig {
    /// Means subtracted from the raw deltas (`target_means`).
    #[serde(default = "default_means")]
    pub target_means: [f32; 4],
    /// Standard deviations dividing the raw deltas (`target_stds`; Faster R-CNN's box head: 0.1, 0.1, 0.2, 0.2).
    #[serde(default = "default_stds")]
    pub target_stds: [f32; 4],
    /// Clip decoded boxes to the image when a size is given.
    #[serde(default = "default_true")]
    pub clip_border: bool,
    /// Clamp the centre shift to `±ctr_clamp` pixels, and `dw, dh` only from above (YOLOF).
    #[serde(default)]
    pub add_ctr_clamp: bool,
    /// Largest centre shift in pixels when `add_ctr_clamp`.
    #[serde(default = "default_ctr_clamp")]
    pub ctr_clamp: f32,
    /// `dw, dh` are clamped to `±|ln(wh_ratio_clip)|` before `exp`.
    #[serde(default = "default_wh_ratio_clip")]
    pub wh_ratio_clip: f32,
    /// Clamp `dw, dh` only from above, at `|ln(wh_ratio_clip)|` (torchvision's `BoxCoder`, whose
    /// `bbox_xform_clip` is `ln(1000 / 16)`); the centre shift is not clamped.
    #[serde(default)]
    pub clamp_wh_above_only: bool,
}

impl Default for DeltaXywhCoderConfig {
    fn default() -> Self {
        Self {
            target_means: default_means(),
            target_stds: default_stds(),
            clip_border: true,
            add_ctr_clamp: false,
            ctr_clamp: default_ctr_clamp(),
            wh_ratio_clip: default_wh_ratio_clip(),
            clamp_wh_above_only: false,
        }
    }
}

impl DeltaXywhCoderConfig {
    /// Builds the coder.
    ///
    /// # Errors
    /// [`BlocksError::Config`] when a std is not positive or `wh_ratio_clip` is not in `(0, 1]`.
    pub fn init(&self) -> Result<DeltaXywhCoder, BlocksError> {
        if self.target_stds.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(BlocksError::config("target_stds", "must be positive"));
        }
        if !(self.wh_ratio_clip > 0.0 && self.wh_ratio_clip <= 1.0) {
            return Err(BlocksError::config("wh_ratio_clip", "must be in (0, 1]"));
        }
        Ok(DeltaXywhCoder { cfg: self.clone() })
    }
}

/// Encodes boxes as normalised centre/size deltas relative to reference boxes, and decodes them back.
///
/// `dx = (gx - px) / pw`, `dy = (gy - py) / ph`, `dw = ln(gw / pw)`, `dh = ln(gh / ph)`, then
/// `(d - mean) / std`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaXywhCoder {
    cfg: DeltaXywhCoderConfig,
}

fn cols<B: Backend>(t: Tensor<B, 2>) -> [Tensor<B, 2>; 4] {
    let n = t.dims()[0];
    let c = |i: usize| t.clone().slice(s![.., i..i + 1]).reshape([n, 1]);
    [c(0), c(1), c(2), c(3)]
}

impl DeltaXywhCoder {
    /// The configuration.
    pub fn config(&self) -> &DeltaXywhCoderConfig {
        &self.cfg
    }

    /// Regression targets turning `boxes` into `targets`.
    ///
    /// # Shapes
    /// - boxes, targets: `[N, 4]` xyxy
    /// - output: `[N, 4]` normalised `(dx, dy, dw, dh)`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the inputs are not both `[N, 4]`.
    pub fn encode<B: Backend>(
        &self,
        boxes: Tensor<B, 2>,
        targets: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, BlocksError> {
        check_boxes("boxes", boxes.dims())?;
        check_boxes("targets", targets.dims())?;
        if boxes.dims() != targets.dims() {
            return Err(BlocksError::shape(
                "targets",
                &targets.dims(),
                &format!("{:?} (as boxes)", boxes.dims()),
            ));
        }
        let device = boxes.device();
        if boxes.dims()[0] == 0 {
            return Ok(Tensor::zeros([0, 4], &device));
        }
        let [px1, py1, px2, py2] = cols(boxes);
        let [gx1, gy1, gx2, gy2] = cols(targets);
        let (pw, ph) = (px2.clone() - px1.clone(), py2.clone() - py1.clone());
        let (gw, gh) = (gx2.clone() - gx1.clone(), gy2.clone() - gy1.clone());
        let (px, py) = ((px1 + px2) * 0.5, (py1 + py2) * 0.5);
        let (gx, gy) = ((gx1 + gx2) * 0.5, (gy1 + gy2) * 0.5);
        let dx = (gx - px) / pw.clone();
        let dy = (gy - py) / ph.clone();
        let dw = (gw / pw).log();
        let dh = (gh / ph).log();
        let deltas = Tensor::cat(vec![dx, dy, dw, dh], 1);
        let means = Tensor::<B, 1>::from_floats(self.cfg.target_means, &device).reshape([1, 4]);
        let stds = Tensor::<B, 1>::from_floats(self.cfg.target_stds, &device).reshape([1, 4]);
        Ok((deltas - means) / stds)
    }

    /// Applies deltas to reference boxes.
    ///
    /// # Shapes
    /// - boxes: `[N, 4]` xyxy
    /// - deltas: `[N, 4 * K]` (K boxes per reference, e.g. one per class)
    /// - max_shape: `[height, width]` to clip to (when `clip_border`)
    /// - output: `[N, 4 * K]` xyxy
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when boxes are not `[N, 4]` or deltas not `[N, 4K]`.
    pub fn decode<B: Backend>(
        &self,
        boxes: Tensor<B, 2>,
        deltas: Tensor<B, 2>,
        max_shape: Option<[usize; 2]>,
    ) -> Result<Tensor<B, 2>, BlocksError> {
        check_boxes("boxes", boxes.dims())?;
        let [n, d] = deltas.dims();
        if n != boxes.dims()[0] || d == 0 || d % 4 != 0 {
            return Err(BlocksError::shape(
                "deltas",
                &deltas.dims(),
                &format!("[{}, 4 * K]", boxes.dims()[0]),
            ));
        }
        let device = boxes.device();
        if n == 0 {
            return Ok(deltas);
        }
        let k = d / 4;
        let rois = boxes.reshape([n, 1, 4]).expand([n, k, 4]).reshape([n * k, 4]);
        let deltas = deltas.reshape([n * k, 4]);
        let means = Tensor::<B, 1>::from_floats(self.cfg.target_means, &device).reshape([1, 4]);
        let stds = Tensor::<B, 1>::from_floats(self.cfg.target_stds, &device).reshape([1, 4]);
        let deltas = deltas * stds + means;
        let dxy = deltas.clone().slice(s![.., 0..2]);
        let dwh = deltas.slice(s![.., 2..4]);
        let pxy = (rois.clone().slice(s![.., 0..2]) + rois.clone().slice(s![.., 2..4])) * 0.5;
        let pwh = rois.clone().slice(s![.., 2..4]) - rois.slice(s![.., 0..2]);
        let mut dxy_wh = pwh.clone() * dxy;
        let max_ratio = self.cfg.wh_ratio_clip.ln().abs();
        let dwh = if self.cfg.add_ctr_clamp {
            dxy_wh = dxy_wh.clamp(-self.cfg.ctr_clamp, self.cfg.ctr_clamp);
            dwh.clamp_max(max_ratio)
        } else if self.cfg.clamp_wh_above_only {
            dwh.clamp_max(max_ratio)
        } else {
            dwh.clamp(-max_ratio, max_ratio)
        };
        let gxy = pxy + dxy_wh;
        let gwh = pwh * dwh.exp();
        let half = gwh * 0.5;
        let mut out = Tensor::cat(vec![gxy.clone() - half.clone(), gxy + half], 1); // [n*k, 4]
        if let (true, Some([h, w])) = (self.cfg.clip_border, max_shape) {
            let x = out
                .clone()
                .reshape([n * k, 2, 2])
                .slice(s![.., .., 0..1])
                .clamp(0.0, w as f32);
            let y = out
                .reshape([n * k, 2, 2])
                .slice(s![.., .., 1..2])
                .clamp(0.0, h as f32);
            out = Tensor::cat(vec![x, y], 2).reshape([n * k, 4]);
        }
        Ok(out.reshape([n, 4 * k]))
    }
}
