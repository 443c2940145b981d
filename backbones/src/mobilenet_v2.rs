//! MobileNetV2 with the attention variants of DCANet (`ma-xu/DCANet` models/mobilenet) and ECANet
//! (`BangguWu/ECANet` models/eca_mobilenetv2.py).
//!
//! The attention of each inverted residual block sits after the projection's BatchNorm, before the residual
//! sum. The mobile versions differ from the ResNet ones: SE uses `Linear` layers with reduction 8, GE is the
//! parameter-free `sigmoid(GAP(x))` gate ("GE-theta-"), and DCA connects consecutive blocks' attention with a
//! 1x1 `Conv2d(2 -> 1)` + `LayerNorm` (see [`DcaMix`]), matching channels with `Linear + LayerNorm + ReLU`.
//! CBAM uses MLP reduction 8 ([`MobileCbam`]); SK replaces the depthwise convolution by a selective-kernel
//! layer ([`SkDepthwise`]).
//!
//! Feature levels for detection (strides 4, 8, 16, 32): the outputs of blocks 2 (24 channels), 5 (32),
//! 12 (96) and of the final 1x1 conv (1280), as torchvision's detection models take the last map.

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig1d};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use serde::{Deserialize, Serialize};

use crate::checkpoint::KeyMap;
use crate::cost::{Chw, CostCounter, CountFlops, parameter_count};
use crate::error::BackboneError;
use crate::mobile_attention::{DcaCarry, MobileCbam, SkDepthwise};
use crate::mobile_layers::{
    Activation, ConvBnAct, DcaMix, freeze_prefix, frozen_norm, global_avg, impl_mobile_backbone,
    leak_key_map, linear_flops, pooled_logits, record_block, record_head,
};
use crate::norm::NormMode;

/// Which attention each inverted residual block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MobileAttention {
    /// Plain MobileNetV2 (`old_mobilenet_v2`).
    None,
    /// Squeeze-and-excitation, `Linear` layers, reduction 8 (`se_mobilenet_v2`).
    Se,
    /// DCA-connected SE (`dca_se_mobilenet_v2`).
    DcaSe,
    /// Parameter-free gather-excite gate `sigmoid(GAP(x))` (`getheta_mobilenet_v2`).
    Ge,
    /// DCA-connected GE (`dca_getheta_mobilenet_v2`).
    DcaGe,
    /// Efficient channel attention, kernel 1 for blocks narrower than 96 channels, else 3 (`eca_mobilenet_v2`).
    Eca,
    /// Selective-kernel depthwise layer (`sk_mobilenet_v2`).
    Sk,
    /// DCA-connected SK (`dca_sk_mobilenet_v2`).
    DcaSk,
    /// CBAM, reduction 8 (`cbam_mobilenet_v2`).
    Cbam,
    /// DCA-connected CBAM (`dca_cbam_mobilenet_v2`).
    DcaCbam,
}

impl MobileAttention {
    /// The model-name prefix (`"dca_se_"` ...), empty for the plain network.
    pub fn prefix(self) -> &'static str {
        match self {
            MobileAttention::None => "",
            MobileAttention::Se => "se_",
            MobileAttention::DcaSe => "dca_se_",
            MobileAttention::Ge => "ge_",
            MobileAttention::DcaGe => "dca_ge_",
            MobileAttention::Eca => "eca_",
            MobileAttention::Sk => "sk_",
            MobileAttention::DcaSk => "dca_sk_",
            MobileAttention::Cbam => "cbam_",
            MobileAttention::DcaCbam => "dca_cbam_",
        }
    }

    /// All variants, for listings and tests.
    pub const ALL: [MobileAttention; 10] = [
        MobileAttention::None,
        MobileAttention::Se,
        MobileAttention::DcaSe,
        MobileAttention::Ge,
        MobileAttention::DcaGe,
        MobileAttention::Eca,
        MobileAttention::Sk,
        MobileAttention::DcaSk,
        MobileAttention::Cbam,
        MobileAttention::DcaCbam,
    ];
}

/// Architecture of a MobileNetV2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileNetV2Config {
    /// Attention of the inverted residual blocks.
    pub attention: MobileAttention,
    /// Classes of the classification head.
    pub num_classes: usize,
}

