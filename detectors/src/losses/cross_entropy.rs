use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use super::reduce::{Reduction, bce_with_logits, default_loss_weight, weight_reduce_loss};
use crate::structures::BlocksError;

fn default_ignore_index() -> i64 {
    -100
}

/// Configuration of the softmax [`CrossEntropyLoss`] (mmdetection `CrossEntropyLoss`, `use_sigmoid=False`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossEntropyLossConfig {
    /// Per-class weights multiplying each sample's loss by the weight of its target class.
    #[serde(default)]
    pub class_weight: Option<Vec<f32>>,
    /// Label value whose samples contribute 0.
    #[serde(default = "default_ignore_index")]
    pub ignore_index: i64,
    /// Average over the non-ignored samples only (else over all samples, mmdetection's default).
    #[serde(default)]
    pub avg_non_ignore: bool,
    /// Reduction.
    #[serde(default)]
    pub reduction: Reduction,
    /// Final scale.
    #[serde(default = "default_loss_weight")]
    pub loss_weight: f32,
}

impl Default for CrossEntropyLossConfig {
    fn default() -> Self {
        Self {
            class_weight: None,
            ignore_index: -100,
            avg_non_ignore: false,
            reduction: Reduction::Mean,
            loss_weight: 1.0,
        }
    }
}

impl CrossEntropyLossConfig {
    /// Builds the loss.
    pub fn init(&self) -> CrossEntropyLoss {
        CrossEntropyLoss { cfg: self.clone() }
    }
}

/// Softmax cross-entropy `-w[y] ln softmax(x)[y]` per sample (samples labelled `ignore_index` give 0).
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropyLoss {
    cfg: CrossEntropyLossConfig,
}

impl CrossEntropyLoss {
    /// The loss.
    ///
    /// # Shapes
    /// - logits: `[N, C]`; labels: `[N]` in `0..C` or `ignore_index`; weight: `[N]`; avg_factor: `[1]`;
    ///   output: `[1]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] for mismatched shapes or a class weight list of the wrong length.
    pub fn forward<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        labels: Tensor<B, 1, Int>,
        weight: Option<Tensor<B, 1>>,
        avg_factor: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 1>, BlocksError> {
        let [n, c] = logits.dims();
        if labels.dims()[0] != n {
            return Err(BlocksError::shape(
                "labels",
                &labels.dims(),
                &format!("[{n}] (one per row of logits)"),
            ));
        }
        if let Some(w) = &weight
            && w.dims()[0] != n
        {
            return Err(BlocksError::shape("weight", &w.dims(), &format!("[{n}]")));
        }
        let device = logits.device();
        if n == 0 {
            return Ok(logits.sum() * 0.0);
        }
        let ignored = labels.clone().equal_elem(self.cfg.ignore_index);
        let safe = labels.mask_fill(ignored.clone(), 0).reshape([n, 1]);
        let nll = log_softmax(logits, 1).gather(1, safe.clone()).reshape([n]).neg();
        let mut loss = nll.mask_fill(ignored.clone(), 0.0);
        if let Some(cw) = &self.cfg.class_weight {
            if cw.len() != c {
                return Err(BlocksError::config(
                    "class_weight",
                    format!("has {} entries for {c} classes", cw.len()),
                ));
            }
            let cw = Tensor::<B, 1>::from_floats(cw.as_slice(), &device);
            loss = loss * cw.select(0, safe.reshape([n]));
        }
        let avg_factor = match (avg_factor, self.cfg.avg_non_ignore, self.cfg.reduction) {
            (None, true, Reduction::Mean) => Some(ignored.bool_not().int().sum().float()),
            (a, _, _) => a,
        };
        Ok(weight_reduce_loss(loss, weight, self.cfg.reduction, avg_factor)? * self.cfg.loss_weight)
    }
}

/// Configuration of the [`BinaryCrossEntropyLoss`] (mmdetection `CrossEntropyLoss` with `use_sigmoid=True`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCrossEntropyLossConfig {
    /// Per-class weight of the positive term (torch's `pos_weight`, which is what mmdetection passes its
    /// `class_weight` as).
    #[serde(default)]
    pub class_weight: Option<Vec<f32>>,
    /// Reduction.
    #[serde(default)]
    pub reduction: Reduction,
    /// Final scale.
    #[serde(default = "default_loss_weight")]
    pub loss_weight: f32,
}

