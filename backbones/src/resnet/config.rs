//! Typed configuration of the ResNet family, and its zoo names.

use serde::{Deserialize, Serialize};

use crate::error::BackboneError;

/// Residual block type of a depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// Two 3x3 convolutions, expansion 1 (ResNet-18/34).
    Basic,
    /// 1x1, 3x3, 1x1 convolutions, expansion 4 (ResNet-50/101/152).
    Bottleneck,
}

impl BlockKind {
    /// Output channels per `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The attention module each residual block carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum AttentionKind {
    /// Plain ResNet.
    None,
    /// Squeeze-and-excitation (reduction 16) after the last BatchNorm of the residual branch.
    Se,
    /// ECA: a 1-D convolution across the pooled channels, one kernel size per stage.
    Eca {
        /// Kernel size of stages 1..4 (odd).
        k_sizes: [usize; 4],
    },
    /// CBAM: channel gate (avg + max pooled MLP, reduction 16) then spatial gate (7x7 conv on channel max/mean).
    Cbam,
    /// Global context block (attention pooling, `channel_add` fusion, ratio 1/16).
    Gc,
    /// Selective kernel (the DCANet repository's `sk2`): a 3x3 and a dilated 3x3 branch mixed by softmax
    /// attention, in bottleneck blocks. As in the reference code, basic blocks (depths 18, 34) stay plain.
    Sk,
    /// Gather-excite theta-minus: `x * sigmoid(global average of x)`; no parameters.
    Ge,
}

impl AttentionKind {
    /// Zoo prefix (`se`, `eca`, ...), empty for plain.
    pub fn prefix(&self) -> &'static str {
        match self {
            AttentionKind::None => "",
            AttentionKind::Se => "se",
            AttentionKind::Eca { .. } => "eca",
            AttentionKind::Cbam => "cbam",
            AttentionKind::Gc => "gc",
            AttentionKind::Sk => "sk",
            AttentionKind::Ge => "ge",
        }
    }
}

/// How a DCA block combines its own pooled descriptor with the previous block's attention (DCANet Table 2a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DcaConnection {
    /// The official code: a learned 1x1 convolution over the two (alpha, beta and a bias), then LayerNorm and
    /// ReLU ("weighted" in the paper's sense, with normalisation).
    #[default]
    Weighted,
    /// Plain sum of the two.
    Direct,
    /// Softmax-normalised learned weights over the two.
    Softmax,
}

/// How a DCA block matches a previous attention with a different channel count (Table 2e).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DcaChannelMatch {
    /// The official code: one fully connected layer (then LayerNorm, ReLU).
    #[default]
    OneFc,
    /// Two fully connected layers with a bottleneck of `C / reduction` (the paper's Table 1 parameter counts).
    TwoFc {
        /// Bottleneck reduction.
        reduction: usize,
    },
}

/// How DCA-CBAM's spatial attention is brought to a smaller resolution (Table 2c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DcaSpatialMatch {
    /// The official code: average pooling.
    #[default]
    Avg,
    /// Max pooling.
    Max,
}

/// Which CBAM gates are connected across blocks (Table 2b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DcaCbamGates {
    /// The official code: both the channel and the spatial gate.
    #[default]
    Both,
    /// The channel gate only.
    Channel,
    /// The spatial gate only.
    Spatial,
}

/// Deep connected attention (DCANet) options; the defaults build the official code's networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DcaConfig {
    /// Connection schema.
    pub connection: DcaConnection,
    /// Channel matching.
    pub channel_match: DcaChannelMatch,
    /// Spatial matching (CBAM only).
    pub spatial_match: DcaSpatialMatch,
    /// Connected gates (CBAM only).
    pub cbam_gates: DcaCbamGates,
}

/// A ResNet of the family: depth, attention, DCA, classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// 18, 34, 50, 101 or 152.
    pub depth: usize,
    /// Attention module of every block.
    pub attention: AttentionKind,
    /// Deep connected attention on top of it (`dca_` names); `None` for the plain attention network.
    pub dca: Option<DcaConfig>,
    /// Classes of the classification head.
    pub num_classes: usize,
}

/// ECA-Net's adaptive kernel size for `channels`: the odd number nearest to `|log2(C) / 2 + 1 / 2|`
/// (gamma = 2, b = 1), as `t if t odd else t + 1` with `t = int(|log2(C) + 1| / 2)`.
pub fn eca_adaptive_k(channels: usize) -> usize {
    let t = (((channels as f64).log2() + 1.0).abs() / 2.0) as usize;
    if t % 2 == 1 { t } else { t + 1 }
}

