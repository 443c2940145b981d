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
        NormMode::Auto if B::ad_enabled(&x.device()) => batch_norm_train(bn, x),
        NormMode::Auto | NormMode::Frozen => batch_norm_frozen(bn, x),
    }
}

/// BatchNorm with batch statistics (training): normalises with the biased batch variance and moves the
/// running statistics by `momentum`, the running variance taking the unbiased estimate as PyTorch does.
///
/// Same result as burn's `BatchNorm::forward` in training, computed so that every elementwise op runs on
/// dense buffers: burn's version subtracts a `[1, C, 1, 1]` view broadcast over the batch and squares
/// through a broadcasting power kernel, both of which the CPU backend walks index by index.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, output the same
pub fn batch_norm_train<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let count = n * h * w;
    if count == 0 {
        return x;
    }
    let per_channel_mean = |t: Tensor<B, 4>| {
        t.reshape([n, c, h * w])
            .sum_dim(2)
            .sum_dim(0)
            .div_scalar(count as f64)
            .reshape([1, c, 1, 1])
    };
    let mean = per_channel_mean(x.clone());
    let centred = x - per_sample(mean.clone(), n);
    let var = per_channel_mean(centred.clone() * centred.clone());

    let momentum = bn.momentum;
    let unbiased = count as f64 / (count.max(2) - 1) as f64;
    let device = centred.device();
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    bn.running_mean
        .update(running_mean.mul_scalar(1.0 - momentum) + mean.detach().reshape([c]).mul_scalar(momentum));
    bn.running_var.update(
        running_var.mul_scalar(1.0 - momentum)
            + var.clone().detach().reshape([c]).mul_scalar(momentum * unbiased),
    );

    let scale = bn.gamma.val().reshape([1, c, 1, 1]) / (var + bn.epsilon).sqrt();
    let shift = bn.beta.val().reshape([1, c, 1, 1]);
    centred * per_sample(scale, n) + per_sample(shift, n)
}

/// BatchNorm with its running statistics, folded into one per-channel affine `x * scale + shift`.
/// Gradients reach `gamma`/`beta` (unless they are frozen); the running statistics are left untouched.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, output the same
pub fn batch_norm_frozen<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, _, _] = x.dims();
    let (scale, shift) = frozen_affine(bn);
    x * per_sample(scale.reshape([1, c, 1, 1]), n) + per_sample(shift.reshape([1, c, 1, 1]), n)
}

/// The per-channel affine of BatchNorm with its running statistics, `y = x * scale + shift`:
/// `scale = gamma / sqrt(var + eps)`, `shift = beta - mean * scale`. Shared by [`batch_norm_frozen`] and
/// the fused CPU convolution, which applies it inside its kernel.
///
/// # Shapes
/// - returns `([C], [C])`
pub fn frozen_affine<B: Backend>(bn: &BatchNorm<B>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    // Clones of a module share one running-statistics cell, and forking a clone to another device moves the
    // tensor in that cell (evaluation forks the model to every local device): read it on gamma's device.
    let device = bn.gamma.val().device();
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let scale = bn.gamma.val() / (running_var + bn.epsilon).sqrt();
    let shift = bn.beta.val() - running_mean * scale.clone();
    (scale, shift)
}

/// A per-channel `[1, C, 1, 1]` tensor repeated into a dense `[N, C, 1, 1]` one: broadcast against
/// `[N, C, H, W]` it is then one scalar per (sample, channel) row, a pattern the CPU backend vectorises
/// (a batch-broadcast `[1, C, 1, 1]` view is not). Tiny, and harmless on other backends.
fn per_sample<B: Backend>(t: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    if n == 1 { t } else { t.repeat_dim(0, n) }
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

    /// Same output, same gradients and same running mean as burn's own training BatchNorm; the running
    /// variance is the unbiased one (PyTorch's), burn's being the biased one.
    #[test]
    fn training_mode_equals_burns_batch_norm_and_pytorch_running_var() {
        let device = Default::default();
        let mut bn: BatchNorm<A> = BatchNormConfig::new(3).init(&device);
        bn.gamma = bn
            .gamma
            .map(|_| Tensor::from_floats([0.5, 1.0, 2.0], &device).require_grad());
        bn.beta = bn
            .beta
            .map(|_| Tensor::from_floats([0.0, -1.0, 3.0], &device).require_grad());
        let values: Vec<f32> = (0..2 * 3 * 2 * 3).map(|i| ((i * 7) % 11) as f32 - 4.0).collect();
        let x = || {
            Tensor::<A, 4>::from_data(TensorData::new(values.clone(), [2, 3, 2, 3]), &device).require_grad()
        };
        let weights = Tensor::<A, 4>::from_data(
            TensorData::new((0..36).map(|i| (i % 5) as f32).collect::<Vec<_>>(), [2, 3, 2, 3]),
            &device,
        );
        let (x_ours, x_burn) = (x(), x());
        let ours = batch_norm(&bn, x_ours.clone(), NormMode::Auto);
        let ours_mean = bn.running_mean.value_sync().into_data();
        let ours_var: Vec<f32> = bn.running_var.value_sync().into_data().to_vec().unwrap();
        let reference: BatchNorm<A> = BatchNormConfig::new(3).init(&device);
        let reference = BatchNorm {
            gamma: bn.gamma.clone(),
            beta: bn.beta.clone(),
            ..reference
        };
        let theirs = reference.forward(x_burn.clone());
        ours.clone()
            .into_data()
            .assert_approx_eq::<f32>(&theirs.clone().into_data(), Default::default());
        ours_mean.assert_approx_eq::<f32>(
            &reference.running_mean.value_sync().into_data(),
            Default::default(),
        );
        let g_ours = (ours * weights.clone()).sum().backward();
        let g_theirs = (theirs * weights).sum().backward();
        x_ours.grad(&g_ours).unwrap().into_data().assert_approx_eq::<f32>(
            &x_burn.grad(&g_theirs).unwrap().into_data(),
            burn::tensor::Tolerance::absolute(1e-5),
        );
        // running var = 0.9 * 1 + 0.1 * biased * 12 / 11 (12 values per channel); burn keeps the biased one
        let burn_var: Vec<f32> = reference.running_var.value_sync().into_data().to_vec().unwrap();
        for (o, b) in ours_var.iter().zip(&burn_var) {
            let biased = (b - 0.9) / 0.1;
            assert!(
                (o - (0.9 + 0.1 * biased * 12.0 / 11.0)).abs() < 1e-5,
                "{o} vs {b}"
            );
        }
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
