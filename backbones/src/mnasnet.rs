//! MnasNet (the torchvision v1 layout DCANet builds on, `ma-xu/DCANet` models/mnas) with DCANet's SE, GE and
//! DCA variants, at depth multipliers 0.5, 0.75, 1.0 and 1.3.
//!
//! Differences from the MobileNetV2 variants, read off the reference code: ReLU instead of ReLU6, 3x3 or 5x5
//! depthwise kernels, SE with reduction 16, DCA-SE matching channels with two `Linear + LayerNorm + ReLU` layers
//! through `C / 16`, and DCA mixing convs with a bias. CBAM ([`MobileCbam`]) has MLP reduction 8, DCA-CBAM 16.
//!
//! Feature levels for detection (strides 4, 8, 16, 32): the outputs of stacks 1 (24 channels at 1.0), 2 (40),
//! 4 (96) and of the final 1x1 conv (1280).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use serde::{Deserialize, Serialize};

use crate::checkpoint::KeyMap;
use crate::cost::{Chw, CostCounter, CountFlops, parameter_count};
use crate::error::BackboneError;
use crate::mobile_attention::{DcaCarry, MobileCbam};
use crate::mobile_layers::{
    Activation, ConvBnAct, DcaMix, freeze_prefix, frozen_norm, global_avg, impl_mobile_backbone,
    leak_key_map, linear_flops, pooled_logits, record_block, record_head,
};
use crate::norm::NormMode;

/// Which attention each MnasNet block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MnasAttention {
    /// Plain MnasNet (`old_mnasnet*`).
    None,
    /// SE, reduction 16 (`se_mnasnet*`).
    Se,
    /// DCA-connected SE (`dca_se_mnasnet*`).
    DcaSe,
    /// Parameter-free GE gate (`getheta_mnasnet*`).
    Ge,
    /// DCA-connected GE (`dca_getheta_mnasnet*`).
    DcaGe,
    /// CBAM, reduction 8 (`cbam_mnasnet*`).
    Cbam,
    /// DCA-connected CBAM, reduction 16 (`dca_cbam_mnasnet*`).
    DcaCbam,
}

impl MnasAttention {
    /// All variants.
    pub const ALL: [MnasAttention; 7] = [
        MnasAttention::None,
        MnasAttention::Se,
        MnasAttention::DcaSe,
        MnasAttention::Ge,
        MnasAttention::DcaGe,
        MnasAttention::Cbam,
        MnasAttention::DcaCbam,
    ];

    /// The model-name prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            MnasAttention::None => "",
            MnasAttention::Se => "se_",
            MnasAttention::DcaSe => "dca_se_",
            MnasAttention::Ge => "ge_",
            MnasAttention::DcaGe => "dca_ge_",
            MnasAttention::Cbam => "cbam_",
            MnasAttention::DcaCbam => "dca_cbam_",
        }
    }

    fn dca(self) -> bool {
        matches!(
            self,
            MnasAttention::DcaSe | MnasAttention::DcaGe | MnasAttention::DcaCbam
        )
    }
}

/// The depth multipliers of the zoo, as they appear in names (`mnasnet0_75`).
pub const WIDTHS: [(&str, f64); 4] = [("0_5", 0.5), ("0_75", 0.75), ("1_0", 1.0), ("1_3", 1.3)];

/// Architecture of a MnasNet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnasNetConfig {
    /// Attention of the blocks.
    pub attention: MnasAttention,
    /// Depth multiplier in hundredths (50, 75, 100, 130): an integer keeps the config `Eq`.
    pub width_percent: usize,
    /// Classes of the classification head.
    pub num_classes: usize,
}

/// `(channels at 1.0, kernel, first stride, expansion, repeats)` of the six stacks.
const STACKS: [(usize, usize, usize, usize, usize); 6] = [
    (24, 3, 2, 3, 3),
    (40, 5, 2, 3, 3),
    (80, 5, 2, 6, 3),
    (96, 3, 1, 6, 2),
    (192, 5, 2, 6, 4),
    (320, 3, 1, 6, 1),
];
const LAST_CHANNELS: usize = 1280;
/// Stacks whose outputs are C2, C3, C4; C5 is the final conv.
const LEVEL_STACKS: [usize; 3] = [0, 1, 3];