/// `(expansion t, channels c, repeats n, first stride s)` of the seven block groups.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];
const STEM_CHANNELS: usize = 32;
const LAST_CHANNELS: usize = 1280;
/// Blocks whose outputs are the C2, C3, C4 levels (0-based); C5 is the final 1x1 conv.
const LEVEL_BLOCKS: [usize; 3] = [2, 5, 12];
/// Stage `k` (1-based, for `frozen_stages`) ends before this block; stage 4 also holds the final conv.
const STAGE_ENDS: [usize; 4] = [3, 6, 13, 17];

/// One block's shape: `(input channels, output channels, stride, expansion)`.
fn block_shapes() -> Vec<(usize, usize, usize, usize)> {
    let mut shapes = Vec::new();
    let mut cin = STEM_CHANNELS;
    for (t, c, n, s) in SETTINGS {
        for i in 0..n {
            shapes.push((cin, c, if i == 0 { s } else { 1 }, t));
            cin = c;
        }
    }
    shapes
}

/// SE with `Linear` layers (reduction 8), optionally DCA-connected.
#[derive(Module, Debug)]
pub struct LinearSe<B: Backend> {
    /// `Linear(C, C / 8)` (reference `se.fc.0`).
    pub fc1: Linear<B>,
    /// `Linear(C / 8, C)` (reference `se.fc.2`).
    pub fc2: Linear<B>,
    /// DCA only: mixes the current descriptor with the previous attention.
    pub mix: Option<DcaMix<B>>,
    /// DCA only, when the previous block is narrower or wider: `Linear(C_prev, C) + LayerNorm + ReLU`.
    pub match_fc: Option<Linear<B>>,
    /// LayerNorm of `match_fc`.
    pub match_norm: Option<LayerNorm<B>>,
}

/// The parameters of DCA-connected GE: only the connection (the gate itself has none).
#[derive(Module, Debug)]
pub struct DcaGate<B: Backend> {
    /// Mixes the current descriptor with the previous attention (conv with bias).
    pub mix: DcaMix<B>,
    /// Channel matching `Linear(C_prev, C)` when the widths differ.
    pub match_fc: Option<Linear<B>>,
    /// LayerNorm of `match_fc`.
    pub match_norm: Option<LayerNorm<B>>,
}

/// ECA: a 1-D convolution across the channel descriptor.
#[derive(Module, Debug)]
pub struct Eca<B: Backend> {
    /// `Conv1d(1, 1, k, padding=(k-1)/2, bias=False)`.
    pub conv: Conv1d<B>,
}

/// The attention module of one block.
// One per block, built once: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BlockAttention<B: Backend> {
    /// SE or DCA-SE.
    Se(LinearSe<B>),
    /// DCA-GE (plain GE has no parameters and no module).
    DcaGe(DcaGate<B>),
    /// ECA.
    Eca(Eca<B>),
    /// CBAM or DCA-CBAM.
    Cbam(MobileCbam<B>),
}

/// An inverted residual block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection, attention, residual.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    /// 1x1 expansion (absent when the expansion factor is 1).
    pub expand: Option<ConvBnAct<B>>,
    /// 3x3 depthwise convolution (all variants but SK).
    pub depthwise: Option<ConvBnAct<B>>,
    /// SK's selective-kernel layer in place of the depthwise convolution.
    pub sk: Option<SkDepthwise<B>>,
    /// 1x1 projection, no activation.
    pub project: ConvBnAct<B>,
    /// The block's attention module, if it has parameters.
    pub attention: Option<BlockAttention<B>>,
    kind: MobileAttention,
    residual: bool,
}

