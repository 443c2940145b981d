//! Deep connected attention (DCANet): each block's attention also sees the previous block's attention.
//!
//! Built as the official code (ma-xu/DCANet `models/resnet/resnet_*_dca.py`) builds them, with the paper's
//! ablation options (connection schema, channel matching for SE/GE; spatial matching and connected gates for
//! CBAM) as configuration. A block whose input width differs from its output width owns a channel-matching
//! layer; the network's first block owns one too (the reference creates it) but never calls it, since no
//! attention precedes it.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::module::{avg_pool2d, max_pool2d};

use super::attention::{Carry, ChannelGate, ContextNorm, Gc, SpatialGate, channel_pool};
use super::config::{DcaCbamGates, DcaChannelMatch, DcaConfig, DcaConnection, DcaSpatialMatch};
use crate::cost::{Chw, CostCounter};
use crate::layers::{batch_norm, conv2d, gap, gmp};
use crate::norm::{NormMode, batch_norm as bn};

fn layer_norm<B: Backend>(c: usize, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(c).with_epsilon(1e-5).init(device)
}

/// Channel matching of a previous attention vector `[N, C_prev]` -> `[N, C]`.
#[derive(Module, Debug)]
pub struct VectorMatch<B: Backend> {
    /// First (or only) Linear.
    pub fc: Linear<B>,
    /// Second Linear of the two-FC option.
    pub fc2: Option<Linear<B>>,
    /// LayerNorm over `C`.
    pub norm: LayerNorm<B>,
}

impl<B: Backend> VectorMatch<B> {
    /// `one FC`: Linear + LayerNorm + ReLU; `two FC`: Linear(C_prev, C/r) + ReLU + Linear(C/r, C) + LayerNorm + ReLU.
    pub fn new(c_prev: usize, c: usize, how: DcaChannelMatch, device: &B::Device) -> Self {
        match how {
            DcaChannelMatch::OneFc => Self {
                fc: LinearConfig::new(c_prev, c).init(device),
                fc2: None,
                norm: layer_norm(c, device),
            },
            DcaChannelMatch::TwoFc { reduction } => Self {
                fc: LinearConfig::new(c_prev, c / reduction).init(device),
                fc2: Some(LinearConfig::new(c / reduction, c).init(device)),
                norm: layer_norm(c, device),
            },
        }
    }

    /// # Shapes
    /// - `v`: `[N, C_prev]` -> `[N, C]`
    pub fn forward(&self, v: Tensor<B, 2>) -> Tensor<B, 2> {
        let v = self.fc.forward(v);
        let v = match &self.fc2 {
            Some(fc2) => fc2.forward(relu(v)),
            None => v,
        };
        relu(self.norm.forward(v))
    }

    fn count(&self, c: &mut CostCounter, channels: usize) {
        let h = c.linear("att_fc.0", &self.fc, 1);
        if let Some(fc2) = &self.fc2 {
            c.relu("att_fc.hidden_relu", [h, 1, 1]);
            c.linear("att_fc.fc2", fc2, 1);
        }
        c.free("att_fc.1", "LayerNorm", &self.norm, [channels, 1, 1]);
        c.relu("att_fc.2", [channels, 1, 1]);
    }
}

/// How the current descriptor and the previous attention are merged (`[N, C]` each -> `[N, C]`).
#[derive(Module, Debug)]
pub struct VectorMix<B: Backend> {
    /// Weighted (official): Conv2d(2 -> 1, 1x1, bias) over the stacked pair: alpha, beta and a bias.
    pub conv: Option<Conv2d<B>>,
    /// LayerNorm over `C` after the weighted mix.
    pub norm: Option<LayerNorm<B>>,
    /// Softmax option: two logits.
    pub logits: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> VectorMix<B> {
    /// The mixer of a connection schema for `c` channels.
    pub fn new(c: usize, connection: DcaConnection, device: &B::Device) -> Self {
        match connection {
            DcaConnection::Weighted => Self {
                conv: Some(conv2d(2, 1, 1, 1, 0, 1, 1, true, device)),
                norm: Some(layer_norm(c, device)),
                logits: None,
            },
            DcaConnection::Direct => Self {
                conv: None,
                norm: None,
                logits: None,
            },
            DcaConnection::Softmax => Self {
                conv: None,
                norm: None,
                logits: Some(Param::from_tensor(Tensor::zeros([2], device))),
            },
        }
    }

    /// # Shapes
    /// - `current`, `previous`: `[N, C]` -> `[N, C]`
    pub fn forward(&self, current: Tensor<B, 2>, previous: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, c] = current.dims();
        if let (Some(conv), Some(norm)) = (&self.conv, &self.norm) {
            let pair = Tensor::cat(
                vec![current.reshape([n, 1, 1, c]), previous.reshape([n, 1, 1, c])],
                1,
            );
            relu(norm.forward(conv.forward(pair).reshape([n, c])))
        } else if let Some(logits) = &self.logits {
            let w = softmax(logits.val(), 0);
            let w0 = w.clone().narrow(0, 0, 1).reshape([1, 1]);
            let w1 = w.narrow(0, 1, 1).reshape([1, 1]);
            current * w0 + previous * w1
        } else {
            current + previous
        }
    }