/// torchvision's asymmetric rounding to a multiple of 8 (rounds up unless that overshoots by more than 10%).
fn round_to_multiple_of_8(value: f64) -> usize {
    let rounded = (8usize).max(((value + 4.0) as usize) / 8 * 8);
    if rounded as f64 >= 0.9 * value {
        rounded
    } else {
        rounded + 8
    }
}

impl MnasNetConfig {
    fn depths(&self) -> [usize; 6] {
        let alpha = self.width_percent as f64 / 100.0;
        STACKS.map(|(c, ..)| round_to_multiple_of_8(c as f64 * alpha))
    }

    /// Parse a zoo name: `[se_|dca_se_|ge_|dca_ge_]mnasnet{0_5,0_75,1_0,1_3}` (`None`: not a MnasNet name).
    pub fn parse(name: &str) -> Option<Result<Self, BackboneError>> {
        let (prefix, width) = name.split_once("mnasnet")?;
        let unknown = |reason: &str| BackboneError::UnknownModel {
            name: name.into(),
            reason: reason.into(),
        };
        let Some(attention) = MnasAttention::ALL.into_iter().find(|a| a.prefix() == prefix) else {
            return Some(Err(unknown(
                "MnasNet attention prefixes: se_, dca_se_, ge_, dca_ge_, cbam_, dca_cbam_",
            )));
        };
        let Some((_, alpha)) = WIDTHS.iter().find(|(w, _)| *w == width) else {
            return Some(Err(unknown("MnasNet widths: 0_5, 0_75, 1_0, 1_3")));
        };
        Some(Ok(Self {
            attention,
            width_percent: (alpha * 100.0).round() as usize,
            num_classes: 1000,
        }))
    }

    /// The zoo name, e.g. `dca_se_mnasnet1_0`.
    pub fn name(&self) -> String {
        let width = WIDTHS
            .iter()
            .find(|(_, a)| (a * 100.0).round() as usize == self.width_percent)
            .map_or_else(|| format!("{}pct", self.width_percent), |(w, _)| w.to_string());
        format!("{}mnasnet{width}", self.attention.prefix())
    }

