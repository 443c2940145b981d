use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

use super::reduce::{Reduction, bce_with_logits, default_loss_weight, weight_reduce_loss};
use crate::structures::BlocksError;

fn default_gamma() -> f32 {
    2.0
}
fn default_alpha() -> f32 {
    0.25
}

/// Configuration of the sigmoid [`FocalLoss`] (mmdetection `FocalLoss` with `use_sigmoid=True`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocalLossConfig {
    /// Focusing exponent.
    #[serde(default = "default_gamma")]
    pub gamma: f32,
    /// Weight of the positive term (`1 - alpha` for negatives).
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    /// Reduction.
    #[serde(default)]
    pub reduction: Reduction,
    /// Final scale.
    #[serde(default = "default_loss_weight")]
    pub loss_weight: f32,
}

impl Default for FocalLossConfig {
    fn default() -> Self {
        Self {
            gamma: 2.0,
            alpha: 0.25,
            reduction: Reduction::Mean,
            loss_weight: 1.0,
        }
    }
}

impl FocalLossConfig {
    /// Builds the loss.
    ///
    /// # Errors
    /// [`BlocksError::Config`] for a negative gamma or an alpha outside `[0, 1]`.
    pub fn init(&self) -> Result<FocalLoss, BlocksError> {
        if self.gamma.is_nan() || self.gamma < 0.0 {
            return Err(BlocksError::config("gamma", "must be >= 0"));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(BlocksError::config("alpha", "must be in [0, 1]"));
        }
        Ok(FocalLoss { cfg: self.clone() })
    }
}

/// Sigmoid focal loss (Lin et al.), per class:
/// `FL = -α_t (1 - p_t)^γ ln p_t`, computed as `BCE(x, t) * (α t + (1 - α)(1 - t)) * pt^γ` with
/// `pt = (1 - p) t + p (1 - t)`, `p = sigmoid(x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct FocalLoss {
    cfg: FocalLossConfig,
}

impl FocalLoss {
    /// Element-wise loss against one-hot targets.
    ///
    /// # Shapes
    /// - logits, targets: `[N, C]` (targets in `{0, 1}`, or soft)
    /// - output: `[N, C]`
    pub fn elementwise<B: Backend>(&self, logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 2> {
        let p = sigmoid(logits.clone());
        let (alpha, gamma) = (self.cfg.alpha, self.cfg.gamma);
        let one_minus_t = targets.clone().neg().add_scalar(1.0);
        let pt = p.clone().neg().add_scalar(1.0) * targets.clone() + p * one_minus_t.clone();
        let alpha_t = targets.clone() * alpha + one_minus_t * (1.0 - alpha);
        bce_with_logits(logits, targets) * alpha_t * pt.powf_scalar(gamma)
    }

    /// The loss for class labels, where label `C` (or any value outside `0..C`) means background.
    ///
    /// # Shapes
    /// - logits: `[N, C]`; labels: `[N]`
    /// - weight: `[N]` per box (e.g. anchor validity) or `[N, C]`
    /// - avg_factor: `[1]` (RetinaNet: number of positive anchors)
    /// - output: `[1]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] for mismatched shapes; [`BlocksError::Config`] for `avg_factor` with sum.
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
        let device = logits.device();
        if n == 0 {
            return Ok(logits.sum() * 0.0);
        }
        let classes = Tensor::<B, 1, Int>::arange(0..c as i64, &device)
            .reshape([1, c])
            .expand([n, c]);
        let targets = labels.reshape([n, 1]).expand([n, c]).equal(classes).float();
        let weight = match weight {
            Some(w) if w.dims()[0] != n => {
                return Err(BlocksError::shape(
                    "weight",
                    &w.dims(),
                    &format!("[{n}] (one per row of logits)"),
                ));
            }
            Some(w) => Some(w.reshape([n, 1])),
            None => None,
        };
        self.forward_one_hot(logits, targets, weight, avg_factor)
    }

    /// The loss for one-hot (or soft) targets.
    ///
    /// # Shapes
    /// - logits, targets: `[N, C]`; weight: `[N, C]` or `[N, 1]`; avg_factor: `[1]`; output: `[1]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] for mismatched shapes; [`BlocksError::Config`] for `avg_factor` with sum.
    pub fn forward_one_hot<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        targets: Tensor<B, 2>,
        weight: Option<Tensor<B, 2>>,
        avg_factor: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 1>, BlocksError> {
        if targets.dims() != logits.dims() {
            return Err(BlocksError::shape(
                "targets",
                &targets.dims(),
                &format!("{:?} (as logits)", logits.dims()),
            ));
        }
        let loss = self.elementwise(logits, targets);
        Ok(weight_reduce_loss(loss, weight, self.cfg.reduction, avg_factor)? * self.cfg.loss_weight)
    }
}