    fn count(&self, c: &mut CostCounter, prefix: &str, channels: usize) {
        if let (Some(conv), Some(norm)) = (&self.conv, &self.norm) {
            c.conv2d(&format!("{prefix}.0"), conv, [2, 1, channels]);
            c.free(&format!("{prefix}.1"), "LayerNorm", norm, [channels, 1, 1]);
            c.relu(&format!("{prefix}.2"), [channels, 1, 1]);
        } else if let Some(logits) = &self.logits {
            c.free(&format!("{prefix}.logits"), "Parameter", logits, [2, 1, 1]);
        }
    }

    fn idle(&self, c: &mut CostCounter, prefix: &str) {
        c.idle(prefix, self);
    }
}

/// Which channel attention a [`DcaVector`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorKind {
    /// SE: the mixed descriptor goes through the SE MLP.
    Se,
    /// GE theta-minus: the mixed descriptor goes straight to the sigmoid.
    Ge,
}

/// DCA-SE and DCA-GE. The descriptor is the global average of the branch; from the second block on it is
/// mixed with the previous block's attention (`gap * attention`, channel-matched where widths differ) before
/// the excitation. Carries `gap * attention` as `[N, C, 1, 1]`.
///
/// Reference keys (prefix `se.` or `ge.`): `fc.0`, `fc.2` (SE only), `att_fc.0` (Linear), `att_fc.1`
/// (LayerNorm), `conv.0` (Conv2d 2 -> 1), `conv.1` (LayerNorm).
#[derive(Module, Debug)]
pub struct DcaVector<B: Backend> {
    /// SE squeeze (None for GE).
    pub fc1: Option<Linear<B>>,
    /// SE excite (None for GE).
    pub fc2: Option<Linear<B>>,
    /// Channel matching of the previous attention.
    pub matcher: Option<VectorMatch<B>>,
    /// Connection.
    pub mix: VectorMix<B>,
    kind: VectorKind,
}

impl<B: Backend> DcaVector<B> {
    /// For a block with `c_in` input and `c` output channels.
    pub fn new(kind: VectorKind, c_in: usize, c: usize, cfg: &DcaConfig, device: &B::Device) -> Self {
        let (fc1, fc2) = match kind {
            VectorKind::Se => (
                Some(LinearConfig::new(c, c / 16).init(device)),
                Some(LinearConfig::new(c / 16, c).init(device)),
            ),
            VectorKind::Ge => (None, None),
        };
        Self {
            fc1,
            fc2,
            matcher: (c_in != c).then(|| VectorMatch::new(c_in, c, cfg.channel_match, device)),
            mix: VectorMix::new(c, cfg.connection, device),
            kind,
        }
    }

    fn excite(&self, v: Tensor<B, 2>) -> Tensor<B, 2> {
        match (&self.fc1, &self.fc2) {
            (Some(fc1), Some(fc2)) => sigmoid(fc2.forward(relu(fc1.forward(v)))),
            _ => sigmoid(v),
        }
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same; carry in `[N, C_prev, 1, 1]`, out `[N, C, 1, 1]`
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>) -> (Tensor<B, 4>, Carry<B>) {
        let [n, c, _, _] = x.dims();
        let pooled = gap(x.clone()).reshape([n, c]);
        let descriptor = match carry.channel {
            None => pooled.clone(),
            Some(prev) => {
                let [_, c_prev, _, _] = prev.dims();
                let prev = prev.reshape([n, c_prev]);
                let prev = match &self.matcher {
                    Some(m) => m.forward(prev),
                    None => prev,
                };
                self.mix.forward(pooled.clone(), prev)
            }
        };
        let att = self.excite(descriptor);
        let next = (pooled * att.clone()).reshape([n, c, 1, 1]);
        (
            x * att.reshape([n, c, 1, 1]),
            Carry {
                channel: Some(next),
                other: None,
            },
        )
    }

