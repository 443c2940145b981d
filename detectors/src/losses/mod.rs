//! Losses with mmdetection's conventions.
//!
//! Every loss computes an element-wise loss, multiplies it by the optional element weights, then reduces:
//! `Sum` sums; `Mean` divides the sum by `avg_factor + f32::EPSILON` when an average factor is given (e.g. the
//! number of positive anchors), else by the number of elements. `avg_factor` with `Sum` is an error, as in
//! mmdetection's `weight_reduce_loss`. Finally the result is scaled by `loss_weight`.
//!
//! One deviation on purpose: the mean of an empty loss is 0 (torch gives NaN), so that an image batch without
//! any positive gives a zero box loss that still back-propagates.

mod cross_entropy;
mod focal;
mod giou;
mod reduce;
mod regression;

pub use cross_entropy::{
    BinaryCrossEntropyLoss, BinaryCrossEntropyLossConfig, CrossEntropyLoss, CrossEntropyLossConfig,
    mask_cross_entropy,
};
pub use focal::{FocalLoss, FocalLossConfig};
pub use giou::{GiouLoss, GiouLossConfig};
pub use reduce::{Reduction, weight_reduce_loss};
pub use regression::{L1Loss, L1LossConfig, SmoothL1Loss, SmoothL1LossConfig};
