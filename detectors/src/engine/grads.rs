//! Gradient post-processing before the optimizer step: coupled weight decay restricted to conv/linear
//! weights, and global-norm clipping (`torch.nn.utils.clip_grad_norm_`; burn's built-in clipping is per tensor).

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
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

/// Store every gradient in a dense row-major layout. Backward passes may hand back permuted views (the
/// CPU backend's convolution weight gradients are); every elementwise op the optimizer and the clipping then
/// run on such a view walks strided indices, an order of magnitude slower than on a dense buffer. Flattening
/// copies a view once (and is free for a dense tensor), so each step pays one copy instead of many slow passes.
pub fn make_contiguous<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams) {
    fn dense<B: Backend, const D: usize>(g: &mut GradientsParams, id: ParamId) {
        if let Some(t) = g.remove::<B, D>(id) {
            let dims = t.dims();
            let n = t.shape().num_elements();
            g.register::<B, D>(id, t.reshape([n]).reshape(dims));
        }
    }
    let mut ranks = ParamRanks(Vec::new());
    model.visit(&mut ranks);
    for &(id, rank) in &ranks.0 {
        match rank {
            1 => dense::<B::InnerBackend, 1>(grads, id),
            2 => dense::<B::InnerBackend, 2>(grads, id),
            3 => dense::<B::InnerBackend, 3>(grads, id),
            4 => dense::<B::InnerBackend, 4>(grads, id),
            _ => {}
        }
    }
}

struct ParamRanks(Vec<(ParamId, usize)>);

impl<B: Backend> ModuleVisitor<B> for ParamRanks {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        self.0.push((p.id, D));
    }
}

fn sq_norm<B: Backend, const D: usize>(g: &GradientsParams, id: ParamId) -> Option<Tensor<B, 1>> {
    // `t * t`, not `square()`: on the CPU backend `square` goes through a broadcasting power kernel that
    // walks strided indices
    g.get::<B, D>(id).map(|t| (t.clone() * t).sum())
}

fn scale<B: Backend, const D: usize>(g: &mut GradientsParams, id: ParamId, s: f64) {
    if let Some(t) = g.remove::<B, D>(id) {
        g.register::<B, D>(id, t.mul_scalar(s));
    }
}

/// Global L2 norm of all gradients (a 1-element tensor on the device, `None` when there are none).
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut ranks = ParamRanks(Vec::new());
    model.visit(&mut ranks);
    let mut total: Option<Tensor<B::InnerBackend, 1>> = None;
    for &(id, rank) in &ranks.0 {
        let sq = match rank {
            1 => sq_norm::<B::InnerBackend, 1>(grads, id),
            2 => sq_norm::<B::InnerBackend, 2>(grads, id),
            3 => sq_norm::<B::InnerBackend, 3>(grads, id),
            4 => sq_norm::<B::InnerBackend, 4>(grads, id),
            _ => None,
        };
        if let Some(sq) = sq {
            total = Some(match total {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
    total.map(|t| t.sqrt())
}

/// Scale all gradients so that their global L2 norm is at most `max_norm` (torch's `clip_grad_norm_`:
/// factor `max_norm / (norm + 1e-6)`, capped at 1). Returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f32 {
    let Some(norm) = global_grad_norm::<B, M>(model, grads) else {
        return 0.0;
    };
    // the norm is read back once (it is logged anyway); gradients are only touched when they are clipped
    let norm = norm.into_scalar().elem::<f32>();
    let coef = max_norm / (norm as f64 + 1e-6);
    if coef < 1.0 {
        let mut ranks = ParamRanks(Vec::new());
        model.visit(&mut ranks);
        for &(id, rank) in &ranks.0 {
            match rank {
                1 => scale::<B::InnerBackend, 1>(grads, id, coef),
                2 => scale::<B::InnerBackend, 2>(grads, id, coef),
                3 => scale::<B::InnerBackend, 3>(grads, id, coef),
                4 => scale::<B::InnerBackend, 4>(grads, id, coef),
                _ => {}
            }
        }
    }
    norm
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
    fn no_gradients_give_zero_norm() {
        let lin = linear().no_grad();
        let mut g = GradientsParams::new();
        assert_eq!(clip_grad_norm::<A, _>(&lin, &mut g, 1.0), 0.0);
    }
}
