//! Gradient post-processing before the optimizer step: coupled weight decay restricted to conv/linear
//! weights, and global-norm clipping (`torch.nn.utils.clip_grad_norm_`; burn's built-in clipping is per tensor).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Add `wd * param` to the gradient of every parameter of rank >= 2 (conv and linear weights), leaving
/// norm parameters and biases (rank 1) undecayed: mmdetection's `norm_decay_mult=0, bias_decay_mult=0`.
/// Decay enters the gradient before momentum, so this equals torch's per-group coupled decay.
pub fn add_weight_decay_to_weights<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    weight_decay: f64,
) {
    struct AddDecay<'a> {
        grads: &'a mut GradientsParams,
        wd: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for AddDecay<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if D < 2 {
                return;
            }
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id) {
                self.grads
                    .register::<B::InnerBackend, D>(p.id, g + p.val().inner() * self.wd);
            }
        }
    }
    model.visit(&mut AddDecay {
        grads,
        wd: weight_decay,
    });
}

/// A function applied to one gradient, whatever its rank.
trait GradFn<B: Backend> {
    fn apply<const D: usize>(&self, grad: Tensor<B, D>) -> Tensor<B, D>;
}

/// Replace the gradient of every parameter of `model` (of any rank) by `f(gradient)`.
fn map_grads<B, M, F>(model: &M, grads: &mut GradientsParams, f: F)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    F: GradFn<B::InnerBackend>,
{
    struct MapGrads<'a, F> {
        grads: &'a mut GradientsParams,
        f: F,
    }
    impl<B: AutodiffBackend, F: GradFn<B::InnerBackend>> ModuleVisitor<B> for MapGrads<'_, F> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id) {
                self.grads.register::<B::InnerBackend, D>(p.id, self.f.apply(g));
            }
        }
    }
    model.visit(&mut MapGrads { grads, f });
}

/// Store every gradient in a dense row-major layout. Backward passes may hand back permuted views (the
/// CPU backend's convolution weight gradients are); every elementwise op the optimizer and the clipping then
/// run on such a view walks strided indices, an order of magnitude slower than on a dense buffer. Flattening
/// copies a view once (and is free for a dense tensor), so each step pays one copy instead of many slow passes.
pub fn make_contiguous<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams) {
    struct Dense;
    impl<B: Backend> GradFn<B> for Dense {
        fn apply<const D: usize>(&self, grad: Tensor<B, D>) -> Tensor<B, D> {
            let dims = grad.dims();
            let n = grad.shape().num_elements();
            grad.reshape([n]).reshape(dims)
        }
    }
    map_grads::<B, M, _>(model, grads, Dense);
}

/// Global L2 norm of all gradients (a 1-element tensor on the device, `None` when there are none).
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    struct SumOfSquares<'a, B: Backend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SumOfSquares<'_, B::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            // `t * t`, not `square()`: on the CPU backend `square` goes through a broadcasting power kernel
            // that walks strided indices
            if let Some(t) = self.grads.get::<B::InnerBackend, D>(p.id) {
                let sq = (t.clone() * t).sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + sq,
                    None => sq,
                });
            }
        }
    }
    let mut sum = SumOfSquares { grads, total: None };
    model.visit(&mut sum);
    sum.total.map(|t| t.sqrt())
}

/// Scale all gradients so that their global L2 norm is at most `max_norm` (torch's `clip_grad_norm_`:
/// factor `max_norm / (norm + 1e-6)`, capped at 1). Returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f32 {
    struct Scale(f64);
    impl<B: Backend> GradFn<B> for Scale {
        fn apply<const D: usize>(&self, grad: Tensor<B, D>) -> Tensor<B, D> {
            grad.mul_scalar(self.0)
        }
    }
    let Some(norm) = global_grad_norm::<B, M>(model, grads) else {
        return 0.0;
    };
    // the norm is read back once (it is logged anyway); gradients are only touched when they are clipped
    let norm = norm.into_scalar().elem::<f32>();
    let coef = max_norm / (norm as f64 + 1e-6);
    if coef < 1.0 {
        map_grads::<B, M, _>(model, grads, Scale(coef));
    }
    norm
}