    /// Build the network with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MnasNet<B> {
        let depths = self.depths();
        let mut cin = 16;
        let stacks = STACKS
            .iter()
            .zip(depths)
            .map(|(&(_, k, s, t, n), cout)| {
                let stack = (0..n)
                    .map(|i| {
                        let block_in = if i == 0 { cin } else { cout };
                        MnasBlock::new(
                            block_in,
                            cout,
                            k,
                            if i == 0 { s } else { 1 },
                            t,
                            self.attention,
                            device,
                        )
                    })
                    .collect();
                cin = cout;
                stack
            })
            .collect();
        MnasNet {
            stem_conv: ConvBnAct::new(3, 32, 3, 2, 1, Activation::Relu, device),
            stem_depthwise: ConvBnAct::new(32, 32, 3, 1, 32, Activation::Relu, device),
            stem_project: ConvBnAct::new(32, 16, 1, 1, 1, Activation::Identity, device),
            stacks,
            head: ConvBnAct::new(depths[5], LAST_CHANNELS, 1, 1, 1, Activation::Relu, device),
            classifier: LinearConfig::new(LAST_CHANNELS, self.num_classes).init(device),
            norm: NormMode::Auto,
            frozen_stacks: None,
            level_channels: [depths[0], depths[1], depths[3]],
        }
    }

    /// Key map from the reference `state_dict` keys to our module paths (`(regex, replacement)` in order).
    pub fn key_map(&self) -> Vec<(String, String)> {
        let mut map: Vec<(String, String)> = Vec::new();
        let mut rule = |from: String, to: &str| map.push((from, to.to_string()));
        // The DCA files split the reference `layers` Sequential into layers1 (stem), layers2 (stacks), layers3.
        let (stem, stack, head) = if self.attention.dca() {
            ("layers1", "layers2", "layers3")
        } else {
            ("layers", "layers", "layers")
        };
        for (slot, to) in [
            ("0", "stem_conv.conv."),
            ("1", "stem_conv.bn."),
            ("3", "stem_depthwise.conv."),
        ] {
            rule(format!(r"^{stem}\.{slot}\."), to);
        }
        for (slot, to) in [
            ("4", "stem_depthwise.bn."),
            ("6", "stem_project.conv."),
            ("7", "stem_project.bn."),
        ] {
            rule(format!(r"^{stem}\.{slot}\."), to);
        }
        let (head_conv, head_bn) = if self.attention.dca() {
            ("0", "1")
        } else {
            ("14", "15")
        };
        rule(format!(r"^{head}\.{head_conv}\."), "head.conv.");
        rule(format!(r"^{head}\.{head_bn}\."), "head.bn.");
        let first_stack = if self.attention.dca() { 0 } else { 8 };
        for s in 0..6 {
            map.push((
                format!(r"^{stack}\.{}\.(\d+)\.", s + first_stack),
                format!("stacks.{s}.$1."),
            ));
        }
        for (from, to) in [
            (r"\.layers\.0\.", ".expand.conv."),
            (r"\.layers\.1\.", ".expand.bn."),
            (r"\.layers\.3\.", ".depthwise.conv."),
            (r"\.layers\.4\.", ".depthwise.bn."),
            (r"\.layers\.6\.", ".project.conv."),
            (r"\.layers\.7\.", ".project.bn."),
            (r"\.se\.fc\.0\.", ".attention.fc1."),
            (r"\.se\.fc\.2\.", ".attention.fc2."),
            (r"\.se\.att_fc\.0\.", ".attention.match_fc1."),
            (r"\.se\.att_fc\.1\.", ".attention.match_norm1."),
            (r"\.se\.att_fc\.3\.", ".attention.match_fc2."),
            (r"\.se\.att_fc\.4\.", ".attention.match_norm2."),
            (r"\.se\.conv\.0\.", ".attention.mix.conv."),
            (r"\.se\.conv\.1\.", ".attention.mix.norm."),
            (r"\.ge\.att_fc\.0\.", ".attention.match_fc1."),
            (r"\.ge\.att_fc\.1\.", ".attention.match_norm1."),
            (r"\.ge\.conv\.0\.", ".attention.mix.conv."),
            (r"\.ge\.conv\.1\.", ".attention.mix.norm."),
            (r"\.cbam\.ChannelGate\.mlp\.1\.", ".cbam.channel.fc1."),
            (r"\.cbam\.ChannelGate\.mlp\.3\.", ".cbam.channel.fc2."),
            (r"\.cbam\.ChannelGate\.att_fc\.0\.", ".cbam.match_conv."),
            (r"\.cbam\.ChannelGate\.att_fc\.1\.", ".cbam.match_bn."),
            (r"\.cbam\.ChannelGate\.alpha\.0\.", ".cbam.alpha."),
            (r"\.cbam\.ChannelGate\.alpha\.1\.", ".cbam.alpha_norm."),
            (r"\.cbam\.SpatialGate\.spatial\.", ".cbam.spatial."),
            (r"\.cbam\.SpatialGate\.bnrelu\.0\.", ".cbam.mix_bn."),
            (r"\.cbam\.SpatialGate\.(p\d)$", ".cbam.$1"),
        ] {
            map.push((from.to_string(), to.to_string()));
        }
        map.push((r"^classifier\.1\.".into(), "classifier.".into()));
        map
    }

    /// [`MnasNetConfig::key_map`] as the zoo's static [`KeyMap`].
    pub fn static_key_map(&self) -> KeyMap {
        leak_key_map(&format!("mnasnet/{:?}", self.attention), || self.key_map())
    }
}

