use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::reduce::{Reduction, default_loss_weight, weight_reduce_loss};
use crate::ops::aligned_giou;
use crate::structures::BlocksError;

/// Configuration of the [`GiouLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiouLossConfig {
    /// Reduction.
    #[serde(default)]
    pub reduction: Reduction,
    /// Final scale.
    #[serde(default = "default_loss_weight")]
    pub loss_weight: f32,
}

impl Default for GiouLossConfig {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            loss_weight: 1.0,
        }
    }
}

impl GiouLossConfig {
    /// Builds the loss.
    pub fn init(&self) -> GiouLoss {
        GiouLoss { cfg: self.clone() }
    }
}

/// `1 - GIoU(pred, target)` on decoded boxes (mmdetection `GIoULoss`, eps `1e-6`).
#[derive(Debug, Clone, PartialEq)]
pub struct GiouLoss {
    cfg: GiouLossConfig,
}

impl GiouLoss {
    /// The loss.
    ///
    /// # Shapes
    /// - pred, target: `[N, 4]` xyxy; weight: `[N]` (or `[N, 4]`, averaged over the last axis as mmdetection does);
    ///   avg_factor: `[1]`; output: `[1]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] for mismatched shapes; [`BlocksError::Config`] for `avg_factor` with sum.
    pub fn forward<B: Backend>(
        &self,
        pred: Tensor<B, 2>,
        target: Tensor<B, 2>,
        weight: Option<Tensor<B, 2>>,
        avg_factor: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 1>, BlocksError> {
        let n = pred.dims()[0];
        if n == 0 {
            return Ok(pred.sum() * 0.0);
        }
        let loss = aligned_giou(pred, target)?.neg().add_scalar(1.0);
        let weight = match weight {
            Some(w) if w.dims()[0] != n => {
                return Err(BlocksError::shape(
                    "weight",
                    &w.dims(),
                    &format!("[{n}, 1] or [{n}, 4]"),
                ));
            }
            Some(w) => Some(w.mean_dim(1).reshape([n])),
            None => None,
        };
        Ok(weight_reduce_loss(loss, weight, self.cfg.reduction, avg_factor)? * self.cfg.loss_weight)
    }
}