/// The global L2 norm of all gradients, computed every step: clipped to `max_norm` when clipping is
/// configured (the norm before clipping is returned), measured only otherwise. 0 when there are no gradients.
/// A non-finite result means the step would corrupt the weights: the trainer stops on it.
pub fn grad_norm_step<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f64 {
    match max_norm {
        Some(max_norm) => f64::from(clip_grad_norm::<B, M>(model, grads, max_norm)),
        None => global_grad_norm::<B, M>(model, grads).map_or(0.0, |n| n.into_scalar().elem::<f64>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type A = Autodiff<Flex>;

    fn linear() -> Linear<A> {
        let d = Default::default();
        let mut lin: Linear<A> = LinearConfig::new(2, 1).init(&d);
        lin.weight = lin
            .weight
            .map(|_| Tensor::from_floats([[1.0], [2.0]], &d).require_grad());
        lin.bias = lin
            .bias
            .map(|b| b.map(|_| Tensor::from_floats([0.5], &d).require_grad()));
        lin
    }

    fn grads_of(lin: &Linear<A>) -> GradientsParams {
        // loss = sum(x W + b) with x = [[3, 4]]: dW = [3, 4]^T, db = [1]; global norm = sqrt(9 + 16 + 1) = sqrt(26)
        let x = Tensor::<A, 2>::from_floats([[3.0, 4.0]], &Default::default());
        GradientsParams::from_grads(lin.forward(x).sum().backward(), lin)
    }

    #[test]
    fn clipping_uses_the_global_norm() {
        let lin = linear();
        let mut g = grads_of(&lin);
        let pre = clip_grad_norm::<A, _>(&lin, &mut g, 1.0);
        assert!((pre - 26f32.sqrt()).abs() < 1e-5);
        let post = global_grad_norm::<A, _>(&lin, &g).unwrap().into_scalar();
        assert!((post - 1.0).abs() < 1e-5, "{post}");
        // direction kept: dW = [3, 4] / sqrt(26)
        let w: Vec<f32> = g
            .get::<Flex, 2>(lin.weight.id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert!((w[0] - 3.0 / 26f32.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn small_gradients_are_not_scaled() {
        let lin = linear();
        let mut g = grads_of(&lin);
        clip_grad_norm::<A, _>(&lin, &mut g, 100.0);
        let w: Vec<f32> = g
            .get::<Flex, 2>(lin.weight.id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert!((w[0] - 3.0).abs() < 1e-4 && (w[1] - 4.0).abs() < 1e-4, "{w:?}");
    }

    #[test]
    fn decay_skips_biases() {
        let lin = linear();
        let mut g = grads_of(&lin);
        add_weight_decay_to_weights::<A, _>(&lin, &mut g, 0.1);
        // dW + 0.1 W = [3 + 0.1, 4 + 0.2]; db unchanged = 1
        let w: Vec<f32> = g
            .get::<Flex, 2>(lin.weight.id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        let b: Vec<f32> = g
            .get::<Flex, 1>(lin.bias.as_ref().unwrap().id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert!((w[0] - 3.1).abs() < 1e-5 && (w[1] - 4.2).abs() < 1e-5 && (b[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn dense_gradients_keep_their_values_and_shapes() {
        let lin = linear();
        let mut g = grads_of(&lin);
        // dW as a transposed view of [[3, 4]], the kind of layout a backward pass may hand back
        g.remove::<Flex, 2>(lin.weight.id);
        let view = Tensor::<Flex, 2>::from_floats([[3.0, 4.0]], &Default::default()).transpose();
        g.register::<Flex, 2>(lin.weight.id, view);
        make_contiguous::<A, _>(&lin, &mut g);
        // dW = [3, 4]^T, db = [1], as computed in grads_of
        let w = g.get::<Flex, 2>(lin.weight.id).unwrap();
        assert_eq!(w.dims(), [2, 1]);
        assert_eq!(w.into_data().to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
        let b = g.get::<Flex, 1>(lin.bias.as_ref().unwrap().id).unwrap();
        assert_eq!(b.into_data().to_vec::<f32>().unwrap(), vec![1.0]);
        // no gradients at all: nothing to do
        let mut none = GradientsParams::new();
        make_contiguous::<A, _>(&lin, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn the_norm_is_measured_without_clipping_and_nan_shows() {
        let lin = linear();
        let mut g = grads_of(&lin);
        let n = grad_norm_step::<A, _>(&lin, &mut g, None);
        assert!((n - 26f64.sqrt()).abs() < 1e-5, "{n}");
        let n = grad_norm_step::<A, _>(&lin, &mut g, Some(1.0));
        assert!((n - 26f64.sqrt()).abs() < 1e-5, "{n}");
        // one NaN gradient entry makes the global norm NaN, with or without clipping
        g.remove::<Flex, 1>(lin.bias.as_ref().unwrap().id);
        let nan = Tensor::<Flex, 1>::from_floats([f32::NAN], &Default::default());
        g.register::<Flex, 1>(lin.bias.as_ref().unwrap().id, nan);
        assert!(grad_norm_step::<A, _>(&lin, &mut g, None).is_nan());
        assert!(grad_norm_step::<A, _>(&lin, &mut g, Some(1.0)).is_nan());
    }

    #[test]
    fn no_gradients_give_zero_norm() {
        let lin = linear().no_grad();
        let mut g = GradientsParams::new();
        assert_eq!(clip_grad_norm::<A, _>(&lin, &mut g, 1.0), 0.0);
    }
}