/// The attention of one MnasNet block: SE (optionally DCA-connected) or DCA-GE; plain GE has no parameters.
#[derive(Module, Debug)]
pub struct MnasBlockAttention<B: Backend> {
    /// SE: `Linear(C, C / 16)`.
    pub fc1: Option<Linear<B>>,
    /// SE: `Linear(C / 16, C)`.
    pub fc2: Option<Linear<B>>,
    /// DCA: the connection with the previous block's attention.
    pub mix: Option<DcaMix<B>>,
    /// DCA channel matching, first layer (`Linear(C_prev, C / 16)` for SE, `Linear(C_prev, C)` for GE).
    pub match_fc1: Option<Linear<B>>,
    /// LayerNorm after `match_fc1`.
    pub match_norm1: Option<LayerNorm<B>>,
    /// DCA-SE channel matching, second layer `Linear(C / 16, C)`.
    pub match_fc2: Option<Linear<B>>,
    /// LayerNorm after `match_fc2`.
    pub match_norm2: Option<LayerNorm<B>>,
}

impl<B: Backend> MnasBlockAttention<B> {
    fn new(cin: usize, cout: usize, kind: MnasAttention, device: &B::Device) -> Option<Self> {
        let se = matches!(kind, MnasAttention::Se | MnasAttention::DcaSe);
        let matching = kind.dca() && cin != cout;
        let hidden = cout / 16;
        let linear = |i: usize, o: usize| Some(LinearConfig::new(i, o).init(device));
        let norm = |c: usize| Some(LayerNormConfig::new(c).init(device));
        match kind {
            MnasAttention::None | MnasAttention::Ge | MnasAttention::Cbam | MnasAttention::DcaCbam => None,
            _ => Some(Self {
                fc1: if se { linear(cout, hidden) } else { None },
                fc2: if se { linear(hidden, cout) } else { None },
                mix: kind.dca().then(|| DcaMix::new(cout, true, device)),
                match_fc1: if !matching {
                    None
                } else if se {
                    linear(cin, hidden)
                } else {
                    linear(cin, cout)
                },
                match_norm1: if !matching {
                    None
                } else if se {
                    norm(hidden)
                } else {
                    norm(cout)
                },
                match_fc2: if matching && se {
                    linear(hidden, cout)
                } else {
                    None
                },
                match_norm2: if matching && se { norm(cout) } else { None },
            }),
        }
    }

    fn matched(&self, prev: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut x = prev;
        if let (Some(fc), Some(ln)) = (&self.match_fc1, &self.match_norm1) {
            x = relu(ln.forward(fc.forward(x)));
        }
        if let (Some(fc), Some(ln)) = (&self.match_fc2, &self.match_norm2) {
            x = relu(ln.forward(fc.forward(x)));
        }
        x
    }
}

/// An MnasNet inverted residual block.
#[derive(Module, Debug)]
pub struct MnasBlock<B: Backend> {
    /// 1x1 expansion.
    pub expand: ConvBnAct<B>,
    /// kxk depthwise convolution.
    pub depthwise: ConvBnAct<B>,
    /// 1x1 projection, no activation.
    pub project: ConvBnAct<B>,
    /// SE / DCA-SE / DCA-GE parameters (none for plain, GE and CBAM).
    pub attention: Option<MnasBlockAttention<B>>,
    /// CBAM or DCA-CBAM.
    pub cbam: Option<MobileCbam<B>>,
    kind: MnasAttention,
    residual: bool,
}

