use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::reduce::{Reduction, default_loss_weight, weight_reduce_loss};
use crate::structures::BlocksError;

fn default_beta() -> f32 {
    1.0
}

/// Configuration of the [`L1Loss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L1LossConfig {
    /// Reduction.
    #[serde(default)]
    pub reduction: Reduction,
    /// Final scale.
    #[serde(default = "default_loss_weight")]
    pub loss_weight: f32,
}

impl Default for L1LossConfig {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            loss_weight: 1.0,
        }
    }
}

impl L1LossConfig {
    /// Builds the loss.
    pub fn init(&self) -> L1Loss {
        L1Loss { cfg: self.clone() }
    }
}

/// `|pred - target|` (mmdetection `L1Loss`, RetinaNet's box loss).
#[derive(Debug, Clone, PartialEq)]
pub struct L1Loss {
    cfg: L1LossConfig,
}

/// Configuration of the [`SmoothL1Loss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmoothL1LossConfig {
    /// Where the quadratic part ends (must be > 0).
    #[serde(default = "default_beta")]
    pub beta: f32,
    /// Reduction.
    #[serde(default)]
    pub reduction: Reduction,
    /// Final scale.
    #[serde(default = "default_loss_weight")]
    pub loss_weight: f32,
}

impl Default for SmoothL1LossConfig {
    fn default() -> Self {
        Self {
            beta: 1.0,
            reduction: Reduction::Mean,
            loss_weight: 1.0,
        }
    }
}

impl SmoothL1LossConfig {
    /// Builds the loss.
    ///
    /// # Errors
    /// [`BlocksError::Config`] unless `beta > 0`.
    pub fn init(&self) -> Result<SmoothL1Loss, BlocksError> {
        if self.beta.is_nan() || self.beta <= 0.0 {
            return Err(BlocksError::config("beta", "must be > 0"));
        }
        Ok(SmoothL1Loss { cfg: self.clone() })
    }
}

/// `0.5 d² / β` for `d = |pred - target| < β`, else `d - 0.5 β` (mmdetection `SmoothL1Loss`).
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothL1Loss {
    cfg: SmoothL1LossConfig,
}

fn check_same<B: Backend>(pred: &Tensor<B, 2>, target: &Tensor<B, 2>) -> Result<(), BlocksError> {
    if pred.dims() != target.dims() {
        return Err(BlocksError::shape(
            "target",
            &target.dims(),
            &format!("{:?} (as pred)", pred.dims()),
        ));
    }
    Ok(())
}

/// An empty target gives `0 * sum(pred)`: zero, and still connected to the graph (mmdetection).
fn empty_loss<B: Backend>(pred: Tensor<B, 2>) -> Tensor<B, 1> {
    pred.sum() * 0.0
}

impl L1Loss {
    /// The loss.
    ///
    /// # Shapes
    /// - pred, target: `[N, 4]` (any `[N, K]`); weight: `[N, K]` or `[N, 1]`; avg_factor: `[1]`; output: `[1]`
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
        check_same(&pred, &target)?;
        if target.dims()[0] == 0 {
            return Ok(empty_loss(pred));
        }
        let loss = (pred - target).abs();
        Ok(weight_reduce_loss(loss, weight, self.cfg.reduction, avg_factor)? * self.cfg.loss_weight)
    }
}

impl SmoothL1Loss {
    /// Element-wise loss.
    pub fn elementwise<B: Backend, const D: usize>(
        &self,
        pred: Tensor<B, D>,
        target: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let beta = self.cfg.beta;
        let d = (pred - target).abs();
        let quadratic = d.clone().powi_scalar(2) * (0.5 / beta);
        let linear = d.clone().sub_scalar(0.5 * beta);
        linear.mask_where(d.lower_elem(beta), quadratic)
    }

    /// The loss.
    ///
    /// # Shapes
    /// - pred, target: `[N, K]`; weight: `[N, K]` or `[N, 1]`; avg_factor: `[1]`; output: `[1]`
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
        check_same(&pred, &target)?;
        if target.dims()[0] == 0 {
            return Ok(empty_loss(pred));
        }
        let loss = self.elementwise(pred, target);
        Ok(weight_reduce_loss(loss, weight, self.cfg.reduction, avg_factor)? * self.cfg.loss_weight)
    }
}