    /// Cost for branch `x`; `prev`: the previous block's branch shape.
    pub fn count(&self, c: &mut CostCounter, x: Chw, prev: Option<Chw>) {
        let (scope, pool) = match self.kind {
            VectorKind::Se => ("se", "avg_pool"),
            VectorKind::Ge => ("ge", "gap"),
        };
        c.scoped(scope, |c| {
            c.global_avg_pool(pool, x);
            match prev {
                None => {
                    if let Some(m) = &self.matcher {
                        c.idle("att_fc", m);
                    }
                    self.mix.idle(c, "conv");
                }
                Some(_) => {
                    if let Some(m) = &self.matcher {
                        m.count(c, x[0]);
                    }
                    self.mix.count(c, "conv", x[0]);
                }
            }
            if let (Some(fc1), Some(fc2)) = (&self.fc1, &self.fc2) {
                let h = c.linear("fc.0", fc1, 1);
                c.relu("fc.1", [h, 1, 1]);
                c.linear("fc.2", fc2, 1);
            }
        });
    }
}

/// DCA-GC: the context of the branch plus `weight *` the previous block's transform output (channel-matched by
/// a 1x1-LayerNorm-ReLU-1x1 bottleneck where widths differ) goes through the GC transform. Carries the
/// transform output `[N, C, 1, 1]`.
///
/// Reference keys (prefix `rgc.`): `conv_mask`, `channel_add_conv.{0,1,3}`, `att_fc.{0,1,3}`, `weight`.
#[derive(Module, Debug)]
pub struct DcaGc<B: Backend> {
    /// The GC block.
    pub gc: Gc<B>,
    /// Channel matching, first 1x1 (C_prev -> C/16).
    pub match_conv1: Option<Conv2d<B>>,
    /// Its LayerNorm over `[C/16, 1, 1]`.
    pub match_norm: Option<ContextNorm<B>>,
    /// Channel matching, second 1x1 (C/16 -> C).
    pub match_conv2: Option<Conv2d<B>>,
    /// Weight of the previous attention (initialised to 0 as in the reference).
    pub weight: Param<Tensor<B, 1>>,
}

impl<B: Backend> DcaGc<B> {
    /// For a block with `c_in` input and `c` output channels, transform width `planes`.
    pub fn new(c_in: usize, c: usize, planes: usize, device: &B::Device) -> Self {
        let matching = c_in != c;
        Self {
            gc: Gc::new(c, planes, device),
            match_conv1: matching.then(|| conv2d(c_in, planes, 1, 1, 0, 1, 1, true, device)),
            match_norm: matching.then(|| ContextNorm::new(planes, device)),
            match_conv2: matching.then(|| conv2d(planes, c, 1, 1, 0, 1, 1, true, device)),
            weight: Param::from_tensor(Tensor::zeros([1], device)),
        }
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same; carry in `[N, C_prev, 1, 1]`, out `[N, C, 1, 1]`
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>) -> (Tensor<B, 4>, Carry<B>) {
        let mut context = self.gc.context(x.clone());
        if let Some(prev) = carry.channel {
            let prev = match (&self.match_conv1, &self.match_norm, &self.match_conv2) {
                (Some(c1), Some(norm), Some(c2)) => c2.forward(relu(norm.forward(c1.forward(prev)))),
                _ => prev,
            };
            context = context + prev * self.weight.val().reshape([1, 1, 1, 1]);
        }
        let term = self.gc.transform(context);
        (
            x + term.clone(),
            Carry {
                channel: Some(term),
                other: None,
            },
        )
    }

    /// Cost for branch `x`; `prev`: the previous block's branch shape.
    pub fn count(&self, c: &mut CostCounter, x: Chw, prev: Option<Chw>) {
        self.gc.count_context(c, x);
        match (prev, &self.match_conv1, &self.match_norm, &self.match_conv2) {
            (Some(p), Some(c1), Some(norm), Some(c2)) => {
                let y = c.conv2d("att_fc.0", c1, [p[0], 1, 1]);
                c.free("att_fc.1", "LayerNorm", norm, y);
                c.relu("att_fc.2", y);
                c.conv2d("att_fc.3", c2, y);
            }
            (None, Some(c1), Some(norm), Some(c2)) => {
                c.idle("att_fc.0", c1);
                c.idle("att_fc.1", norm);
                c.idle("att_fc.3", c2);
            }
            _ => {}
        }
        if prev.is_some() {
            c.free("weight", "Parameter", &self.weight, [1, 1, 1]);
        } else {
            c.idle("weight", &self.weight);
        }
        self.gc.count_transform(c, x[0]);
    }
}