impl<B: Backend> MnasBlock<B> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        t: usize,
        kind: MnasAttention,
        device: &B::Device,
    ) -> Self {
        let mid = cin * t;
        Self {
            expand: ConvBnAct::new(cin, mid, 1, 1, 1, Activation::Relu, device),
            depthwise: ConvBnAct::new(mid, mid, kernel, stride, mid, Activation::Relu, device),
            project: ConvBnAct::new(mid, cout, 1, 1, 1, Activation::Identity, device),
            attention: MnasBlockAttention::new(cin, cout, kind, device),
            cbam: match kind {
                MnasAttention::Cbam => Some(MobileCbam::new(cin, cout, 8, false, device)),
                MnasAttention::DcaCbam => Some(MobileCbam::new(cin, cout, 16, true, device)),
                _ => None,
            },
            kind,
            residual: stride == 1 && cin == cout,
        }
    }

    /// # Shapes
    /// - `x`: `[N, cin, H, W]` -> `[N, cout, H / s, W / s]`; what DCA carries: see [`DcaCarry`]
    fn forward(&self, x: Tensor<B, 4>, state: DcaCarry<B>, norm: NormMode) -> (Tensor<B, 4>, DcaCarry<B>) {
        let y = self.project.forward(
            self.depthwise.forward(self.expand.forward(x.clone(), norm), norm),
            norm,
        );
        if let Some(cbam) = &self.cbam {
            let (y, state) = cbam.forward(y, state, norm);
            return (if self.residual { x + y } else { y }, state);
        }
        let state = state.vector();
        let [n, c, _, _] = y.dims();
        let (y, state) = match (self.kind, &self.attention) {
            (MnasAttention::Ge, _) => {
                let g = sigmoid(global_avg(y.clone()));
                (y * g.reshape([n, c, 1, 1]), None)
            }
            (MnasAttention::None, _) | (_, None) => (y, None),
            (kind, Some(att)) => {
                let gap = global_avg(y.clone());
                let squeezed = match (&att.mix, state) {
                    (Some(mix), Some(prev)) => mix.forward(gap.clone(), att.matched(prev)),
                    _ => gap.clone(),
                };
                let gate = match (&att.fc1, &att.fc2) {
                    (Some(fc1), Some(fc2)) => sigmoid(fc2.forward(relu(fc1.forward(squeezed)))),
                    _ => sigmoid(squeezed),
                };
                let next = kind.dca().then(|| gap * gate.clone());
                (y * gate.reshape([n, c, 1, 1]), next)
            }
        };
        let state = state.map_or(DcaCarry::None, DcaCarry::Vector);
        (if self.residual { x + y } else { y }, state)
    }

    fn flops(&self, hw: [usize; 2], has_prev: bool) -> (u64, [usize; 2]) {
        let (f1, o1) = self.expand.flops(hw);
        let (f2, o2) = self.depthwise.flops(o1);
        let (f3, out) = self.project.flops(o2);
        let c = self.project.bn.gamma.dims()[0] as u64;
        let pooled = c * (out[0] * out[1]) as u64;
        let attention = match (self.kind, &self.attention) {
            (MnasAttention::Cbam | MnasAttention::DcaCbam, _) => {
                // The previous block's output (what DCA carries) has this block's input shape.
                let cin = self.expand.conv.weight.dims()[1];
                let prev = has_prev.then_some([cin, hw[0], hw[1]]);
                self.cbam
                    .as_ref()
                    .map_or(0, |cbam| cbam.flops([c as usize, out[0], out[1]], prev))
            }
            (MnasAttention::None, _) => 0,
            (MnasAttention::Ge, _) => pooled,
            (_, None) => 0,
            (_, Some(att)) => {
                let se = match (&att.fc1, &att.fc2) {
                    (Some(fc1), Some(fc2)) => {
                        linear_flops(fc1) + fc1.weight.dims()[1] as u64 + linear_flops(fc2)
                    }
                    _ => 0,
                };
                // The connection runs from the second block on: matching layers (Linear + ReLU each), the 2 -> 1
                // conv (2 MACs and a bias per channel) and its ReLU.
                let connection = if has_prev && att.mix.is_some() {
                    let matching: u64 = [&att.match_fc1, &att.match_fc2]
                        .into_iter()
                        .flatten()
                        .map(|fc| linear_flops(fc) + fc.weight.dims()[1] as u64)
                        .sum();
                    matching + 3 * c + c
                } else {
                    0
                };
                pooled + se + connection
            }
        };
        (f1 + f2 + f3 + attention, out)
    }
}

/// MnasNet (any attention variant) with its classification head.
#[derive(Module, Debug)]
pub struct MnasNet<B: Backend> {
    /// 3x3 stride-2 conv, 32 channels.
    pub stem_conv: ConvBnAct<B>,
    /// 3x3 depthwise conv.
    pub stem_depthwise: ConvBnAct<B>,
    /// 1x1 projection to 16 channels, no activation.
    pub stem_project: ConvBnAct<B>,
    /// The six stacks of blocks.
    pub stacks: Vec<Vec<MnasBlock<B>>>,
    /// Final 1x1 conv to 1280 channels.
    pub head: ConvBnAct<B>,
    /// Classifier (`classifier.1`).
    pub classifier: Linear<B>,
    norm: NormMode,
    /// The stem and stacks before this index are frozen.
    frozen_stacks: Option<usize>,
    level_channels: [usize; 3],
}

