//! BatchNorm with mmdetection's `norm_eval`.
//!
//! burn's `BatchNorm` has no train/eval flag: it uses batch statistics (and updates the running ones) whenever
//! the backend is an autodiff backend. Detection fine-tuning freezes the statistics while the rest trains
//! (`norm_eval=True` in mmdetection), so layers keep a stock `BatchNorm` (same record and PyTorch key layout)
//! and call [`batch_norm`] with the mode chosen by their backbone.

use burn::nn::BatchNorm;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// How BatchNorm layers normalise during a forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormMode {
    /// burn's rule: batch statistics under an autodiff backend (training), running statistics otherwise.
    #[default]
    Auto,
    /// Always the running statistics, never updated (mmdetection's `norm_eval=True`).
    Frozen,
}

/// Apply `bn` to `x` in the given mode.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, output the same
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, mode: NormMode) -> Tensor<B, 4> {
    match mode {
        NormMode::Auto => bn.forward(x),
        NormMode::Frozen => batch_norm_frozen(bn, x),
    }
}

/// BatchNorm with its running statistics, folded into one per-channel affine `x * scale + shift`.
/// Gradients reach `gamma`/`beta` (unless they are frozen); the running statistics are left untouched.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, output the same
pub fn batch_norm_frozen<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let c = x.dims()[1];
    let mean = bn.running_mean.value_sync().reshape([1, c, 1, 1]);
    let var = bn.running_var.value_sync().reshape([1, c, 1, 1]);
    let gamma = bn.gamma.val().reshape([1, c, 1, 1]);
    let beta = bn.beta.val().reshape([1, c, 1, 1]);
    let scale = gamma / (var + bn.epsilon).sqrt();
    let shift = beta - mean * scale.clone();
    x * scale + shift
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::nn::BatchNormConfig;

    type B = Flex;
    type A = Autodiff<Flex>;

    #[test]
    fn frozen_equals_inference_mode_and_keeps_stats() {
        let device = Default::default();
        let bn: BatchNorm<A> = BatchNormConfig::new(3).init(&device);
        // One training step moves the running stats away from (0, 1) so the check is not trivial.
        let x = Tensor::<A, 4>::from_floats(
            [[
                [[1.0, 2.0], [3.0, 4.0]],
                [[-1.0, 0.5], [2.0, 8.0]],
                [[0.0, 0.0], [1.0, -3.0]],
            ]],
            &device,
        );
        let _ = bn.forward(x.clone());
        let mean_before = bn.running_mean.value_sync().into_data();
        let frozen = batch_norm(&bn, x.clone(), NormMode::Frozen);
        // Inference backend: burn's BatchNorm uses running stats.
        let inference = bn.valid().forward(x.inner());
        frozen
            .inner()
            .into_data()
            .assert_approx_eq::<f32>(&inference.into_data(), Default::default());
        assert_eq!(bn.running_mean.value_sync().into_data(), mean_before);
        // Channel 0 by hand: batch mean 2.5 -> running mean 0.9*0 + 0.1*2.5 = 0.25.
        let m: Vec<f32> = mean_before.to_vec().unwrap();
        assert!((m[0] - 0.25).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn empty_batch_is_empty() {
        let device = Default::default();
        let bn: BatchNorm<B> = BatchNormConfig::new(2).init(&device);
        let y = batch_norm(
            &bn,
            Tensor::<B, 4>::zeros([0, 2, 4, 4], &device),
            NormMode::Frozen,
        );
        assert_eq!(y.dims(), [0, 2, 4, 4]);
    }
}