impl<B: Backend> InvertedResidual<B> {
    /// `prev_hidden`: the previous block's expanded width (DCA-SK matches the carried weights from it).
    fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        t: usize,
        prev_hidden: usize,
        kind: MobileAttention,
        device: &B::Device,
    ) -> Self {
        let hidden = cin * t;
        let sk = matches!(kind, MobileAttention::Sk | MobileAttention::DcaSk);
        let expand = (t != 1).then(|| ConvBnAct::new(cin, hidden, 1, 1, 1, Activation::Relu6, device));
        let matcher = |device: &B::Device| {
            if cin != cout {
                (
                    Some(LinearConfig::new(cin, cout).init(device)),
                    Some(LayerNormConfig::new(cout).init(device)),
                )
            } else {
                (None, None)
            }
        };
        let attention =
            match kind {
                MobileAttention::None
                | MobileAttention::Ge
                | MobileAttention::Sk
                | MobileAttention::DcaSk => None,
                MobileAttention::Cbam | MobileAttention::DcaCbam => Some(BlockAttention::Cbam(
                    MobileCbam::new(cin, cout, 8, kind == MobileAttention::DcaCbam, device),
                )),
                MobileAttention::Se | MobileAttention::DcaSe => {
                    let dca = kind == MobileAttention::DcaSe;
                    let (match_fc, match_norm) = if dca { matcher(device) } else { (None, None) };
                    Some(BlockAttention::Se(LinearSe {
                        fc1: LinearConfig::new(cout, cout / 8).init(device),
                        fc2: LinearConfig::new(cout / 8, cout).init(device),
                        mix: dca.then(|| DcaMix::new(cout, false, device)),
                        match_fc,
                        match_norm,
                    }))
                }
                MobileAttention::DcaGe => {
                    let (match_fc, match_norm) = matcher(device);
                    Some(BlockAttention::DcaGe(DcaGate {
                        mix: DcaMix::new(cout, true, device),
                        match_fc,
                        match_norm,
                    }))
                }
                MobileAttention::Eca => {
                    let k = if cout < 96 { 1 } else { 3 };
                    let conv = Conv1dConfig::new(1, 1, k)
                        .with_padding(PaddingConfig1d::Explicit((k - 1) / 2, (k - 1) / 2))
                        .with_bias(false)
                        .init(device);
                    Some(BlockAttention::Eca(Eca { conv }))
                }
            };
        Self {
            expand,
            depthwise: (!sk)
                .then(|| ConvBnAct::new(hidden, hidden, 3, stride, hidden, Activation::Relu6, device)),
            sk: sk.then(|| {
                SkDepthwise::new(
                    prev_hidden,
                    hidden,
                    stride,
                    kind == MobileAttention::DcaSk,
                    device,
                )
            }),
            project: ConvBnAct::new(hidden, cout, 1, 1, 1, Activation::Identity, device),
            attention,
            kind,
            residual: stride == 1 && cin == cout,
        }
    }

    /// # Shapes
    /// - `x`: `[N, cin, H, W]` -> `[N, cout, H / s, W / s]`; what DCA carries: see [`DcaCarry`]
    fn forward(&self, x: Tensor<B, 4>, state: DcaCarry<B>, norm: NormMode) -> (Tensor<B, 4>, DcaCarry<B>) {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = expand.forward(y, norm);
        }
        let (y, state) = match (&self.sk, &self.depthwise) {
            (Some(sk), _) => sk.forward(y, state, norm),
            (None, Some(depthwise)) => (depthwise.forward(y, norm), state),
            (None, None) => (y, state),
        };
        let y = self.project.forward(y, norm);
        let (y, state) = match &self.attention {
            Some(BlockAttention::Cbam(cbam)) => cbam.forward(y, state, norm),
            _ if self.sk.is_some() => (y, state),
            _ => {
                let (y, vector) = self.attend(y, state.vector());
                (y, vector.map_or(DcaCarry::None, DcaCarry::Vector))
            }
        };
        (if self.residual { x + y } else { y }, state)
    }

    /// SE, GE and ECA, whose DCA versions carry a channel descriptor `[N, C]`.
    fn attend(&self, y: Tensor<B, 4>, state: Option<Tensor<B, 2>>) -> (Tensor<B, 4>, Option<Tensor<B, 2>>) {
        let [n, c, _, _] = y.dims();
        let gate = |g: Tensor<B, 2>| g.reshape([n, c, 1, 1]);
        match (&self.attention, self.kind) {
            (None, MobileAttention::Ge) => {
                let g = sigmoid(global_avg(y.clone()));
                (y * gate(g), None)
            }
            (Some(BlockAttention::Se(se)), _) => {
                let gap = global_avg(y.clone());
                let squeezed = match (&se.mix, state) {
                    (Some(mix), Some(prev)) => {
                        mix.forward(gap.clone(), matched(&se.match_fc, &se.match_norm, prev))
                    }
                    _ => gap.clone(),
                };
                let att = sigmoid(se.fc2.forward(relu(se.fc1.forward(squeezed))));
                let next = se.mix.as_ref().map(|_| gap * att.clone());
                (y * gate(att), next)
            }
            (Some(BlockAttention::DcaGe(ge)), _) => {
                let gap = global_avg(y.clone());
                let mixed = match state {
                    Some(prev) => ge
                        .mix
                        .forward(gap.clone(), matched(&ge.match_fc, &ge.match_norm, prev)),
                    None => gap.clone(),
                };
                let att = sigmoid(mixed);
                (y * gate(att.clone()), Some(gap * att))
            }
            (Some(BlockAttention::Eca(eca)), _) => {
                let gap = global_avg(y.clone()).reshape([n, 1, c]);
                let att = sigmoid(eca.conv.forward(gap)).reshape([n, c]);
                (y * gate(att), None)
            }
            _ => (y, None),
        }
    }

    /// The expansion factor `t` (hidden width / input width).
    fn expansion(&self) -> usize {
        match &self.expand {
            Some(expand) => {
                let [hidden, cin, _, _] = expand.conv.weight.dims();
                hidden / cin
            }
            None => 1,
        }
    }

    /// The DCA connection weights `(alpha, beta)` of this block, if it has a DCA connection.
    pub fn dca_alpha_beta(&self) -> Option<(f32, f32)> {
        match &self.attention {
            Some(BlockAttention::Se(se)) => se.mix.as_ref().map(DcaMix::alpha_beta),
            Some(BlockAttention::DcaGe(ge)) => Some(ge.mix.alpha_beta()),
            Some(BlockAttention::Cbam(cbam)) => cbam.alpha_beta(),
            _ => self.sk.as_ref().and_then(SkDepthwise::alpha_beta),
        }
    }

    fn flops(&self, hw: [usize; 2], has_prev: bool) -> (u64, [usize; 2]) {
        let mut total = 0;
        let mut hw_cur = hw;
        if let Some(expand) = &self.expand {
            let (f, o) = expand.flops(hw_cur);
            total += f;
            hw_cur = o;
        }
        let (f, o) = match (&self.sk, &self.depthwise) {
            (Some(sk), _) => sk.flops(hw_cur, has_prev),
            (None, Some(depthwise)) => depthwise.flops(hw_cur),
            (None, None) => (0, hw_cur),
        };
        total += f;
        let (f, out) = self.project.flops(o);
        total += f;
        let c = self.project.bn.gamma.dims()[0];
        let positions = (c * out[0] * out[1]) as u64;
        let c64 = c as u64;
        // The DCA connection runs only when a previous block exists: conv 2 MACs (+ bias) and ReLU per channel,
        // plus the channel-matching Linear and its ReLU.
        let connection = |matcher: &Option<Linear<B>>, bias: bool| {
            if !has_prev {
                return 0;
            }
            let matching = matcher.as_ref().map_or(0, |fc| linear_flops(fc) + c64);
            matching + 2 * c64 + if bias { c64 } else { 0 } + c64
        };
        total += match &self.attention {
            // AdaptiveAvgPool2d counts its input elements, Linear its MACs, ReLU its outputs.
            Some(BlockAttention::Se(se)) => {
                let mix = if se.mix.is_some() {
                    connection(&se.match_fc, false)
                } else {
                    0
                };
                positions + linear_flops(&se.fc1) + linear_flops(&se.fc2) + (c / 8) as u64 + mix
            }
            Some(BlockAttention::DcaGe(ge)) => positions + connection(&ge.match_fc, true),
            // Conv1d is not hooked by the reference counter: only the pooling counts.
            Some(BlockAttention::Eca(_)) => positions,
            Some(BlockAttention::Cbam(cbam)) => {
                // The previous block's output (what DCA carries) has this block's input shape.
                let cin = self.project.conv.weight.dims()[1] / self.expansion();
                let prev = has_prev.then_some([cin, hw[0], hw[1]]);
                cbam.flops([c, out[0], out[1]], prev)
            }
            None if self.kind == MobileAttention::Ge => positions,
            None => 0,
        };
        (total, out)
    }
}