/// Stage `k` (1-based, for `frozen_stages`) ends after this many stacks.
const STAGE_ENDS: [usize; 4] = [1, 2, 4, 6];

impl<B: Backend> MnasNet<B> {
    /// Set how the BatchNorm layers normalise.
    pub fn with_norm_mode(mut self, norm: NormMode) -> Self {
        self.norm = norm;
        self
    }

    /// Freeze the stem and the first `stages` stages (stage `k` ends at level C`k+1`; 0 = stem only).
    pub fn with_frozen_stages(mut self, stages: usize) -> Self {
        let end = if stages == 0 {
            0
        } else {
            STAGE_ENDS[stages.min(4) - 1]
        };
        self.stem_conv = self.stem_conv.no_grad();
        self.stem_depthwise = self.stem_depthwise.no_grad();
        self.stem_project = self.stem_project.no_grad();
        self.stacks = freeze_prefix(self.stacks, end);
        if stages >= 4 {
            self.head = self.head.no_grad();
        }
        self.frozen_stacks = Some(end);
        self
    }

    /// The norm mode of stack `i` (`None`: the stem, `Some(6)`: the final conv).
    fn norm_of(&self, stack: Option<usize>) -> NormMode {
        frozen_norm(self.frozen_stacks, stack, self.stacks.len(), self.norm)
    }

    fn run(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let stem = self.norm_of(None);
        let mut x = self.stem_project.forward(
            self.stem_depthwise.forward(self.stem_conv.forward(x, stem), stem),
            stem,
        );
        let mut state = DcaCarry::None;
        let mut levels = Vec::with_capacity(4);
        for (s, stack) in self.stacks.iter().enumerate() {
            for block in stack {
                let (y, next) = block.forward(x, state, self.norm_of(Some(s)));
                x = y;
                state = next;
            }
            if LEVEL_STACKS.contains(&s) {
                levels.push(x.clone());
            }
        }
        levels.push(self.head.forward(x, self.norm_of(Some(6))));
        levels
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, H, W]` -> `[N, num_classes]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let last = self.run(x).pop().expect("four levels");
        pooled_logits(&self.classifier, last)
    }

    /// Channels of the C2, C3, C4 levels (outputs of stacks 1, 2, 4).
    fn block_level_channels(&self) -> [usize; 3] {
        self.level_channels
    }

    /// Per block (in order): the DCA connection weights `(alpha, beta)`, if the block has one.
    pub fn dca_connections(&self) -> Vec<Option<(f32, f32)>> {
        self.stacks
            .iter()
            .flatten()
            .map(|b| {
                b.attention
                    .as_ref()
                    .and_then(|a| a.mix.as_ref())
                    .map(DcaMix::alpha_beta)
                    .or_else(|| b.cbam.as_ref().and_then(MobileCbam::alpha_beta))
            })
            .collect()
    }
}

impl_mobile_backbone!(MnasNet, LAST_CHANNELS);

impl<B: Backend> CountFlops for MnasNet<B> {
    /// One row per stem layer, block, final conv and classifier.
    fn count_flops(&self, counter: &mut CostCounter, x: Chw) -> Chw {
        let mut cur = [x[1], x[2]];
        for (name, layer) in [
            ("stem_conv", &self.stem_conv),
            ("stem_depthwise", &self.stem_depthwise),
            ("stem_project", &self.stem_project),
        ] {
            let (flops, out) = layer.flops(cur);
            let c = layer.bn.gamma.dims()[0];
            counter.record(name, "ConvBN", parameter_count(layer), flops, [c, out[0], out[1]]);
            cur = out;
        }
        let mut first = true;
        for (s, stack) in self.stacks.iter().enumerate() {
            for (i, block) in stack.iter().enumerate() {
                let cost = block.flops(cur, !first);
                first = false;
                cur = cost.1;
                let c = block.project.bn.gamma.dims()[0];
                record_block(counter, &format!("stacks.{s}.{i}"), block, cost, c);
            }
        }
        record_head(counter, &self.head, &self.classifier, cur)
    }
}
