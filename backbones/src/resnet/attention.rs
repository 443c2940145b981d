//! Attention modules placed on a residual branch (after its last BatchNorm, before the identity is added), and
//! the state that DCA threads from block to block.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};

use crate::cost::{Chw, CostCounter};
use crate::layers::gap;
use crate::norm::NormMode;

/// What a block hands to the next one: the previous block's attention, for the DCA versions (`None` in the
/// first block and in networks without DCA). Shapes depend on the attention type, see each module.
#[derive(Debug, Clone)]
pub struct Carry<B: Backend> {
    /// Channel attention of the previous block.
    pub channel: Option<Tensor<B, 4>>,
    /// Second part (SK's second branch, CBAM's spatial attention).
    pub other: Option<Tensor<B, 4>>,
}

impl<B: Backend> Carry<B> {
    /// Nothing carried (first block).
    pub fn empty() -> Self {
        Self {
            channel: None,
            other: None,
        }
    }
}

/// Squeeze-and-excitation: `x * sigmoid(fc2(relu(fc1(gap(x)))))`, reduction 16.
///
/// Reference keys: `se.fc.0` (Linear C -> C/16), `se.fc.2` (Linear C/16 -> C).
#[derive(Module, Debug)]
pub struct Se<B: Backend> {
    /// Squeeze.
    pub fc1: Linear<B>,
    /// Excite.
    pub fc2: Linear<B>,
}

impl<B: Backend> Se<B> {
    /// SE for `channels` channels.
    pub fn new(channels: usize, reduction: usize, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(channels, channels / reduction).init(device),
            fc2: LinearConfig::new(channels / reduction, channels).init(device),
        }
    }

    /// The excitation `[N, C]` of a pooled descriptor `[N, C]`.
    pub fn excite(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        sigmoid(self.fc2.forward(relu(self.fc1.forward(pooled))))
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, _, _] = x.dims();
        let a = self.excite(gap(x.clone()).reshape([n, c]));
        x * a.reshape([n, c, 1, 1])
    }

    /// Cost: pool, fc1, ReLU, fc2 (sigmoid and product are free).
    pub fn count(&self, c: &mut CostCounter, x: Chw) {
        c.global_avg_pool("avg_pool", x);
        let hidden = c.linear("fc.0", &self.fc1, 1);
        c.relu("fc.1", [hidden, 1, 1]);
        c.linear("fc.2", &self.fc2, 1);
    }
}

/// The attention of one residual block.
#[derive(Module, Debug)]
pub enum Attention<B: Backend> {
    /// Squeeze-and-excitation.
    Se(Se<B>),
}

impl<B: Backend> Attention<B> {
    /// Apply to the residual branch `x`, given what the previous block carried; return the re-weighted branch
    /// and what to carry to the next block.
    ///
    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>, _mode: NormMode) -> (Tensor<B, 4>, Carry<B>) {
        match self {
            Attention::Se(m) => (m.forward(x), carry),
        }
    }

    /// Record the cost for a branch of shape `x` (`first`: no previous attention reaches this block).
    pub fn count(&self, c: &mut CostCounter, x: Chw, _first: bool) {
        match self {
            Attention::Se(m) => c.scoped("se", |c| m.count(c, x)),
        }
    }
}
