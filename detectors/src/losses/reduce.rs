use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::structures::BlocksError;

/// How an element-wise loss becomes a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// Sum divided by the element count, or by `avg_factor + eps` when one is given.
    #[default]
    Mean,
    /// Plain sum.
    Sum,
}

/// Weights (optional, broadcast to the loss's shape) and reduces an element-wise loss (mmdetection
/// `weight_reduce_loss`).
///
/// # Shapes
/// - loss: any shape; weight: same shape, or with size-1 dimensions that broadcast
/// - avg_factor: `[1]`
/// - output: `[1]`
///
/// # Errors
/// [`BlocksError::Config`] for `avg_factor` with [`Reduction::Sum`]; [`BlocksError::Shape`] when the weight does
/// not broadcast.
pub fn weight_reduce_loss<B: Backend, const D: usize>(
    loss: Tensor<B, D>,
    weight: Option<Tensor<B, D>>,
    reduction: Reduction,
    avg_factor: Option<Tensor<B, 1>>,
) -> Result<Tensor<B, 1>, BlocksError> {
    let dims = loss.dims();
    let numel: usize = dims.iter().product();
    if numel == 0 {
        // An empty loss reduces to a zero that stays connected to the graph.
        if let (Reduction::Sum, Some(_)) = (reduction, avg_factor) {
            return Err(BlocksError::config(
                "reduction",
                "avg_factor can only be used with reduction \"mean\"",
            ));
        }
        return Ok(loss.sum() * 0.0);
    }
    let loss = match weight {
        Some(w) => {
            let wd = w.dims();
            if wd.iter().zip(dims.iter()).any(|(&a, &b)| a != b && a != 1) {
                return Err(BlocksError::shape(
                    "weight",
                    &wd,
                    &format!("{dims:?} or broadcastable to it"),
                ));
            }
            loss * w.expand(dims)
        }
        None => loss,
    };
    match (reduction, avg_factor) {
        (Reduction::Sum, Some(_)) => Err(BlocksError::config(
            "reduction",
            "avg_factor can only be used with reduction \"mean\"",
        )),
        (Reduction::Sum, None) => Ok(loss.sum()),
        (Reduction::Mean, None) => Ok(loss.sum() / numel as f32),
        (Reduction::Mean, Some(avg)) => Ok(loss.sum() / avg.add_scalar(f32::EPSILON)),
    }
}

/// Numerically stable `BCE(sigmoid(x), t)` per element, `-(t ln σ(x) + (1 - t) ln σ(-x))`, built on burn's
/// `log_sigmoid` (which has an exact backward, `σ(x) - t` overall).
pub(crate) fn bce_with_logits<B: Backend, const D: usize>(x: Tensor<B, D>, t: Tensor<B, D>) -> Tensor<B, D> {
    let pos = burn::tensor::activation::log_sigmoid(x.clone());
    let neg = burn::tensor::activation::log_sigmoid(x.neg());
    (t.clone() * pos + t.neg().add_scalar(1.0) * neg).neg()
}

pub(crate) fn default_loss_weight() -> f32 {
    1.0
}