/// Maps the previous block's descriptor to this block's width when they differ.
fn matched<B: Backend>(
    fc: &Option<Linear<B>>,
    norm: &Option<LayerNorm<B>>,
    prev: Tensor<B, 2>,
) -> Tensor<B, 2> {
    match (fc, norm) {
        (Some(fc), Some(norm)) => relu(norm.forward(fc.forward(prev))),
        _ => prev,
    }
}

/// MobileNetV2 (any attention variant) with its classification head.
#[derive(Module, Debug)]
pub struct MobileNetV2<B: Backend> {
    /// 3x3 stride-2 stem, 32 channels.
    pub stem: ConvBnAct<B>,
    /// The 17 inverted residual blocks.
    pub blocks: Vec<InvertedResidual<B>>,
    /// Final 1x1 conv to 1280 channels.
    pub head: ConvBnAct<B>,
    /// Classifier (the reference's `classifier.1`; dropout is a no-op at inference).
    pub classifier: Linear<B>,
    norm: NormMode,
    /// Blocks before this index (and the stem) are frozen: no gradients, running BatchNorm statistics.
    frozen_blocks: Option<usize>,
}

impl MobileNetV2Config {
    /// Build the network with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MobileNetV2<B> {
        MobileNetV2 {
            stem: ConvBnAct::new(3, STEM_CHANNELS, 3, 2, 1, Activation::Relu6, device),
            blocks: block_shapes()
                .into_iter()
                .scan(STEM_CHANNELS, |prev_hidden, (cin, cout, s, t)| {
                    let block = InvertedResidual::new(cin, cout, s, t, *prev_hidden, self.attention, device);
                    *prev_hidden = cin * t;
                    Some(block)
                })
                .collect(),
            head: ConvBnAct::new(320, LAST_CHANNELS, 1, 1, 1, Activation::Relu6, device),
            classifier: LinearConfig::new(LAST_CHANNELS, self.num_classes).init(device),
            norm: NormMode::Auto,
            frozen_blocks: None,
        }
    }

    /// Parse a zoo name: `[se_|dca_se_|ge_|dca_ge_|eca_]mobilenet_v2` (`None`: not a MobileNetV2 name).
    pub fn parse(name: &str) -> Option<Result<Self, BackboneError>> {
        let prefix = name.strip_suffix("mobilenet_v2")?;
        let attention = MobileAttention::ALL.into_iter().find(|a| a.prefix() == prefix);
        Some(attention.map(|attention| Self { attention, num_classes: 1000 }).ok_or_else(|| {
            BackboneError::UnknownModel {
                name: name.into(),
                reason: "MobileNetV2 attention prefixes: se_, dca_se_, ge_, dca_ge_, eca_, sk_, dca_sk_, cbam_, \
                         dca_cbam_"
                    .into(),
            }
        }))
    }

    /// [`MobileNetV2Config::key_map`] as the zoo's static [`KeyMap`] (built once per variant).
    pub fn static_key_map(&self) -> KeyMap {
        leak_key_map(&format!("mobilenet_v2/{:?}", self.attention), || self.key_map())
    }

    /// The model name, e.g. `dca_se_mobilenet_v2`.
    pub fn name(&self) -> String {
        format!("{}mobilenet_v2", self.attention.prefix())
    }

    /// Key map from the reference code's `state_dict` keys to this crate's module paths, as
    /// `(regex, replacement)` pairs applied in order (see `burn_store::KeyRemapper`).
    pub fn key_map(&self) -> Vec<(String, String)> {
        use MobileAttention as A;
        let mut map = Vec::new();
        let mut rule = |from: String, to: String| map.push((from, to));
        // Where the stem, the blocks and the last conv live in each reference file.
        let (stem, block, head) = match self.attention {
            A::DcaSe | A::DcaCbam => (
                r"features\.0\.conv\.".to_string(),
                "features\\.{}\\.",
                r"features\.18\.conv\.".to_string(),
            ),
            A::DcaGe => (
                r"features1\.".to_string(),
                "features2\\.{}\\.",
                r"features3\.".to_string(),
            ),
            A::DcaSk => (
                r"features1\.0\.".to_string(),
                "features2\\.{}\\.",
                r"features3\.0\.".to_string(),
            ),
            _ => (
                r"features\.0\.".to_string(),
                "features\\.{}\\.",
                r"features\.18\.".to_string(),
            ),
        };
        rule(format!("^{stem}0\\."), "stem.conv.".into());
        rule(format!("^{stem}1\\."), "stem.bn.".into());
        rule(format!("^{head}0\\."), "head.conv.".into());
        rule(format!("^{head}1\\."), "head.bn.".into());
        rule(r"^classifier\.1\.".into(), "classifier.".into());
        let offset = if matches!(self.attention, A::DcaGe | A::DcaSk) {
            0
        } else {
            1
        };
        for (i, (_, _, _, t)) in block_shapes().into_iter().enumerate() {
            let p = format!("^{}", block.replace("{}", &(i + offset).to_string()));
            let b = format!("blocks.{i}.");
            if self.attention == A::DcaSk {
                // Named submodules: layer1 (expand), layersk, layer3 (project conv, bn).
                rule(format!("{p}layer1\\.0\\."), format!("{b}expand.conv."));
                rule(format!("{p}layer1\\.1\\."), format!("{b}expand.bn."));
                rule(format!("{p}layer3\\.0\\."), format!("{b}project.conv."));
                rule(format!("{p}layer3\\.1\\."), format!("{b}project.bn."));
                for (from, to) in [
                    ("att_conv(\\d)\\.0", "mix$1.conv"),
                    ("att_conv(\\d)\\.1", "mix$1.norm"),
                    ("att_fc(\\d)\\.0", "match$1.fc1"),
                    ("att_fc(\\d)\\.1", "match$1.norm1"),
                    ("att_fc(\\d)\\.3", "match$1.fc2"),
                    ("att_fc(\\d)\\.4", "match$1.norm2"),
                    ("", ""),
                ] {
                    rule(format!("{p}layersk\\.{from}"), format!("{b}sk.{to}"));
                }
                continue;
            }
            // Sequential slots inside `conv`: [expand], depthwise (or SK), project conv, project bn, [eca].
            let first = if t != 1 {
                rule(format!("{p}conv\\.0\\.0\\."), format!("{b}expand.conv."));
                rule(format!("{p}conv\\.0\\.1\\."), format!("{b}expand.bn."));
                1
            } else {
                0
            };
            if self.attention == A::Sk {
                rule(format!("{p}conv\\.{first}\\.([a-z])"), format!("{b}sk.$1"));
            }
            rule(format!("{p}conv\\.{first}\\.0\\."), format!("{b}depthwise.conv."));
            rule(format!("{p}conv\\.{first}\\.1\\."), format!("{b}depthwise.bn."));
            rule(format!("{p}conv\\.{}\\.", first + 1), format!("{b}project.conv."));
            rule(format!("{p}conv\\.{}\\.", first + 2), format!("{b}project.bn."));
            let a = format!("{b}attention.");
            match self.attention {
                A::Eca => rule(format!("{p}conv\\.{}\\.conv\\.", first + 3), format!("{a}conv.")),
                A::Se | A::DcaSe => {
                    rule(format!("{p}se\\.fc\\.0\\."), format!("{a}fc1."));
                    rule(format!("{p}se\\.fc\\.2\\."), format!("{a}fc2."));
                    rule(format!("{p}se\\.att_fc\\.0\\."), format!("{a}match_fc."));
                    rule(format!("{p}se\\.att_fc\\.1\\."), format!("{a}match_norm."));
                    rule(format!("{p}se\\.conv\\.0\\."), format!("{a}mix.conv."));
                    rule(format!("{p}se\\.conv\\.1\\."), format!("{a}mix.norm."));
                }
                A::DcaGe => {
                    rule(format!("{p}ge\\.att_fc\\.0\\."), format!("{a}match_fc."));
                    rule(format!("{p}ge\\.att_fc\\.1\\."), format!("{a}match_norm."));
                    rule(format!("{p}ge\\.conv\\.0\\."), format!("{a}mix.conv."));
                    rule(format!("{p}ge\\.conv\\.1\\."), format!("{a}mix.norm."));
                }
                A::Cbam | A::DcaCbam => {
                    let c = format!("{p}cbam\\.");
                    for (from, to) in [
                        ("ChannelGate\\.mlp\\.1\\.", "channel.fc1."),
                        ("ChannelGate\\.mlp\\.3\\.", "channel.fc2."),
                        ("ChannelGate\\.att_fc\\.0\\.", "match_conv."),
                        ("ChannelGate\\.att_fc\\.1\\.", "match_bn."),
                        ("ChannelGate\\.alpha\\.0\\.", "alpha."),
                        ("ChannelGate\\.alpha\\.1\\.", "alpha_norm."),
                        ("SpatialGate\\.spatial\\.", "spatial."),
                        ("SpatialGate\\.bnrelu\\.0\\.", "mix_bn."),
                        ("SpatialGate\\.(p\\d)$", "$1"),
                    ] {
                        rule(format!("{c}{from}"), format!("{a}{to}"));
                    }
                }
                A::None | A::Ge | A::Sk | A::DcaSk => {}
            }
        }
        map
    }
}

