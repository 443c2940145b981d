//! Sampling of assigned boxes for two-stage heads: mmdetection's `RandomSampler` (a fixed budget of boxes with
//! at most `pos_fraction` positives, optional `neg_pos_ub` cap on negatives per positive, GT boxes added as
//! proposals).

use burn::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::assigners::AssignResult;
use crate::structures::BlocksError;
use crate::structures::error::check_boxes;

fn default_neg_pos_ub() -> f32 {
    -1.0
}
fn default_true() -> bool {
    true
}

/// Configuration of the [`RandomSampler`] (mmdetection field names).
///
/// Faster R-CNN RPN: `{"num": 256, "pos_fraction": 0.5, "add_gt_as_proposals": false}`;
/// R-CNN head: `{"num": 512, "pos_fraction": 0.25}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSamplerConfig {
    /// Boxes sampled per image (positives + negatives).
    pub num: usize,
    /// Largest share of positives.
    pub pos_fraction: f32,
    /// At most `neg_pos_ub * max(1, positives)` negatives; negative disables the cap.
    #[serde(default = "default_neg_pos_ub")]
    pub neg_pos_ub: f32,
    /// Prepend the GT boxes to the candidates (as positives of themselves).
    #[serde(default = "default_true")]
    pub add_gt_as_proposals: bool,
}

impl RandomSamplerConfig {
    /// Builds the sampler.
    ///
    /// # Errors
    /// [`BlocksError::Config`] when `pos_fraction` is outside `[0, 1]`.
    pub fn init(&self) -> Result<RandomSampler, BlocksError> {
        if !(0.0..=1.0).contains(&self.pos_fraction) {
            return Err(BlocksError::config("pos_fraction", "must be in [0, 1]"));
        }
        Ok(RandomSampler { cfg: self.clone() })
    }
}

/// The sampled boxes of one image.
///
/// # Shapes
/// - priors: `[N', 4]`, the candidates (GT boxes first when added)
/// - pos_inds: `[P]`, neg_inds: `[Q]`: ascending indices into `priors`
/// - pos_gt_inds: `[P]` 0-based GT index of each positive; pos_gt_labels: `[P]`; pos_is_gt: `[P]`
#[derive(Debug, Clone)]
pub struct SamplingResult<B: Backend> {
    /// Candidate boxes the indices refer to.
    pub priors: Tensor<B, 2>,
    /// Sampled positives.
    pub pos_inds: Tensor<B, 1, Int>,
    /// Sampled negatives.
    pub neg_inds: Tensor<B, 1, Int>,
    /// Assigned GT of each positive.
    pub pos_gt_inds: Tensor<B, 1, Int>,
    /// Label of each positive.
    pub pos_gt_labels: Tensor<B, 1, Int>,
    /// Whether each positive is a GT box added as a proposal.
    pub pos_is_gt: Tensor<B, 1, Bool>,
    /// Number of GT boxes of the image.
    pub num_gts: usize,
}

impl<B: Backend> SamplingResult<B> {
    /// Positive boxes, `[P, 4]`.
    pub fn pos_priors(&self) -> Tensor<B, 2> {
        self.priors.clone().select(0, self.pos_inds.clone())
    }

    /// Negative boxes, `[Q, 4]`.
    pub fn neg_priors(&self) -> Tensor<B, 2> {
        self.priors.clone().select(0, self.neg_inds.clone())
    }
}

/// Random sampling of positives and negatives from an assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomSampler {
    cfg: RandomSamplerConfig,
}

/// `k` of `gallery` chosen uniformly without replacement (all of them when `k >= len`), sorted ascending
/// (mmdetection applies `unique()`, which sorts).
fn choose(mut gallery: Vec<i64>, k: usize, rng: &mut impl Rng) -> Vec<i64> {
    if gallery.len() > k {
        let picked = rand::seq::index::sample(rng, gallery.len(), k);
        gallery = picked.into_iter().map(|i| gallery[i]).collect();
    }
    gallery.sort_unstable();
    gallery
}

impl RandomSampler {
    /// The configuration.
    pub fn config(&self) -> &RandomSamplerConfig {
        &self.cfg
    }

    /// Samples one image. One host read of the assignment (`[N]` ints) decides the indices.
    ///
    /// # Shapes
    /// - assign: for the `N` priors; priors: `[N, 4]`; gt_boxes: `[M, 4]`; gt_labels: `[M]`
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the inputs disagree in length.
    pub fn sample<B: Backend>(
        &self,
        assign: &AssignResult<B>,
        priors: Tensor<B, 2>,
        gt_boxes: Tensor<B, 2>,
        gt_labels: Tensor<B, 1, Int>,
        rng: &mut impl Rng,
    ) -> Result<SamplingResult<B>, BlocksError> {
        check_boxes("priors", priors.dims())?;
        check_boxes("gt_boxes", gt_boxes.dims())?;
        let n = priors.dims()[0];
        let m = gt_boxes.dims()[0];
        if assign.gt_inds.dims()[0] != n {
            return Err(BlocksError::shape(
                "assign.gt_inds",
                &assign.gt_inds.dims(),
                &format!("[{n}] (one per prior)"),
            ));
        }
        if gt_labels.dims()[0] != m || assign.num_gts != m {
            return Err(BlocksError::shape(
                "gt_labels",
                &gt_labels.dims(),
                &format!("[{m}] (one per GT box)"),
            ));
        }
        let device = priors.device();
        let add_gt = self.cfg.add_gt_as_proposals && m > 0;
        let mut gt_inds: Vec<i64> = assign.gt_inds.clone().into_data().iter::<i64>().collect();
        let (priors, num_added) = if add_gt {
            gt_inds.splice(0..0, 1..=m as i64);
            (Tensor::cat(vec![gt_boxes, priors], 0), m)
        } else {
            (priors, 0)
        };
        let positives: Vec<i64> = (0..gt_inds.len() as i64)
            .filter(|&i| gt_inds[i as usize] > 0)
            .collect();
        let negatives: Vec<i64> = (0..gt_inds.len() as i64)
            .filter(|&i| gt_inds[i as usize] == 0)
            .collect();
        let num_expected_pos = (self.cfg.num as f32 * self.cfg.pos_fraction) as usize;
        let pos = choose(positives, num_expected_pos, rng);
        let mut num_expected_neg = self.cfg.num.saturating_sub(pos.len());
        if self.cfg.neg_pos_ub >= 0.0 {
            let upper = (self.cfg.neg_pos_ub * pos.len().max(1) as f32) as usize;
            num_expected_neg = num_expected_neg.min(upper);
        }
        let neg = choose(negatives, num_expected_neg, rng);
        let pos_gt: Vec<i64> = pos.iter().map(|&i| gt_inds[i as usize] - 1).collect();
        let is_gt: Vec<bool> = pos.iter().map(|&i| (i as usize) < num_added).collect();
        let ints = |v: Vec<i64>| {
            let len = v.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(v, [len]).convert::<B::IntElem>(), &device)
        };
        let p = pos.len();
        let pos_gt_inds = ints(pos_gt);
        let pos_gt_labels = if p == 0 {
            Tensor::zeros([0], &device)
        } else {
            gt_labels.select(0, pos_gt_inds.clone())
        };
        Ok(SamplingResult {
            priors,
            pos_inds: ints(pos),
            neg_inds: ints(neg),
            pos_gt_inds,
            pos_gt_labels,
            pos_is_gt: Tensor::from_data(TensorData::new(is_gt, [p]), &device),
            num_gts: m,
        })
    }
}
