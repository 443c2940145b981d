//! What the fuzz targets share: a per-process scratch directory and a tiny module whose checkpoints the
//! checkpoint targets load (few tensors, so that mutated files reach burn's readers past the strict checks).

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::Backend;

/// The backend every target computes on.
pub type FuzzBackend = Flex;

/// A per-process scratch directory (created once, reused by every input).
pub fn scratch(target: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("attndet-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a scratch directory");
        d
    })
    .clone()
}

/// A conv, a batch norm and a linear layer: PyTorch names `conv.weight [4, 3, 3, 3]`, `conv.bias [4]`,
/// `bn.{weight, bias, running_mean, running_var} [4]` (burn: `gamma`, `beta`), `fc.weight [2, 4]` (burn
/// stores it transposed, `[4, 2]`) and `fc.bias [2]`; the seeds of `make_seeds.py` are its checkpoints.
#[derive(Module, Debug)]
pub struct Tiny<B: Backend> {
    /// 3 -> 4 channels, 3x3.
    pub conv: Conv2d<B>,
    /// Over 4 channels.
    pub bn: BatchNorm<B>,
    /// 4 -> 2.
    pub fc: Linear<B>,
}

impl<B: Backend> Tiny<B> {
    /// Fresh weights.
    pub fn new(device: &B::Device) -> Self {
        Tiny {
            conv: Conv2dConfig::new([3, 4], [3, 3]).init(device),
            bn: BatchNormConfig::new(4).init(device),
            fc: LinearConfig::new(4, 2).init(device),
        }
    }
}

/// `(path, shape)` of every tensor of `model`, in order.
pub fn shapes<M: Module<FuzzBackend>>(model: &M) -> Vec<(String, Vec<usize>)> {
    attndet_backbones::checkpoint::tensor_shapes(model)
        .into_iter()
        .map(|t| (t.path, t.shape))
        .collect()
}