/// DCA-CBAM. Channel gate: the previous block's channel-gated map (channel-matched by 1x1 conv + BN + ReLU
/// where widths differ) is pooled like the current one, and each pooled pair is merged by a shared
/// Conv2d(2 -> 1, no bias) + LayerNorm + ReLU before the MLP. Spatial gate: the previous block's output map,
/// pooled down to this resolution, is compressed like the current one and merged as `relu(bn(p1 * cur + p2 *
/// prev))`. Carries the channel-gated map and the output map.
///
/// Reference keys (prefix `cbam.`): `ChannelGate.mlp.{1,3}`, `ChannelGate.att_fc.{0,1}`,
/// `ChannelGate.alpha.{0,1}`, `SpatialGate.spatial.{conv,bn}`, `SpatialGate.p1`, `SpatialGate.p2`,
/// `SpatialGate.bnrelu.0`.
#[derive(Module, Debug)]
pub struct DcaCbam<B: Backend> {
    /// Channel gate MLP.
    pub channel: ChannelGate<B>,
    /// Channel matching 1x1 convolution (with bias).
    pub match_conv: Option<Conv2d<B>>,
    /// Its BatchNorm.
    pub match_bn: Option<BatchNorm<B>>,
    /// Merge of pooled pairs.
    pub alpha: Option<Conv2d<B>>,
    /// LayerNorm of the merge.
    pub alpha_norm: Option<LayerNorm<B>>,
    /// Spatial gate.
    pub spatial: SpatialGate<B>,
    /// Weight of the current compressed map.
    pub p1: Option<Param<Tensor<B, 1>>>,
    /// Weight of the previous compressed map.
    pub p2: Option<Param<Tensor<B, 1>>>,
    /// BatchNorm of the merged compressed maps (2 channels).
    pub mix_bn: Option<BatchNorm<B>>,
    spatial_match: DcaSpatialMatch,
}

impl<B: Backend> DcaCbam<B> {
    /// For a block with `c_in` input and `c` output channels (the ResNet layout: MLP reduction 16, channel
    /// matching conv with a bias).
    pub fn new(c_in: usize, c: usize, cfg: &DcaConfig, device: &B::Device) -> Self {
        Self::with_layout(c_in, c, 16, true, cfg, device)
    }

    /// With the channel gate's MLP `reduction` and whether the channel-matching 1x1 conv has a bias (the mobile
    /// networks' DCA-CBAM: reduction 8 (MobileNetV2) or 16 (MnasNet), no bias).
    pub fn with_layout(
        c_in: usize,
        c: usize,
        reduction: usize,
        match_bias: bool,
        cfg: &DcaConfig,
        device: &B::Device,
    ) -> Self {
        let channel_linked = cfg.cbam_gates != DcaCbamGates::Spatial;
        let spatial_linked = cfg.cbam_gates != DcaCbamGates::Channel;
        let matching = channel_linked && c_in != c;
        Self {
            channel: ChannelGate::new(c, reduction, device),
            match_conv: matching.then(|| conv2d(c_in, c, 1, 1, 0, 1, 1, match_bias, device)),
            match_bn: matching.then(|| batch_norm(c, device)),
            alpha: channel_linked.then(|| conv2d(2, 1, 1, 1, 0, 1, 1, false, device)),
            alpha_norm: channel_linked.then(|| layer_norm(c, device)),
            spatial: SpatialGate::new(device),
            p1: spatial_linked.then(|| Param::from_tensor(Tensor::ones([1], device))),
            p2: spatial_linked.then(|| Param::from_tensor(Tensor::zeros([1], device))),
            mix_bn: spatial_linked.then(|| batch_norm(2, device)),
            spatial_match: cfg.spatial_match,
        }
    }