impl<B: Backend> MobileNetV2<B> {
    /// Set how the BatchNorm layers normalise (mmdetection's `norm_eval` is [`NormMode::Frozen`]).
    pub fn with_norm_mode(mut self, norm: NormMode) -> Self {
        self.norm = norm;
        self
    }

    /// Freeze the stem and the first `stages` stages (stage `k` ends at level C`k+1`; 0 = stem only).
    pub fn with_frozen_stages(mut self, stages: usize) -> Self {
        let end = match stages {
            0 => 0,
            k => STAGE_ENDS[k.min(4) - 1],
        };
        self.stem = self.stem.no_grad();
        self.blocks = freeze_prefix(self.blocks, end);
        if stages >= 4 {
            self.head = self.head.no_grad();
        }
        self.frozen_blocks = Some(end);
        self
    }

    /// The norm mode of block `i` (`None`: the stem, `Some(len)`: the final conv).
    fn norm_of(&self, block: Option<usize>) -> NormMode {
        frozen_norm(self.frozen_blocks, block, self.blocks.len(), self.norm)
    }

    /// Run the stem and the blocks, keeping the C2..C5 levels.
    fn run(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let mut x = self.stem.forward(x, self.norm_of(None));
        let mut state = DcaCarry::None;
        let mut levels = Vec::with_capacity(4);
        for (i, block) in self.blocks.iter().enumerate() {
            let (y, s) = block.forward(x, state, self.norm_of(Some(i)));
            x = y;
            state = s;
            if LEVEL_BLOCKS.contains(&i) {
                levels.push(x.clone());
            }
        }
        levels.push(self.head.forward(x, self.norm_of(Some(self.blocks.len()))));
        levels
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, H, W]` -> `[N, num_classes]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let last = self.run(x).pop().expect("run returns four levels");
        pooled_logits(&self.classifier, last)
    }

    /// Channels of the C2, C3, C4 levels (outputs of blocks 2, 5, 12).
    fn block_level_channels(&self) -> [usize; 3] {
        let shapes = block_shapes();
        LEVEL_BLOCKS.map(|i| shapes[i].1)
    }

    /// Per block: `Some((alpha, beta))` for DCA-connected blocks (the first block has no predecessor, so its
    /// connection weights are never used), `None` otherwise.
    pub fn dca_connections(&self) -> Vec<Option<(f32, f32)>> {
        self.blocks.iter().map(InvertedResidual::dca_alpha_beta).collect()
    }

    /// FLOPs for one `[h, w]` image, ptflops convention (DCANet's `flops_counter.py`).
    pub fn flops(&self, hw: [usize; 2]) -> u64 {
        let (mut total, mut cur) = self.stem.flops(hw);
        for (i, block) in self.blocks.iter().enumerate() {
            let (f, o) = block.flops(cur, i > 0);
            total += f;
            cur = o;
        }
        let (f, _) = self.head.flops(cur);
        // The head's global mean is `x.mean([2, 3])` (not a module, not counted).
        total + f + linear_flops(&self.classifier)
    }
}

impl_mobile_backbone!(MobileNetV2, LAST_CHANNELS);

impl<B: Backend> CountFlops for MobileNetV2<B> {
    /// One row per stem, block, final conv and classifier (the per-layer tally lives in the blocks' `flops`).
    fn count_flops(&self, counter: &mut CostCounter, x: Chw) -> Chw {
        let (flops, hw) = self.stem.flops([x[1], x[2]]);
        counter.record(
            "stem",
            "ConvBNReLU",
            parameter_count(&self.stem),
            flops,
            [STEM_CHANNELS, hw[0], hw[1]],
        );
        let mut cur = hw;
        for (i, block) in self.blocks.iter().enumerate() {
            let cost = block.flops(cur, i > 0);
            cur = cost.1;
            let c = block.project.bn.gamma.dims()[0];
            record_block(counter, &format!("blocks.{i}"), block, cost, c);
        }
        record_head(counter, &self.head, &self.classifier, cur)
    }
}