impl Default for BinaryCrossEntropyLossConfig {
    fn default() -> Self {
        Self {
            class_weight: None,
            reduction: Reduction::Mean,
            loss_weight: 1.0,
        }
    }
}

impl BinaryCrossEntropyLossConfig {
    /// Builds the loss.
    pub fn init(&self) -> BinaryCrossEntropyLoss {
        BinaryCrossEntropyLoss { cfg: self.clone() }
    }
}

/// Binary cross-entropy on logits, per element.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryCrossEntropyLoss {
    cfg: BinaryCrossEntropyLossConfig,
}

impl BinaryCrossEntropyLoss {
    /// The loss.
    ///
    /// # Shapes
    /// - logits, targets: `[N, C]`; weight: `[N, C]` or `[N, 1]`; avg_factor: `[1]`; output: `[1]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] for mismatched shapes or a class weight list of the wrong length.
    pub fn forward<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        targets: Tensor<B, 2>,
        weight: Option<Tensor<B, 2>>,
        avg_factor: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 1>, BlocksError> {
        let [n, c] = logits.dims();
        if targets.dims() != [n, c] {
            return Err(BlocksError::shape(
                "targets",
                &targets.dims(),
                &format!("[{n}, {c}] (as logits)"),
            ));
        }
        let device = logits.device();
        if n == 0 {
            return Ok(logits.sum() * 0.0);
        }
        let loss = match &self.cfg.class_weight {
            None => bce_with_logits(logits, targets),
            Some(pw) if pw.len() != c => {
                return Err(BlocksError::config(
                    "class_weight",
                    format!("has {} entries for {c} classes", pw.len()),
                ));
            }
            Some(pw) => {
                // pos_weight: -(pw t ln σ(x) + (1 - t) ln σ(-x))
                let pw = Tensor::<B, 1>::from_floats(pw.as_slice(), &device)
                    .reshape([1, c])
                    .expand([n, c]);
                let pos = burn::tensor::activation::log_sigmoid(logits.clone());
                let neg = burn::tensor::activation::log_sigmoid(logits.neg());
                (pw * targets.clone() * pos + targets.neg().add_scalar(1.0) * neg).neg()
            }
        };
        Ok(weight_reduce_loss(loss, weight, self.cfg.reduction, avg_factor)? * self.cfg.loss_weight)
    }
}

/// Mask loss of Mask R-CNN (mmdetection `mask_cross_entropy`): the mean binary cross-entropy between each RoI's
/// mask logits *of its class* and its target mask.
///
/// # Shapes
/// - logits: `[N, C, H, W]` (or `[N, 1, H, W]` for class-agnostic masks, then labels are ignored)
/// - targets: `[N, H, W]` in `{0, 1}`; labels: `[N]`
/// - output: `[1]` (0 for `N = 0`)
///
/// # Errors
/// [`BlocksError::Shape`] for mismatched shapes.
pub fn mask_cross_entropy<B: Backend>(
    logits: Tensor<B, 4>,
    targets: Tensor<B, 3>,
    labels: Tensor<B, 1, Int>,
) -> Result<Tensor<B, 1>, BlocksError> {
    let [n, c, h, w] = logits.dims();
    if targets.dims() != [n, h, w] {
        return Err(BlocksError::shape(
            "targets",
            &targets.dims(),
            &format!("[{n}, {h}, {w}]"),
        ));
    }
    if labels.dims()[0] != n {
        return Err(BlocksError::shape("labels", &labels.dims(), &format!("[{n}]")));
    }
    if n == 0 {
        return Ok(logits.sum() * 0.0);
    }
    let picked = if c == 1 {
        logits.reshape([n, h * w])
    } else {
        let idx = labels.reshape([n, 1, 1]).expand([n, 1, h * w]);
        logits.reshape([n, c, h * w]).gather(1, idx).reshape([n, h * w])
    };
    Ok(bce_with_logits(picked, targets.reshape([n, h * w])).mean())
}