    fn merge(&self, current: Tensor<B, 2>, previous: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, c] = current.dims();
        match (&self.alpha, &self.alpha_norm) {
            (Some(alpha), Some(norm)) => {
                let pair = Tensor::cat(
                    vec![current.reshape([n, 1, 1, c]), previous.reshape([n, 1, 1, c])],
                    1,
                );
                relu(norm.forward(alpha.forward(pair).reshape([n, c])))
            }
            _ => current,
        }
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]`, output the same; carries `[N, C_prev, H_prev, W_prev]` maps in and
    ///   `[N, C, H, W]` maps out
    pub fn forward(&self, x: Tensor<B, 4>, carry: Carry<B>, mode: NormMode) -> (Tensor<B, 4>, Carry<B>) {
        let [n, c, h, _] = x.dims();
        // Channel gate.
        let prev = match (carry.channel, &self.alpha) {
            (Some(p), Some(_)) => Some(match (&self.match_conv, &self.match_bn) {
                (Some(conv), Some(norm)) => relu(bn(norm, conv.forward(p), mode)),
                _ => p,
            }),
            _ => None,
        };
        let mut avg = gap(x.clone()).reshape([n, c]);
        let mut max = gmp(x.clone()).reshape([n, c]);
        if let Some(p) = prev {
            avg = self.merge(avg, gap(p.clone()).reshape([n, c]));
            max = self.merge(max, gmp(p).reshape([n, c]));
        }
        let scale = sigmoid(self.channel.mlp(avg) + self.channel.mlp(max));
        let x = x * scale.reshape([n, c, 1, 1]);
        // Spatial gate.
        let compressed = match (carry.other, &self.p1, &self.p2, &self.mix_bn) {
            (Some(prev), Some(p1), Some(p2), Some(mix_bn)) => {
                let [_, _, hp, _] = prev.dims();
                let prev = if hp != h {
                    let k = hp / h;
                    match self.spatial_match {
                        DcaSpatialMatch::Avg => avg_pool2d(prev, [k, k], [k, k], [0, 0], true, false),
                        DcaSpatialMatch::Max => max_pool2d(prev, [k, k], [k, k], [0, 0], [1, 1], false),
                    }
                } else {
                    prev
                };
                let mixed = channel_pool(x.clone()) * p1.val().reshape([1, 1, 1, 1])
                    + channel_pool(prev) * p2.val().reshape([1, 1, 1, 1]);
                relu(bn(mix_bn, mixed, mode))
            }
            _ => channel_pool(x.clone()),
        };
        let out = x.clone() * self.spatial.scale(compressed, mode);
        (
            out.clone(),
            Carry {
                channel: Some(x),
                other: Some(out),
            },
        )
    }

    /// Cost for branch `x`; `prev`: the previous block's branch shape.
    pub fn count(&self, c: &mut CostCounter, x: Chw, prev: Option<Chw>) {
        c.scoped("ChannelGate", |c| {
            let linked = prev.filter(|_| self.alpha.is_some());
            let pre = linked.map(|p| match (&self.match_conv, &self.match_bn) {
                (Some(conv), Some(norm)) => {
                    let y = c.conv2d("att_fc.0", conv, p);
                    c.batch_norm("att_fc.1", norm, y);
                    c.relu("att_fc.2", y)
                }
                _ => p,
            });
            if linked.is_none() {
                if let (Some(conv), Some(norm)) = (&self.match_conv, &self.match_bn) {
                    c.idle("att_fc.0", conv);
                    c.idle("att_fc.1", norm);
                }
                if let (Some(alpha), Some(norm)) = (&self.alpha, &self.alpha_norm) {
                    c.idle("alpha.0", alpha);
                    c.idle("alpha.1", norm);
                }
            }
            for (pool, kind) in [("avgpool", "AdaptiveAvgPool2d"), ("maxpool", "AdaptiveMaxPool2d")] {
                c.pool(pool, kind, x, [x[0], 1, 1]);
                if let (Some(p), Some(alpha), Some(norm)) = (pre, &self.alpha, &self.alpha_norm) {
                    c.pool(pool, kind, p, [p[0], 1, 1]);
                    c.conv2d("alpha.0", alpha, [2, 1, x[0]]);
                    c.free("alpha.1", "LayerNorm", norm, [x[0], 1, 1]);
                    c.relu("alpha.2", [x[0], 1, 1]);
                }
                self.channel.count_mlp(c);
            }
        });
        c.scoped("SpatialGate", |c| {
            if let (Some(p1), Some(p2), Some(mix_bn)) = (&self.p1, &self.p2, &self.mix_bn) {
                if prev.is_some() {
                    c.free("p1", "Parameter", p1, [1, 1, 1]);
                    c.free("p2", "Parameter", p2, [1, 1, 1]);
                    let y = c.batch_norm("bnrelu.0", mix_bn, [2, x[1], x[2]]);
                    c.relu("bnrelu.1", y);
                } else {
                    c.idle("p1", p1);
                    c.idle("p2", p2);
                    c.idle("bnrelu.0", mix_bn);
                }
            }
            self.spatial.count_conv(c, x);
        });
    }
}