impl ResNetConfig {
    /// A plain ResNet with 1000 classes.
    pub fn plain(depth: usize) -> Self {
        Self {
            depth,
            attention: AttentionKind::None,
            dca: None,
            num_classes: 1000,
        }
    }

    /// Blocks per stage and block type.
    pub fn layout(&self) -> Result<([usize; 4], BlockKind), BackboneError> {
        Ok(match self.depth {
            18 => ([2, 2, 2, 2], BlockKind::Basic),
            34 => ([3, 4, 6, 3], BlockKind::Basic),
            50 => ([3, 4, 6, 3], BlockKind::Bottleneck),
            101 => ([3, 4, 23, 3], BlockKind::Bottleneck),
            152 => ([3, 8, 36, 3], BlockKind::Bottleneck),
            d => {
                return Err(self.invalid("depth", format!("{d} is not one of 18, 34, 50, 101, 152")));
            }
        })
    }

    fn invalid(&self, field: &str, reason: String) -> BackboneError {
        BackboneError::InvalidConfig {
            model: self.name(),
            field: field.into(),
            reason,
        }
    }

    /// Check the combination is one the reference code defines.
    pub fn validate(&self) -> Result<(), BackboneError> {
        let (_, kind) = self.layout()?;
        if self.num_classes == 0 {
            return Err(self.invalid("num_classes", "must be at least 1".into()));
        }
        if let AttentionKind::Eca { k_sizes } = &self.attention
            && let Some(k) = k_sizes.iter().find(|k| **k % 2 == 0 || **k == 0)
        {
            return Err(self.invalid("attention.k_sizes", format!("kernel size {k} is not odd")));
        }
        if self.attention == AttentionKind::Sk && kind == BlockKind::Basic && self.dca.is_some() {
            return Err(self.invalid("dca", "DCA-SK needs a bottleneck depth (50, 101, 152)".into()));
        }
        if let Some(d) = &self.dca {
            let vector = matches!(self.attention, AttentionKind::Se | AttentionKind::Ge);
            if !vector
                && (d.connection != DcaConnection::Weighted || d.channel_match != DcaChannelMatch::OneFc)
            {
                return Err(self.invalid(
                    "dca",
                    "connection and channel_match options apply to DCA-SE and DCA-GE".into(),
                ));
            }
            if let DcaChannelMatch::TwoFc { reduction } = d.channel_match
                && (reduction == 0 || 256 % reduction != 0)
            {
                return Err(self.invalid(
                    "dca.channel_match.reduction",
                    format!("{reduction} does not divide 256"),
                ));
            }
            let cbam = self.attention == AttentionKind::Cbam;
            if !cbam && (d.spatial_match != DcaSpatialMatch::Avg || d.cbam_gates != DcaCbamGates::Both) {
                return Err(self.invalid(
                    "dca",
                    "spatial_match and cbam_gates options apply to DCA-CBAM".into(),
                ));
            }
        }
        if self.dca.is_some() {
            match self.attention {
                AttentionKind::None | AttentionKind::Eca { .. } => {
                    return Err(
                        self.invalid("dca", format!("no DCA version of `{}`", self.attention.prefix()))
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The zoo name (`resnet50`, `dca_se_resnet50`, `eca_resnet50_k3557`).
    pub fn name(&self) -> String {
        let mut name = String::new();
        if self.dca.is_some() {
            name.push_str("dca_");
        }
        let prefix = self.attention.prefix();
        if !prefix.is_empty() {
            name.push_str(prefix);
            name.push('_');
        }
        name.push_str(&format!("resnet{}", self.depth));
        if let AttentionKind::Eca { k_sizes } = &self.attention
            && *k_sizes != [3, 3, 3, 3]
        {
            name.push_str("_k");
            for k in k_sizes {
                name.push_str(&k.to_string());
            }
        }
        name
    }

    /// Parse a zoo name: `[dca_][se_|eca_|cbam_|gc_|sk_|ge_]resnet{18,34,50,101,152}`, ECA with an optional
    /// `_kABCD` (per-stage kernel sizes, single digits as in the ECA-Net release names) or `_kadaptive`.
    /// Returns `None` when the name is not of the ResNet family.
    pub fn parse(name: &str) -> Option<Result<Self, BackboneError>> {
        let unknown = |reason: String| BackboneError::UnknownModel {
            name: name.into(),
            reason,
        };
        let (dca, rest) = match name.strip_prefix("dca_") {
            Some(rest) => (Some(DcaConfig::default()), rest),
            None => (None, name),
        };
        let (attention, rest) = [
            ("se_", AttentionKind::Se),
            ("eca_", AttentionKind::Eca { k_sizes: [3; 4] }),
            ("cbam_", AttentionKind::Cbam),
            ("gc_", AttentionKind::Gc),
            ("sk_", AttentionKind::Sk),
            ("ge_", AttentionKind::Ge),
        ]
        .into_iter()
        .find_map(|(p, a)| rest.strip_prefix(p).map(|r| (a, r)))
        .unwrap_or((AttentionKind::None, rest));
        let rest = rest.strip_prefix("resnet")?;
        let (depth_str, suffix) = match rest.split_once('_') {
            Some((d, s)) => (d, Some(s)),
            None => (rest, None),
        };
        let Ok(depth) = depth_str.parse::<usize>() else {
            return Some(Err(unknown(format!(
                "`{depth_str}` is not a depth (18, 34, 50, 101, 152)"
            ))));
        };
        let mut cfg = ResNetConfig {
            depth,
            attention,
            dca,
            num_classes: 1000,
        };
        let kind = match cfg.layout() {
            Ok((_, kind)) => kind,
            Err(e) => return Some(Err(unknown(e.to_string()))),
        };
        if let Some(suffix) = suffix {
            let AttentionKind::Eca { k_sizes } = &mut cfg.attention else {
                return Some(Err(unknown(format!(
                    "unexpected suffix `_{suffix}` (only eca_ names take `_kABCD`)"
                ))));
            };
            match suffix.strip_prefix('k') {
                Some("adaptive") => {
                    for (i, k) in k_sizes.iter_mut().enumerate() {
                        *k = eca_adaptive_k((64 << i) * kind.expansion());
                    }
                }
                Some(digits) if digits.len() == 4 && digits.chars().all(|c| c.is_ascii_digit()) => {
                    for (k, c) in k_sizes.iter_mut().zip(digits.chars()) {
                        *k = c.to_digit(10).unwrap_or(0) as usize;
                    }
                }
                _ => {
                    return Some(Err(unknown(format!(
                        "ECA suffix `_{suffix}` is neither `_kABCD` (4 odd digits) nor `_kadaptive`"
                    ))));
                }
            }
        }
        Some(cfg.validate().map(|()| cfg).map_err(|e| unknown(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "resnet18",
            "resnet152",
            "se_resnet50",
            "dca_se_resnet101",
            "eca_resnet50_k3557",
            "eca_resnet18",
            "cbam_resnet34",
            "dca_cbam_resnet50",
            "gc_resnet50",
            "dca_gc_resnet18",
            "sk_resnet50",
            "dca_sk_resnet152",
            "ge_resnet50",
            "dca_ge_resnet50",
        ] {
            let cfg = ResNetConfig::parse(name).unwrap().unwrap();
            assert_eq!(cfg.name(), name);
        }
    }

    #[test]
    fn eca_kernels() {
        let cfg = ResNetConfig::parse("eca_resnet50_k3557").unwrap().unwrap();
        assert_eq!(
            cfg.attention,
            AttentionKind::Eca {
                k_sizes: [3, 5, 5, 7]
            }
        );
        // Adaptive rule by hand: C=256: log2=8, (8+1)/2=4.5 -> 4 -> even -> 5; C=512: (9+1)/2=5 -> 5;
        // C=1024: 5.5 -> 5; C=2048: 6 -> 7. For ResNet-18 (64..512): 64: 3.5 -> 3; 128: 4 -> 5; 256: 5; 512: 5.
        let cfg = ResNetConfig::parse("eca_resnet50_kadaptive").unwrap().unwrap();
        assert_eq!(
            cfg.attention,
            AttentionKind::Eca {
                k_sizes: [5, 5, 5, 7]
            }
        );
        let cfg = ResNetConfig::parse("eca_resnet18_kadaptive").unwrap().unwrap();
        assert_eq!(
            cfg.attention,
            AttentionKind::Eca {
                k_sizes: [3, 5, 5, 5]
            }
        );
    }

    #[test]
    fn bad_names_are_rejected_with_reason() {
        assert!(ResNetConfig::parse("mobilenet_v2").is_none());
        assert!(ResNetConfig::parse("").is_none());
        for bad in [
            "resnet51",
            "resnetx",
            "eca_resnet50_k3456",
            "se_resnet50_k3557",
            "dca_sk_resnet18",
            "dca_resnet50",
        ] {
            let err = ResNetConfig::parse(bad).unwrap().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
