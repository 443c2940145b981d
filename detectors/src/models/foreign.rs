//! Whole-detector checkpoints of other frameworks: a PyTorch file (`torch.save`) holding a detector trained
//! with mmdetection or torchvision, read into an [`AnyDetector`] built from the matching config (whose
//! `layout` names the framework, see [`crate::config::Layout`]).
//!
//! The file is mmdetection's runner layout `{"meta": ..., "state_dict": ...}` or a bare state dict (keys with
//! or without DataParallel's `module.` prefix). Each key is mapped onto our module path by the part it belongs
//! to ([`mmdet_key_map`], [`torchvision_key_map`]):
//!
//! | part | mmdetection | torchvision | ours |
//! |---|---|---|---|
//! | backbone | `backbone.*` | `backbone.body.*` | `backbone.*` through the zoo family's key map (as for backbone checkpoints) |
//! | FPN | `neck.lateral_convs.i.conv.*`, `neck.fpn_convs.i.conv.*` | `backbone.fpn.inner_blocks.i.0.*`, `layer_blocks.i.0.*` (older files: without `.0`), `extra_blocks.p6`/`p7` | `neck.lateral_convs.i.*`, `neck.fpn_convs.i.*` (extra levels after the used ones) |
//! | RPN | `rpn_head.rpn_conv.*`, `rpn_cls`, `rpn_reg` | `rpn.head.conv.0.0.*` (older: `conv.*`), `cls_logits`, `bbox_pred` | `rpn_head.rpn_conv.*`, `rpn_cls`, `rpn_reg` |
//! | RoI head | `roi_head.bbox_head.shared_fcs.i.*`, `fc_cls` (K + 1 rows, background last), `fc_reg` (4 K) | `roi_heads.box_head.fc6`/`fc7`, `box_predictor.cls_score` (K + 1 rows, background first), `bbox_pred` (4 (K + 1)) | `roi_head.bbox_head.shared_fcs.i.*`, `fc_cls`, `fc_reg` |
//! | RetinaNet | `bbox_head.{cls,reg}_convs.i.conv.*`, `bbox_head.retina_cls.*`, `retina_reg` | `head.{classification,regression}_head.conv.i.0.*`, `cls_logits`, `bbox_reg` | `bbox_head.{cls,reg}_convs.i.*`, `retina_cls`, `retina_reg` |
//! | mask head | `roi_head.mask_head.convs.i.conv.*`, `upsample`, `conv_logits` (K rows) | `roi_heads.mask_head.i.0.*` (older: `mask_fcn{i+1}`), `roi_heads.mask_predictor.conv5_mask`, `mask_fcn_logits` (K + 1 rows, background first) | `roi_head.mask_head.convs.i.*`, `upsample`, `conv_logits` |
//!
//! Tensors are applied with burn's PyTorch adapter: Linear weights are transposed (PyTorch `[out, in]`, burn
//! `[in, out]`), BatchNorm (and torchvision's FrozenBatchNorm2d) `weight`/`bias` become `gamma`/`beta`, conv
//! weights are taken as they are. mmdetection's class order (K contiguous labels, background last) is ours, so
//! no row is moved. torchvision's Faster R-CNN classifier has its background first: its rows `1..=K` become
//! ours `0..K` and its row 0 our last (a softmax does not depend on the order of its inputs, so every score
//! is torchvision's), and the 4 regression rows of its background, which inference and training never read,
//! are dropped; so is the background's row of its Mask R-CNN mask logits (`mask_fcn_logits`, whose rows
//! `1..=K` become ours `0..K`: masks are read for the detected class only). torchvision's RetinaNet rows (91,
//! class 0 included) are taken as they are.
//!
//! Loading is strict: every tensor of the model must be found with its shape (only the backbone's
//! classification head, which detection checkpoints lack, may be absent) and every tensor of the file must be
//! used; otherwise one [`ForeignError::Mismatch`] names every missing, unexpected and mis-shaped key in the
//! file's naming. A classifier whose class count differs from the config's is reported first, as
//! [`ForeignError::ClassCount`]. A checkpoint of the other layout than the config's is refused with
//! [`ForeignError::Torchvision`] or [`ForeignError::Mmdetection`], naming the first key that shows it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use attndet_backbones::BackboneArch;
use attndet_backbones::KeyMismatch;
use attndet_backbones::checkpoint::{mismatch_of, tensor_shapes};
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter};
use burn_store::pytorch::PytorchReader;
use burn_store::{ApplyError, TensorSnapshot};
use regex::Regex;

use super::AnyDetector;
use crate::config::{Layout, ModelConfig, RoiHeadConfig};

/// A whole-detector checkpoint that cannot be read into the configured detector. Every variant is bad input
/// (a wrong file, or a file for another config).
#[derive(Debug, thiserror::Error)]
pub enum ForeignError {
    /// The file could not be opened or parsed as a PyTorch checkpoint.
    #[error("cannot read checkpoint {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        reason: String,
    },
    /// The config cannot be mapped (e.g. an unknown backbone name).
    #[error("checkpoint {}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint is in torchvision's layout, the config in mmdetection's.
    #[error(
        "checkpoint {} is a torchvision detector (key `{key}`), but the config describes an mmdetection-layout \
         {model} (`model.layout` is \"mmdetection\"): give an mmdetection checkpoint, or a config of \
         torchvision's layout such as configs/torchvision/fasterrcnn_resnet50_fpn.json",
        path.display()
    )]
    Torchvision {
        /// The file.
        path: PathBuf,
        /// The first torchvision key found.
        key: String,
        /// The config's detector type.
        model: String,
    },
    /// The checkpoint is in mmdetection's layout, the config in torchvision's.
    #[error(
        "checkpoint {} is an mmdetection detector (key `{key}`), but the config describes a torchvision-layout \
         {model} (`model.layout` is \"torchvision\"): give a torchvision checkpoint (backbone.body.*, \
         backbone.fpn.*, rpn.head.*, roi_heads.*, head.*), or an mmdetection config",
        path.display()
    )]
    Mmdetection {
        /// The file.
        path: PathBuf,
        /// The first mmdetection key found.
        key: String,
        /// The config's detector type.
        model: String,
    },
    /// The checkpoint's classifier has another number of classes than the config.
    #[error(
        "checkpoint {}: `{key}` has {rows} rows, i.e. {found} classes, but the config has {expected} classes \
         ({field})",
        path.display()
    )]
    ClassCount {
        /// The file.
        path: PathBuf,
        /// The classifier key.
        key: String,
        /// Its number of rows (output channels).
        rows: usize,
        /// The classes those rows stand for.
        found: usize,
        /// The config's classes.
        expected: usize,
        /// The config field.
        field: String,
    },
    /// Missing, unexpected or mis-shaped keys, all of them by name.
    #[error("checkpoint {} does not fit the config's {model}:\n{mismatch}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The detector type.
        model: String,
        /// The keys at fault (mmdetection names; missing ones as the file would name them).
        mismatch: KeyMismatch,
    },
}

/// What a successful load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSummary {
    /// Tensors written into the model.
    pub applied: usize,
    /// Tensors of the file (counters such as BatchNorm's `num_batches_tracked` included).
    pub in_file: usize,
}

/// `(regex, replacement)` rules from one part's mmdetection keys to our module paths, applied in order (each
/// rule to the whole key, like burn-store's key remapping).
pub type Rules = Vec<(String, String)>;

/// One part of a detector: the key prefix it owns in the file, its rules (to our paths) and the reverse rules
/// (our paths to the file's names, used to name missing keys), and the model paths that may stay unset.
#[derive(Debug, Clone)]
pub struct PartMap {
    /// Key prefix in the file, e.g. `neck.`.
    pub prefix: String,
    /// The prefix of the part's paths in our model (mmdetection: the file's `prefix`).
    pub our_prefix: String,
    /// File key -> our path.
    pub to_ours: Rules,
    /// Our path -> file key.
    pub to_file: Rules,
    /// Our path prefixes that the file may lack.
    pub optional: Vec<String>,
}

/// mmdetection's `ConvModule` wraps each conv as `.conv`: `PREFIX.NAME.i.conv.` -> `PREFIX.NAME.i.`.
fn conv_module_part(prefix: &str, lists: &[&str]) -> PartMap {
    let names = lists.join("|");
    let p = regex::escape(prefix);
    PartMap {
        prefix: prefix.to_string(),
        our_prefix: prefix.to_string(),
        to_ours: vec![(
            format!(r"^{p}({names})\.(\d+)\.conv\."),
            format!("{prefix}$1.$2."),
        )],
        to_file: vec![(format!(r"^{p}({names})\.(\d+)\."), format!("{prefix}$1.$2.conv."))],
        optional: Vec::new(),
    }
}

/// A part whose keys are ours unchanged.
fn same_part(prefix: &str) -> PartMap {
    PartMap {
        prefix: prefix.to_string(),
        our_prefix: prefix.to_string(),
        to_ours: Vec::new(),
        to_file: Vec::new(),
        optional: Vec::new(),
    }
}

/// The backbone part: `backbone.` removed, the zoo family's key map applied (the same rules as for a
/// backbone checkpoint), `backbone.` put back; its classification head may be absent.
fn backbone_part(name: &str) -> Result<PartMap, String> {
    let arch = BackboneArch::parse(name).map_err(|e| format!("model.backbone.name: {e}"))?;
    let mut to_ours = vec![(r"^backbone\.".to_string(), String::new())];
    to_ours.extend(
        arch.key_map()
            .iter()
            .map(|(from, to)| (from.to_string(), to.to_string())),
    );
    to_ours.push(("^".to_string(), "backbone.".to_string()));
    Ok(PartMap {
        prefix: "backbone.".to_string(),
        our_prefix: "backbone.".to_string(),
        to_ours,
        to_file: Vec::new(),
        optional: arch
            .head_paths()
            .iter()
            .map(|p| format!("backbone.{p}"))
            .collect(),
    })
}

/// The parts of the configured detector in mmdetection's layout.
///
/// # Errors
/// An unknown backbone name (the message names `model.backbone.name`).
pub fn mmdet_key_map(cfg: &ModelConfig) -> Result<Vec<PartMap>, String> {
    let mut parts = vec![
        backbone_part(&cfg.backbone().name)?,
        conv_module_part("neck.", &["lateral_convs", "fpn_convs"]),
    ];
    match cfg {
        ModelConfig::RetinaNet(_) => {
            parts.push(conv_module_part("bbox_head.", &["cls_convs", "reg_convs"]));
        }
        ModelConfig::Rpn(_) => parts.push(same_part("rpn_head.")),
        ModelConfig::FasterRcnn(_) => {
            parts.push(same_part("rpn_head."));
            parts.push(same_part("roi_head."));
        }
        ModelConfig::MaskRcnn(_) => {
            parts.push(same_part("rpn_head."));
            // the mask head's convs are ConvModules (`convs.i.conv.*`); its deconvolution and logits are not
            parts.push(conv_module_part("roi_head.mask_head.", &["convs"]));
            parts.push(same_part("roi_head."));
        }
        ModelConfig::CascadeRcnn(c) => {
            parts.push(same_part("rpn_head."));
            // `roi_head.bbox_head.{i}.*` are ours unchanged; each stage's mask head has ConvModule convs
            if c.roi_head.has_mask() {
                for i in 0..cascade_stages(&c.roi_head) {
                    parts.push(conv_module_part(&format!("roi_head.mask_head.{i}."), &["convs"]));
                }
            }
            parts.push(same_part("roi_head."));
        }
    }
    Ok(parts)
}

/// Stages of a cascade RoI head (1 for any other head).
fn cascade_stages(h: &RoiHeadConfig) -> usize {
    match h {
        RoiHeadConfig::Cascade(c) => c.num_stages,
        RoiHeadConfig::Standard(_) => 1,
    }
}

/// A part of torchvision's layout: its file prefix, our prefix and `(file regex, ours)` rules whose reverse
/// (`(ours regex, file)`) names missing keys.
fn tv_part(prefix: &str, our_prefix: &str, rules: &[(&str, &str, &str, &str)]) -> PartMap {
    PartMap {
        prefix: prefix.to_string(),
        our_prefix: our_prefix.to_string(),
        to_ours: rules
            .iter()
            .map(|(from, to, _, _)| (from.to_string(), to.to_string()))
            .collect(),
        to_file: rules
            .iter()
            .map(|(_, _, from, to)| (from.to_string(), to.to_string()))
            .collect(),
        optional: Vec::new(),
    }
}

/// The parts of the configured detector in torchvision's layout; `fpn_levels` is the number of backbone
/// levels the FPN uses (its extra convs, torchvision's `p6`/`p7`, follow them in our `fpn_convs`).
///
/// # Errors
/// An unknown backbone name, or a detector torchvision's layout is not mapped for (Cascade R-CNN, an RPN
/// alone).
pub fn torchvision_key_map(cfg: &ModelConfig, fpn_levels: usize) -> Result<Vec<PartMap>, String> {
    let mut backbone = backbone_part(&cfg.backbone().name)?;
    backbone.prefix = "backbone.body.".into();
    backbone.to_ours[0].0 = r"^backbone\.body\.".into();
    backbone.to_file = vec![(r"^backbone\.".into(), "backbone.body.".into())];
    let (p6, p7) = (fpn_levels, fpn_levels + 1);
    let extra_ours = [
        format!(r"^neck\.fpn_convs\.{p6}\."),
        format!(r"^neck\.fpn_convs\.{p7}\."),
    ];
    let extra_to = [format!("neck.fpn_convs.{p6}."), format!("neck.fpn_convs.{p7}.")];
    let fpn = tv_part(
        "backbone.fpn.",
        "neck.",
        &[
            (
                r"^backbone\.fpn\.extra_blocks\.p6\.",
                &extra_to[0],
                &extra_ours[0],
                "backbone.fpn.extra_blocks.p6.",
            ),
            (
                r"^backbone\.fpn\.extra_blocks\.p7\.",
                &extra_to[1],
                &extra_ours[1],
                "backbone.fpn.extra_blocks.p7.",
            ),
            (
                r"^backbone\.fpn\.inner_blocks\.(\d+)\.(0\.)?",
                "neck.lateral_convs.$1.",
                r"^neck\.lateral_convs\.(\d+)\.",
                "backbone.fpn.inner_blocks.$1.0.",
            ),
            (
                r"^backbone\.fpn\.layer_blocks\.(\d+)\.(0\.)?",
                "neck.fpn_convs.$1.",
                r"^neck\.fpn_convs\.(\d+)\.",
                "backbone.fpn.layer_blocks.$1.0.",
            ),
        ],
    );
    let rpn = || {
        tv_part(
            "rpn.head.",
            "rpn_head.",
            &[
                (
                    r"^rpn\.head\.conv\.(0\.0\.)?",
                    "rpn_head.rpn_conv.",
                    r"^rpn_head\.rpn_conv\.",
                    "rpn.head.conv.0.0.",
                ),
                (
                    r"^rpn\.head\.cls_logits\.",
                    "rpn_head.rpn_cls.",
                    r"^rpn_head\.rpn_cls\.",
                    "rpn.head.cls_logits.",
                ),
                (
                    r"^rpn\.head\.bbox_pred\.",
                    "rpn_head.rpn_reg.",
                    r"^rpn_head\.rpn_reg\.",
                    "rpn.head.bbox_pred.",
                ),
            ],
        )
    };
    let mut parts = vec![backbone, fpn];
    match cfg {
        ModelConfig::RetinaNet(_) => parts.push(tv_part(
            "head.",
            "bbox_head.",
            &[
                (
                    r"^head\.classification_head\.conv\.(\d+)\.0\.",
                    "bbox_head.cls_convs.$1.",
                    r"^bbox_head\.cls_convs\.(\d+)\.",
                    "head.classification_head.conv.$1.0.",
                ),
                (
                    r"^head\.classification_head\.cls_logits\.",
                    "bbox_head.retina_cls.",
                    r"^bbox_head\.retina_cls\.",
                    "head.classification_head.cls_logits.",
                ),
                (
                    r"^head\.regression_head\.conv\.(\d+)\.0\.",
                    "bbox_head.reg_convs.$1.",
                    r"^bbox_head\.reg_convs\.(\d+)\.",
                    "head.regression_head.conv.$1.0.",
                ),
                (
                    r"^head\.regression_head\.bbox_reg\.",
                    "bbox_head.retina_reg.",
                    r"^bbox_head\.retina_reg\.",
                    "head.regression_head.bbox_reg.",
                ),
            ],
        )),
        ModelConfig::FasterRcnn(_) | ModelConfig::MaskRcnn(_) => {
            parts.push(rpn());
            let mut roi_heads = tv_part(
                "roi_heads.",
                "roi_head.",
                &[
                    (
                        r"^roi_heads\.box_head\.fc6\.",
                        "roi_head.bbox_head.shared_fcs.0.",
                        r"^roi_head\.bbox_head\.shared_fcs\.0\.",
                        "roi_heads.box_head.fc6.",
                    ),
                    (
                        r"^roi_heads\.box_head\.fc7\.",
                        "roi_head.bbox_head.shared_fcs.1.",
                        r"^roi_head\.bbox_head\.shared_fcs\.1\.",
                        "roi_heads.box_head.fc7.",
                    ),
                    (
                        r"^roi_heads\.box_predictor\.cls_score\.",
                        "roi_head.bbox_head.fc_cls.",
                        r"^roi_head\.bbox_head\.fc_cls\.",
                        "roi_heads.box_predictor.cls_score.",
                    ),
                    (
                        r"^roi_heads\.box_predictor\.bbox_pred\.",
                        "roi_head.bbox_head.fc_reg.",
                        r"^roi_head\.bbox_head\.fc_reg\.",
                        "roi_heads.box_predictor.bbox_pred.",
                    ),
                    // Mask R-CNN: `MaskRCNNHeads` (a Conv2dNormActivation, conv then ReLU, per conv) and
                    // `MaskRCNNPredictor`
                    (
                        r"^roi_heads\.mask_head\.(\d+)\.0\.",
                        "roi_head.mask_head.convs.$1.",
                        r"^roi_head\.mask_head\.convs\.(\d+)\.",
                        "roi_heads.mask_head.$1.0.",
                    ),
                    (
                        r"^roi_heads\.mask_predictor\.conv5_mask\.",
                        "roi_head.mask_head.upsample.",
                        r"^roi_head\.mask_head\.upsample\.",
                        "roi_heads.mask_predictor.conv5_mask.",
                    ),
                    (
                        r"^roi_heads\.mask_predictor\.mask_fcn_logits\.",
                        "roi_head.mask_head.conv_logits.",
                        r"^roi_head\.mask_head\.conv_logits\.",
                        "roi_heads.mask_predictor.mask_fcn_logits.",
                    ),
                ],
            );
            // torchvision before 0.13 named the mask convs `mask_fcn1, mask_fcn2, ...` (its released COCO
            // weights still do; torchvision renames them on load): numbered from 1, so one rule per conv
            let convs = match cfg {
                ModelConfig::MaskRcnn(c) => match &c.roi_head {
                    RoiHeadConfig::Standard(h) => h.mask_head.as_ref().map_or(0, |m| m.num_convs),
                    RoiHeadConfig::Cascade(_) => 0,
                },
                _ => 0,
            };
            for i in 0..convs {
                roi_heads.to_ours.push((
                    format!(r"^roi_heads\.mask_head\.mask_fcn{}\.", i + 1),
                    format!("roi_head.mask_head.convs.{i}."),
                ));
            }
            parts.push(roi_heads);
        }
        ModelConfig::Rpn(_) | ModelConfig::CascadeRcnn(_) => {
            return Err(format!(
                "model.layout: torchvision's layout is mapped for RetinaNet, FasterRCNN and MaskRCNN, not {}",
                match cfg {
                    ModelConfig::CascadeRcnn(_) => "CascadeRCNN",
                    _ => "RPN",
                }
            ));
        }
    }
    Ok(parts)
}

/// torchvision's Faster R-CNN classifier rows, reordered to ours: `[1..=K, 0]` for `cls_score`, `[1..=K]`
/// (4 rows each) for `bbox_pred`, `[1..=K]` for Mask R-CNN's `mask_fcn_logits`. Other tensors are kept.
fn torchvision_rows(key: &str, snapshot: TensorSnapshot) -> TensorSnapshot {
    let mask_logits = key.starts_with("roi_heads.mask_predictor.mask_fcn_logits.");
    let per_class = if key.starts_with("roi_heads.box_predictor.cls_score.") || mask_logits {
        1
    } else if key.starts_with("roi_heads.box_predictor.bbox_pred.") {
        4
    } else {
        return snapshot;
    };
    let dims: Vec<usize> = snapshot.shape.iter().copied().collect();
    let rows = dims.first().copied().unwrap_or(0);
    if rows < per_class {
        return snapshot; // the shape check reports it
    }
    let row_len: usize = dims[1..].iter().product();
    // our row r is the file's row order[r]
    let order: Vec<usize> = if mask_logits {
        (1..rows).collect()
    } else if per_class == 1 {
        (1..rows).chain([0]).collect()
    } else {
        (4..rows).collect()
    };
    let mut shape = dims.clone();
    shape[0] = order.len();
    let source = snapshot.clone_data_fn();
    let new_shape = shape.clone();
    let data_fn = std::rc::Rc::new(move || {
        let data = source()?.convert::<f32>();
        let values: Vec<f32> = data.to_vec().unwrap_or_default();
        let picked: Vec<f32> = order
            .iter()
            .flat_map(|&r| values[r * row_len..(r + 1) * row_len].iter().copied())
            .collect();
        Ok(burn::tensor::TensorData::new(picked, new_shape.clone()))
    });
    TensorSnapshot::from_closure(
        data_fn,
        burn::tensor::DType::F32,
        shape.into(),
        snapshot.path_stack.clone().unwrap_or_default(),
        snapshot.container_stack.clone().unwrap_or_default(),
        snapshot.tensor_id.unwrap_or_default(),
    )
}

/// Compiled rules.
struct Compiled(Vec<(Regex, String)>);

impl Compiled {
    fn new(rules: &Rules) -> Result<Self, String> {
        rules
            .iter()
            .map(|(from, to)| {
                Regex::new(from)
                    .map(|r| (r, to.clone()))
                    .map_err(|e| format!("bad key rule `{from}`: {e}"))
            })
            .collect::<Result<_, _>>()
            .map(Compiled)
    }

    fn apply(&self, key: &str) -> String {
        let mut key = key.to_string();
        for (re, to) in &self.0 {
            if re.is_match(&key) {
                key = re.replace_all(&key, to.as_str()).into_owned();
            }
        }
        key
    }
}

/// Keys that mark mmdetection's detection layout (a `backbone.` key is mmdetection's unless torchvision's).
const MMDET_PREFIXES: &[&str] = &["neck.", "rpn_head.", "roi_head.", "bbox_head.", "backbone."];

/// Keys that mark torchvision's detection layout.
const TORCHVISION_PREFIXES: &[&str] = &[
    "backbone.body.",
    "backbone.fpn.",
    "rpn.head.",
    "roi_heads.",
    "head.classification_head.",
    "head.regression_head.",
];

/// The tensors of a PyTorch checkpoint, by key (`state_dict` unwrapped, `module.` stripped).
fn read_tensors(path: &Path) -> Result<Vec<(String, TensorSnapshot)>, ForeignError> {
    let read_err = |reason: String| ForeignError::Read {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(read_err("no such file".into()));
    }
    let reader = PytorchReader::new(path).map_err(|e| read_err(e.to_string()))?;
    let nested = reader.keys().iter().any(|k| k.starts_with("state_dict."));
    let reader = if nested {
        PytorchReader::with_top_level_key(path, "state_dict").map_err(|e| read_err(e.to_string()))?
    } else {
        reader
    };
    let mut tensors: Vec<(String, TensorSnapshot)> = reader
        .into_tensors()
        .into_iter()
        .map(|(k, t)| (k.strip_prefix("module.").unwrap_or(&k).to_string(), t))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// Refuse a classifier of another class count than the config's.
fn check_classes(
    cfg: &ModelConfig,
    file: &HashMap<&str, Vec<usize>>,
    ours: &HashMap<String, Vec<usize>>,
    path: &Path,
) -> Result<(), ForeignError> {
    let err = |key: &str, rows: usize, found: usize, expected: usize, field: &str| ForeignError::ClassCount {
        path: path.to_path_buf(),
        key: key.to_string(),
        rows,
        found,
        expected,
        field: field.to_string(),
    };
    let tv = cfg.layout() == Layout::Torchvision;
    match cfg {
        ModelConfig::FasterRcnn(c) | ModelConfig::MaskRcnn(c) => {
            let key = if tv {
                "roi_heads.box_predictor.cls_score.weight"
            } else {
                "roi_head.bbox_head.fc_cls.weight"
            };
            if let Some(&rows) = file.get(key).and_then(|s| s.first()) {
                let expected = c.roi_head.num_classes();
                if rows != expected + 1 {
                    return Err(err(
                        key,
                        rows,
                        rows.saturating_sub(1),
                        expected,
                        "model.roi_head.bbox_head.num_classes; the classifier has one more row, background",
                    ));
                }
            }
            // torchvision's mask logits have a background row too (mmdetection's: K rows, shape-checked)
            let mask_key = "roi_heads.mask_predictor.mask_fcn_logits.weight";
            if let (true, RoiHeadConfig::Standard(h)) = (tv, &c.roi_head)
                && let Some(m) = &h.mask_head
                && let Some(&rows) = file.get(mask_key).and_then(|s| s.first())
                && rows != m.num_classes + 1
            {
                return Err(err(
                    mask_key,
                    rows,
                    rows.saturating_sub(1),
                    m.num_classes,
                    "model.roi_head.mask_head.num_classes; torchvision's mask logits have one more row, \
                     background",
                ));
            }
        }
        ModelConfig::CascadeRcnn(c) => {
            let expected = c.roi_head.num_classes();
            for i in 0..cascade_stages(&c.roi_head) {
                let key = format!("roi_head.bbox_head.{i}.fc_cls.weight");
                if let Some(&rows) = file.get(key.as_str()).and_then(|s| s.first())
                    && rows != expected + 1
                {
                    return Err(err(
                        &key,
                        rows,
                        rows.saturating_sub(1),
                        expected,
                        &format!(
                            "model.roi_head.bbox_head.{i}.num_classes; the classifier has one more row, background"
                        ),
                    ));
                }
            }
        }
        ModelConfig::RetinaNet(c) => {
            let key = if tv {
                "head.classification_head.cls_logits.weight"
            } else {
                "bbox_head.retina_cls.weight"
            };
            let anchors = ours
                .get("bbox_head.retina_reg.weight")
                .and_then(|s| s.first())
                .map(|r| r / 4)
                .unwrap_or(1)
                .max(1);
            if let Some(&rows) = file.get(key).and_then(|s| s.first()) {
                let expected = c.bbox_head.num_classes;
                if rows != anchors * expected && rows % anchors == 0 {
                    return Err(err(
                        key,
                        rows,
                        rows / anchors,
                        expected,
                        &format!("model.bbox_head.num_classes, with {anchors} anchors per location"),
                    ));
                }
            }
        }
        ModelConfig::Rpn(_) => {}
    }
    Ok(())
}

/// Read a whole mmdetection or torchvision detector checkpoint (`cfg.layout()`) into `model`, built from
/// `cfg`, strictly (see the module documentation for the mapping and the checks).
///
/// # Errors
/// See [`ForeignError`]: unreadable file, the other layout, class count, or the keys that do not fit.
pub fn load_detector_checkpoint<B: super::DetBackend>(
    model: &mut AnyDetector<B>,
    cfg: &ModelConfig,
    path: &Path,
) -> Result<ForeignSummary, ForeignError> {
    let tensors = read_tensors(path)?;
    load_tensors(model, cfg, tensors, path)
}

/// [`load_detector_checkpoint`] for tensors already read, by file key (`path` only names them in errors).
///
/// # Errors
/// See [`ForeignError`].
pub fn load_tensors<B: super::DetBackend>(
    model: &mut AnyDetector<B>,
    cfg: &ModelConfig,
    tensors: Vec<(String, TensorSnapshot)>,
    path: &Path,
) -> Result<ForeignSummary, ForeignError> {
    let detector = model.type_name().to_string();
    let config_err = |reason: String| ForeignError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let is_tv = |k: &str| TORCHVISION_PREFIXES.iter().any(|p| k.starts_with(p));
    let tv = cfg.layout() == Layout::Torchvision;
    if !tv && let Some((key, _)) = tensors.iter().find(|(k, _)| is_tv(k)) {
        return Err(ForeignError::Torchvision {
            path: path.to_path_buf(),
            key: key.clone(),
            model: detector,
        });
    }
    if tv
        && let Some((key, _)) = tensors
            .iter()
            .find(|(k, _)| !is_tv(k) && MMDET_PREFIXES.iter().any(|p| k.starts_with(p)))
    {
        return Err(ForeignError::Mmdetection {
            path: path.to_path_buf(),
            key: key.clone(),
            model: detector,
        });
    }
    // Our shape of every float tensor by path (enum variants skipped), and our Linear weights.
    let shapes = tensor_shapes(model);
    let linear_weights: HashSet<String> = shapes
        .iter()
        .filter(|t| t.container == "Struct:Linear" && t.path.ends_with(".weight"))
        .map(|t| t.path.clone())
        .collect();
    let ours: HashMap<String, Vec<usize>> = shapes.into_iter().map(|t| (t.path, t.shape)).collect();
    let file_shapes: HashMap<&str, Vec<usize>> = tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.shape.iter().copied().collect()))
        .collect();
    check_classes(cfg, &file_shapes, &ours, path)?;

    let parts = if tv {
        let fpn_levels = ours
            .keys()
            .filter(|p| p.starts_with("neck.lateral_convs.") && p.ends_with(".weight"))
            .count();
        torchvision_key_map(cfg, fpn_levels).map_err(config_err)?
    } else {
        mmdet_key_map(cfg).map_err(config_err)?
    };
    let compiled = parts
        .iter()
        .map(|p| Ok((Compiled::new(&p.to_ours)?, Compiled::new(&p.to_file)?)))
        .collect::<Result<Vec<_>, String>>()
        .map_err(config_err)?;

    // Rename every tensor of a known part; the others are unexpected as they are.
    let in_file = tensors.len();
    let mut original: HashMap<String, String> = HashMap::new();
    let mut unexpected: Vec<String> = Vec::new();
    let mut snapshots = Vec::with_capacity(tensors.len());
    for (key, mut snapshot) in tensors {
        let Some(i) = parts.iter().position(|p| key.starts_with(&p.prefix)) else {
            if !key.ends_with("num_batches_tracked") {
                unexpected.push(key);
            }
            continue;
        };
        if tv {
            snapshot = torchvision_rows(&key, snapshot);
        }
        let new = compiled[i].0.apply(&key);
        snapshot.path_stack = Some(new.split('.').map(str::to_string).collect());
        original.insert(new.clone(), key);
        snapshots.push(snapshot);
    }

    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    let found = mismatch_of(&result);
    let to_file = |ours: &str| -> String {
        if let Some(k) = original.get(ours) {
            return k.clone();
        }
        match parts.iter().position(|p| ours.starts_with(&p.our_prefix)) {
            Some(i) => compiled[i].1.apply(ours),
            None => ours.to_string(),
        }
    };
    // Missing: by the name the file would give them (norm `gamma`/`beta` are PyTorch's `weight`/`bias`).
    let norm_paths: HashSet<&str> = result
        .missing
        .iter()
        .filter(|(_, containers)| containers.ends_with("BatchNorm") || containers.ends_with("LayerNorm"))
        .map(|(p, _)| p.as_str())
        .collect();
    let missing = found
        .missing
        .iter()
        .filter(|p| {
            !parts
                .iter()
                .any(|part| part.optional.iter().any(|o| p.starts_with(o)))
        })
        .map(|p| {
            let name = if norm_paths.contains(p.as_str()) {
                p.strip_suffix(".gamma")
                    .map(|s| format!("{s}.weight"))
                    .or_else(|| p.strip_suffix(".beta").map(|s| format!("{s}.bias")))
                    .unwrap_or_else(|| p.clone())
            } else {
                p.clone()
            };
            to_file(&name)
        })
        .collect();
    unexpected.extend(found.unexpected.iter().map(|k| to_file(k)));
    unexpected.sort();
    let shape_mismatch = result
        .errors
        .iter()
        .filter_map(|e| match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => {
                // burn-store compares Linear weights in burn's [in, out]: show PyTorch's [out, in] of the key.
                let (mut expected, mut found) = (expected.to_vec(), found.to_vec());
                if linear_weights.contains(path.as_str()) {
                    expected.reverse();
                    found.reverse();
                }
                Some((to_file(path), expected, found))
            }
            _ => None,
        })
        .collect();
    let mismatch = KeyMismatch {
        missing,
        unexpected,
        shape_mismatch,
    };
    if mismatch.is_empty() {
        Ok(ForeignSummary {
            applied: result.applied.len(),
            in_file,
        })
    } else {
        Err(ForeignError::Mismatch {
            path: path.to_path_buf(),
            model: detector,
            mismatch,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures: `python3 detectors/scripts/make_detector_checkpoints.py detectors/tests/fixtures/foreign`.

    use super::*;
    use crate::config::{ExperimentConfig, load_typed};
    use burn::backend::Flex;

    type B = Flex;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn fixture(name: &str) -> PathBuf {
        root().join("detectors/tests/fixtures/foreign").join(name)
    }

    /// The script's overrides of the demo configs.
    const FASTER_RCNN: &[&str] = &[
        "model.neck.out_channels=16",
        "model.rpn_head.feat_channels=16",
        "model.roi_head.bbox_head.in_channels=16",
        "model.roi_head.bbox_head.fc_out_channels=32",
        "model.roi_head.bbox_head.num_classes=3",
    ];
    const RETINANET: &[&str] = &[
        "model.neck.out_channels=16",
        "model.bbox_head.feat_channels=16",
        "model.bbox_head.num_classes=3",
    ];

    fn config(name: &str, base: &[&str], extra: &[&str]) -> ModelConfig {
        let overrides: Vec<String> = base.iter().chain(extra).map(|s| s.to_string()).collect();
        let (cfg, _): (ExperimentConfig, _) =
            load_typed(&root().join("configs").join(name), &overrides).unwrap();
        cfg.model
    }

    fn faster_rcnn(extra: &[&str]) -> ModelConfig {
        config(
            "faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json",
            FASTER_RCNN,
            extra,
        )
    }

    fn retinanet(extra: &[&str]) -> ModelConfig {
        config("retinanet/retinanet_r18_fpn_synth_demo.json", RETINANET, extra)
    }

    fn load(cfg: &ModelConfig, file: &str) -> (AnyDetector<B>, Result<ForeignSummary, ForeignError>) {
        let mut model = AnyDetector::<B>::from_config(cfg, &Default::default()).unwrap();
        let result = load_detector_checkpoint(&mut model, cfg, &fixture(file));
        (model, result)
    }

    /// The script's value of element `i` of `key` (without the +1 of norm weights and variances).
    fn formula(key: &str, i: usize) -> f32 {
        (((7 * i + key.len()) % 23) as f32 - 11.0) / 1000.0
    }

    /// Our tensor at `path`, flattened.
    fn ours(model: &AnyDetector<B>, path: &str) -> (Vec<usize>, Vec<f32>) {
        let snapshot = model
            .collect(None, None, true)
            .into_iter()
            .find(|s| s.full_path() == path)
            .unwrap_or_else(|| panic!("no {path}"));
        let data = snapshot.to_data().unwrap();
        (data.shape.to_vec(), data.to_vec::<f32>().unwrap())
    }

    fn assert_same(got: &[f32], want: impl Iterator<Item = f32>, what: &str) {
        let want: Vec<f32> = want.collect();
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-6, "{what}[{i}]: {g} != {w}");
        }
    }

    #[test]
    fn a_faster_rcnn_checkpoint_maps_every_tensor() {
        let (model, result) = load(&faster_rcnn(&[]), "faster_rcnn_r18_tiny.pth");
        let summary = result.unwrap();
        // 150 keys, of which 20 BatchNorm counters.
        assert_eq!(
            summary,
            ForeignSummary {
                applied: 130,
                in_file: 150
            }
        );
        // A conv inside mmdetection's ConvModule: taken as it is.
        let key = "neck.fpn_convs.1.conv.weight";
        let (shape, got) = ours(&model, "neck.fpn_convs.1.weight");
        assert_eq!(shape, [16, 16, 3, 3]);
        assert_same(&got, (0..got.len()).map(|i| formula(key, i)), key);
        // Linear weights: transposed to burn's [in, out].
        let key = "roi_head.bbox_head.fc_cls.weight";
        let (shape, got) = ours(&model, "roi_head.bbox_head.fc_cls.weight");
        assert_eq!(shape, [32, 4]);
        assert_same(&got, (0..32 * 4).map(|j| formula(key, (j % 4) * 32 + j / 4)), key);
        let key = "roi_head.bbox_head.shared_fcs.0.bias";
        let (_, got) = ours(&model, "roi_head.bbox_head.shared_fcs.0.bias");
        assert_same(&got, (0..32).map(|i| formula(key, i)), key);
        // BatchNorm weight and running variance of the backbone.
        let key = "backbone.layer2.0.downsample.1.weight";
        let (_, got) = ours(&model, "backbone.layer2.0.downsample.bn.gamma");
        assert_same(&got, (0..128).map(|i| 1.0 + formula(key, i)), key);
        let key = "backbone.bn1.running_var";
        let (_, got) = ours(&model, "backbone.bn1.running_var");
        assert_same(&got, (0..64).map(|i| 1.0 + formula(key, i)), key);
        let key = "rpn_head.rpn_reg.weight";
        let (shape, got) = ours(&model, "rpn_head.rpn_reg.weight");
        assert_eq!(shape, [12, 16, 1, 1]);
        assert_same(&got, (0..got.len()).map(|i| formula(key, i)), key);
    }

    #[test]
    fn a_bare_retinanet_state_dict_maps_every_tensor() {
        let (model, result) = load(&retinanet(&[]), "retinanet_r18_tiny.pth");
        let summary = result.unwrap();
        assert_eq!(summary.in_file - summary.applied, 20);
        let key = "bbox_head.reg_convs.1.conv.weight";
        let (_, got) = ours(&model, "bbox_head.reg_convs.1.weight");
        assert_same(&got, (0..got.len()).map(|i| formula(key, i)), key);
        let key = "bbox_head.retina_cls.bias";
        let (shape, got) = ours(&model, "bbox_head.retina_cls.bias");
        assert_eq!(shape, [27]);
        assert_same(&got, (0..27).map(|i| formula(key, i)), key);
    }

    #[test]
    fn missing_extra_and_misshaped_keys_are_named_in_one_error() {
        let (_, result) = load(&faster_rcnn(&[]), "faster_rcnn_r18_tiny_broken.pth");
        let err = result.unwrap_err();
        let ForeignError::Mismatch { mismatch, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(mismatch.missing, ["roi_head.bbox_head.shared_fcs.1.bias"]);
        assert_eq!(mismatch.unexpected, ["roi_head.bbox_head.fc_extra.weight"]);
        assert_eq!(
            mismatch.shape_mismatch,
            [(
                "neck.fpn_convs.2.conv.weight".to_string(),
                vec![16, 16, 3, 3],
                vec![16, 16, 1, 1]
            )]
        );
        let message = err.to_string();
        assert!(message.contains("faster_rcnn_r18_tiny_broken.pth"), "{message}");
    }

    #[test]
    fn a_config_of_other_sizes_is_refused_by_key_name() {
        // One more conv per tower: missing, named as mmdetection would name them.
        let (_, result) = load(
            &retinanet(&["model.bbox_head.stacked_convs=3"]),
            "retinanet_r18_tiny.pth",
        );
        let ForeignError::Mismatch { mismatch, .. } = result.unwrap_err() else {
            panic!()
        };
        assert!(mismatch.unexpected.is_empty(), "{mismatch}");
        for key in [
            "bbox_head.cls_convs.2.conv.weight",
            "bbox_head.cls_convs.2.conv.bias",
            "bbox_head.reg_convs.2.conv.weight",
        ] {
            assert!(mismatch.missing.iter().any(|k| k == key), "{mismatch}");
        }
        // One fewer: unexpected. Wider FC layers: shapes.
        let (_, result) = load(
            &retinanet(&["model.bbox_head.stacked_convs=1"]),
            "retinanet_r18_tiny.pth",
        );
        let message = result.unwrap_err().to_string();
        assert!(message.contains("bbox_head.reg_convs.1.conv.bias"), "{message}");
        let (_, result) = load(
            &faster_rcnn(&["model.roi_head.bbox_head.fc_out_channels=48"]),
            "faster_rcnn_r18_tiny.pth",
        );
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("roi_head.bbox_head.shared_fcs.0.weight: model [48, 784], checkpoint [32, 784]")
                && message.contains("fc_cls.weight: model [4, 48], checkpoint [4, 32]"),
            "{message}"
        );
    }

    #[test]
    fn another_class_count_names_the_key_and_both_counts() {
        let (_, result) = load(
            &faster_rcnn(&["model.roi_head.bbox_head.num_classes=80"]),
            "faster_rcnn_r18_tiny.pth",
        );
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("roi_head.bbox_head.fc_cls.weight")
                && message.contains("4 rows, i.e. 3 classes")
                && message.contains("the config has 80 classes"),
            "{message}"
        );
        let (_, result) = load(
            &retinanet(&["model.bbox_head.num_classes=5"]),
            "retinanet_r18_tiny.pth",
        );
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("bbox_head.retina_cls.weight")
                && message.contains("27 rows, i.e. 3 classes")
                && message.contains("the config has 5 classes"),
            "{message}"
        );
    }

    const TORCHVISION: &[&str] = &["model.layout=torchvision"];

    #[test]
    fn a_torchvision_faster_rcnn_maps_every_tensor_with_the_background_row_moved_last() {
        let (model, result) = load(&faster_rcnn(TORCHVISION), "torchvision_faster_rcnn_r18_tiny.pth");
        let summary = result.unwrap();
        // the mmdetection file's 150 keys, less nothing: 20 counters unused
        assert_eq!(summary.in_file - summary.applied, 20, "{summary:?}");
        let key = "backbone.fpn.inner_blocks.2.0.weight";
        let (_, got) = ours(&model, "neck.lateral_convs.2.weight");
        assert_same(&got, (0..got.len()).map(|i| formula(key, i)), key);
        let key = "rpn.head.conv.0.0.bias";
        let (_, got) = ours(&model, "rpn_head.rpn_conv.bias");
        assert_same(&got, (0..16).map(|i| formula(key, i)), key);
        let key = "backbone.body.layer2.0.downsample.1.weight";
        let (_, got) = ours(&model, "backbone.layer2.0.downsample.bn.gamma");
        assert_same(&got, (0..128).map(|i| 1.0 + formula(key, i)), key);
        // cls_score [4, 32] rows (bg, a, b, c) -> ours (a, b, c, bg), burn [32, 4]: ours[j] = W[row(j % 4)][j / 4]
        let key = "roi_heads.box_predictor.cls_score.weight";
        let (shape, got) = ours(&model, "roi_head.bbox_head.fc_cls.weight");
        assert_eq!(shape, [32, 4]);
        let row = |r: usize| if r < 3 { r + 1 } else { 0 };
        assert_same(&got, (0..128).map(|j| formula(key, row(j % 4) * 32 + j / 4)), key);
        let key = "roi_heads.box_predictor.cls_score.bias";
        let (_, got) = ours(&model, "roi_head.bbox_head.fc_cls.bias");
        assert_same(&got, (0..4).map(|r| formula(key, row(r))), key);
        // bbox_pred [16, 32]: the background's rows 0..4 dropped, ours [32, 12] = rows 4..16
        let key = "roi_heads.box_predictor.bbox_pred.weight";
        let (shape, got) = ours(&model, "roi_head.bbox_head.fc_reg.weight");
        assert_eq!(shape, [32, 12]);
        assert_same(
            &got,
            (0..32 * 12).map(|j| formula(key, (4 + j % 12) * 32 + j / 12)),
            key,
        );
    }

    #[test]
    fn a_torchvision_retinanet_maps_its_extra_levels_and_heads() {
        let cfg = retinanet(&[
            "model.layout=torchvision",
            "model.neck.num_outs=5",
            "model.bbox_head.anchor_generator.strides=[8, 16, 32, 64, 128]",
            "model.neck.add_extra_convs=on_output",
            "model.neck.relu_before_extra_convs=true",
        ]);
        let (model, result) = load(&cfg, "torchvision_retinanet_r18_tiny.pth");
        let summary = result.unwrap();
        assert_eq!(summary.in_file - summary.applied, 20);
        // three used levels: p6 and p7 are our fpn_convs 3 and 4
        for (key, path) in [
            ("backbone.fpn.extra_blocks.p6.weight", "neck.fpn_convs.3.weight"),
            ("backbone.fpn.extra_blocks.p7.bias", "neck.fpn_convs.4.bias"),
            (
                "head.classification_head.conv.1.0.weight",
                "bbox_head.cls_convs.1.weight",
            ),
            (
                "head.regression_head.bbox_reg.weight",
                "bbox_head.retina_reg.weight",
            ),
            (
                "head.classification_head.cls_logits.bias",
                "bbox_head.retina_cls.bias",
            ),
        ] {
            let (_, got) = ours(&model, path);
            assert_same(&got, (0..got.len()).map(|i| formula(key, i)), key);
        }
        // P6 from C5 (mmdetection's on_input) is another shape: named in torchvision's terms
        let cfg = retinanet(&[
            "model.layout=torchvision",
            "model.neck.num_outs=5",
            "model.bbox_head.anchor_generator.strides=[8, 16, 32, 64, 128]",
            "model.neck.add_extra_convs=on_input",
        ]);
        let (_, result) = load(&cfg, "torchvision_retinanet_r18_tiny.pth");
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains(
                "backbone.fpn.extra_blocks.p6.weight: model [16, 512, 3, 3], checkpoint [16, 16, 3, 3]"
            ),
            "{message}"
        );
    }

    #[test]
    fn torchvision_missing_keys_and_class_counts_are_named_in_its_terms() {
        // one more tower conv: missing, by torchvision's name
        let cfg = retinanet(&[
            "model.layout=torchvision",
            "model.neck.num_outs=5",
            "model.bbox_head.anchor_generator.strides=[8, 16, 32, 64, 128]",
            "model.neck.add_extra_convs=on_output",
            "model.bbox_head.stacked_convs=3",
        ]);
        let (_, result) = load(&cfg, "torchvision_retinanet_r18_tiny.pth");
        let ForeignError::Mismatch { mismatch, .. } = result.unwrap_err() else {
            panic!()
        };
        assert!(
            mismatch
                .missing
                .iter()
                .any(|k| k == "head.classification_head.conv.2.0.weight"),
            "{mismatch}"
        );
        let (_, result) = load(
            &faster_rcnn(&[
                "model.layout=torchvision",
                "model.roi_head.bbox_head.num_classes=90",
            ]),
            "torchvision_faster_rcnn_r18_tiny.pth",
        );
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("roi_heads.box_predictor.cls_score.weight")
                && message.contains("4 rows, i.e. 3 classes")
                && message.contains("the config has 90 classes"),
            "{message}"
        );
    }

    #[test]
    fn an_mmdetection_checkpoint_for_a_torchvision_config_is_refused_naming_the_key() {
        let (_, result) = load(&faster_rcnn(TORCHVISION), "faster_rcnn_r18_tiny.pth");
        let err = result.unwrap_err();
        assert!(matches!(err, ForeignError::Mmdetection { .. }), "{err}");
        assert!(err.to_string().contains("key `backbone.bn1.bias`"), "{err}");
        // torchvision has no Cascade R-CNN: its layout is not mapped for one, naming the field
        let message = torchvision_key_map(&cascade_mask_rcnn(), 4).unwrap_err();
        assert!(
            message.contains("model.layout") && message.contains("CascadeRCNN"),
            "{message}"
        );
    }

    /// The script's Mask R-CNN sizes: Faster R-CNN's and a 16-channel mask head for 3 classes (the demo
    /// config's two convs).
    const MASK_RCNN: &[&str] = &[
        "model.neck.out_channels=16",
        "model.rpn_head.feat_channels=16",
        "model.roi_head.bbox_head.in_channels=16",
        "model.roi_head.bbox_head.fc_out_channels=32",
        "model.roi_head.bbox_head.num_classes=3",
        "model.roi_head.mask_head.in_channels=16",
        "model.roi_head.mask_head.conv_out_channels=16",
        "model.roi_head.mask_head.num_classes=3",
    ];

    fn mask_rcnn(extra: &[&str]) -> ModelConfig {
        config("mask_rcnn/mask_rcnn_r18_fpn_synth_demo.json", MASK_RCNN, extra)
    }

    /// Detections of a 64x64 image (pixel values from a formula): one mask per box, each of the image's size.
    fn assert_infers_with_masks(model: &AnyDetector<B>) {
        use crate::models::Detector;
        use crate::structures::ImageMeta;
        let values: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i * 37) % 255) as f32 / 64.0 - 2.0)
            .collect();
        let image = burn::tensor::Tensor::<B, 4>::from_data(
            burn::tensor::TensorData::new(values, [1, 3, 64, 64]),
            &Default::default(),
        );
        let meta = ImageMeta::unscaled(1, (64, 64));
        let dets = model.predict(image, std::slice::from_ref(&meta)).unwrap();
        let masks = dets[0].masks.as_ref().expect("a Mask R-CNN gives masks");
        assert_eq!(masks.len(), dets[0].boxes.len());
        assert!(
            masks
                .iter()
                .all(|m| (m.h, m.w) == (64, 64) && m.validate().is_ok())
        );
    }

    /// mmdetection's Mask R-CNN loads strictly: Faster R-CNN's keys plus the mask head's,
    /// `roi_head.mask_head.convs.i.conv.*` (ConvModules) onto `convs.i.*`, `upsample` (a transposed conv,
    /// `[in, out, 2, 2]`) and `conv_logits` (K rows) as they are; then it infers with masks.
    #[test]
    fn an_mmdet_mask_rcnn_maps_every_tensor_and_infers() {
        let cfg = mask_rcnn(&[]);
        let (model, result) = load(&cfg, "mask_rcnn_r18_tiny.pth");
        // Faster R-CNN's 150 keys (20 BN counters unused) + 2 x 2 conv + 2 upsample + 2 logits keys
        assert_eq!(
            result.unwrap(),
            ForeignSummary {
                applied: 130 + 8,
                in_file: 150 + 8
            }
        );
        assert_eq!(model.type_name(), "MaskRCNN");
        for (ours_path, file, shape) in [
            (
                "roi_head.mask_head.convs.1.weight",
                "roi_head.mask_head.convs.1.conv.weight",
                vec![16, 16, 3, 3],
            ),
            (
                "roi_head.mask_head.upsample.weight",
                "roi_head.mask_head.upsample.weight",
                vec![16, 16, 2, 2],
            ),
            (
                "roi_head.mask_head.conv_logits.weight",
                "roi_head.mask_head.conv_logits.weight",
                vec![3, 16, 1, 1],
            ),
            (
                "roi_head.mask_head.conv_logits.bias",
                "roi_head.mask_head.conv_logits.bias",
                vec![3],
            ),
        ] {
            let (got_shape, got) = ours(&model, ours_path);
            assert_eq!(got_shape, shape, "{ours_path}");
            assert_same(&got, (0..got.len()).map(|j| formula(file, j)), file);
        }
        assert_infers_with_masks(&model);
        // a Faster R-CNN file lacks the mask head: each of its keys named, in mmdetection's terms
        let (_, result) = load(&cfg, "faster_rcnn_r18_tiny.pth");
        let ForeignError::Mismatch { mismatch, .. } = result.unwrap_err() else {
            panic!("a mismatch")
        };
        for key in [
            "roi_head.mask_head.convs.0.conv.weight",
            "roi_head.mask_head.upsample.bias",
            "roi_head.mask_head.conv_logits.weight",
        ] {
            assert!(mismatch.missing.iter().any(|k| k == key), "{key}: {mismatch}");
        }
    }

    /// torchvision's Mask R-CNN loads strictly: `roi_heads.mask_head.i.0.*` onto `convs.i.*`,
    /// `mask_predictor.conv5_mask` onto `upsample`, `mask_fcn_logits` (K + 1 rows, background first) onto
    /// `conv_logits` with the background row dropped: our row r is the file's row r + 1. The older names
    /// (`mask_fcn1, mask_fcn2`) load the same; then it infers with masks.
    #[test]
    fn a_torchvision_mask_rcnn_drops_the_background_mask_row_and_infers() {
        let cfg = mask_rcnn(TORCHVISION);
        let (model, result) = load(&cfg, "torchvision_mask_rcnn_r18_tiny.pth");
        assert_eq!(
            result.unwrap(),
            ForeignSummary {
                applied: 130 + 8,
                in_file: 150 + 8
            }
        );
        let file = "roi_heads.mask_predictor.mask_fcn_logits.weight";
        let (shape, got) = ours(&model, "roi_head.mask_head.conv_logits.weight");
        assert_eq!(shape, [3, 16, 1, 1]);
        assert_same(&got, (0..got.len()).map(|j| formula(file, j + 16)), file);
        let file = "roi_heads.mask_predictor.mask_fcn_logits.bias";
        let (_, got) = ours(&model, "roi_head.mask_head.conv_logits.bias");
        assert_same(&got, (0..3).map(|j| formula(file, j + 1)), file);
        let file = "roi_heads.mask_head.1.0.weight";
        let (_, got) = ours(&model, "roi_head.mask_head.convs.1.weight");
        assert_same(&got, (0..got.len()).map(|j| formula(file, j)), file);
        let file = "roi_heads.mask_predictor.conv5_mask.weight";
        let (shape, got) = ours(&model, "roi_head.mask_head.upsample.weight");
        assert_eq!(shape, [16, 16, 2, 2]);
        assert_same(&got, (0..got.len()).map(|j| formula(file, j)), file);
        assert_infers_with_masks(&model);

        // the same tensors under torchvision's pre-0.13 names
        let renamed: Vec<(String, TensorSnapshot)> =
            read_tensors(&fixture("torchvision_mask_rcnn_r18_tiny.pth"))
                .unwrap()
                .into_iter()
                .map(|(k, t)| {
                    let k = k
                        .replace("roi_heads.mask_head.0.0.", "roi_heads.mask_head.mask_fcn1.")
                        .replace("roi_heads.mask_head.1.0.", "roi_heads.mask_head.mask_fcn2.");
                    (k, t)
                })
                .collect();
        assert!(
            renamed
                .iter()
                .any(|(k, _)| k == "roi_heads.mask_head.mask_fcn2.weight")
        );
        let mut legacy = AnyDetector::<B>::from_config(&cfg, &Default::default()).unwrap();
        let summary = load_tensors(&mut legacy, &cfg, renamed, Path::new("legacy")).unwrap();
        assert_eq!(summary.applied, 138);
        assert_eq!(
            ours(&legacy, "roi_head.mask_head.convs.1.weight"),
            ours(&model, "roi_head.mask_head.convs.1.weight")
        );
    }

    /// A torchvision Mask R-CNN file that does not fit: a Faster R-CNN file (the mask keys missing, named as
    /// torchvision names them), a third mask conv in the config (missing), and mask logits of another class
    /// count (refused first, naming the mask field).
    #[test]
    fn torchvision_mask_rcnn_mismatches_are_named_in_its_terms() {
        let (_, result) = load(&mask_rcnn(TORCHVISION), "torchvision_faster_rcnn_r18_tiny.pth");
        let ForeignError::Mismatch { mismatch, .. } = result.unwrap_err() else {
            panic!("a mismatch")
        };
        for key in [
            "roi_heads.mask_head.0.0.weight",
            "roi_heads.mask_head.1.0.bias",
            "roi_heads.mask_predictor.conv5_mask.weight",
            "roi_heads.mask_predictor.mask_fcn_logits.bias",
        ] {
            assert!(mismatch.missing.iter().any(|k| k == key), "{key}: {mismatch}");
        }
        assert!(mismatch.unexpected.is_empty(), "{mismatch}");

        let (_, result) = load(
            &mask_rcnn(&["model.layout=torchvision", "model.roi_head.mask_head.num_convs=3"]),
            "torchvision_mask_rcnn_r18_tiny.pth",
        );
        let ForeignError::Mismatch { mismatch, .. } = result.unwrap_err() else {
            panic!("a mismatch")
        };
        let mut missing = mismatch.missing.clone();
        missing.sort();
        assert_eq!(
            missing,
            ["roi_heads.mask_head.2.0.bias", "roi_heads.mask_head.2.0.weight"]
        );
        assert!(
            mismatch.unexpected.is_empty() && mismatch.shape_mismatch.is_empty(),
            "{mismatch}"
        );

        let mut cfg = mask_rcnn(TORCHVISION);
        if let ModelConfig::MaskRcnn(c) = &mut cfg
            && let RoiHeadConfig::Standard(h) = &mut c.roi_head
            && let Some(m) = &mut h.mask_head
        {
            m.num_classes = 5;
        }
        let (_, result) = load(&cfg, "torchvision_mask_rcnn_r18_tiny.pth");
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("roi_heads.mask_predictor.mask_fcn_logits.weight")
                && message.contains("4 rows, i.e. 3 classes")
                && message.contains("the config has 5 classes")
                && message.contains("model.roi_head.mask_head.num_classes"),
            "{message}"
        );
    }

    #[test]
    fn a_torchvision_checkpoint_is_refused_with_its_layout_named() {
        let (_, result) = load(&faster_rcnn(&[]), "torchvision_faster_rcnn_keys.pth");
        let err = result.unwrap_err();
        assert!(matches!(err, ForeignError::Torchvision { .. }), "{err}");
        assert!(err.to_string().contains("torchvision"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_checkpoint_is_a_read_error() {
        let cfg = faster_rcnn(&[]);
        let mut model = AnyDetector::<B>::from_config(&cfg, &Default::default()).unwrap();
        let path = root().join("configs/faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json");
        let err = load_detector_checkpoint(&mut model, &cfg, &path).unwrap_err();
        assert!(matches!(err, ForeignError::Read { .. }), "{err}");
    }

    /// The script's Cascade Mask R-CNN: the Cascade R-CNN demo config, shrunk as `CASCADE_OVERRIDES`, with
    /// a one-conv mask head per stage.
    fn cascade_mask_rcnn() -> ModelConfig {
        let mut o: Vec<String> = vec![
            "model.neck.out_channels=16".into(),
            "model.rpn_head.feat_channels=16".into(),
        ];
        for i in 0..3 {
            o.push(format!("model.roi_head.bbox_head.{i}.in_channels=16"));
            o.push(format!("model.roi_head.bbox_head.{i}.fc_out_channels=32"));
            o.push(format!("model.roi_head.bbox_head.{i}.num_classes=3"));
        }
        o.push(
            r#"model.roi_head.mask_roi_extractor={"output_size": [14, 14], "sampling_ratio": 0, "aligned": true, "featmap_strides": [4, 8, 16, 32], "mapping": {"type": "mmdet", "finest_scale": 56}}"#
                .into(),
        );
        o.push(
            r#"model.roi_head.mask_head={"num_convs": 1, "in_channels": 16, "conv_out_channels": 16, "roi_feat_size": 14, "num_classes": 3, "mask_thr_binary": 0.5}"#
                .into(),
        );
        let o: Vec<&str> = o.iter().map(String::as_str).collect();
        config("cascade_rcnn/cascade_rcnn_r18_fpn_synth_demo.json", &o, &[])
    }

    /// mmdetection's Cascade Mask R-CNN layout loads strictly: `roi_head.bbox_head.{0,1,2}.*` onto each
    /// stage's box head, `roi_head.mask_head.{i}.convs.0.conv.*` (ConvModules) onto each stage's mask head;
    /// a Faster R-CNN file's single-head keys do not fit the cascade.
    #[test]
    fn a_cascade_mask_rcnn_checkpoint_maps_every_stage() {
        let cfg = cascade_mask_rcnn();
        assert!(cfg.trains_masks());
        let (model, result) = load(&cfg, "cascade_mask_rcnn_r18_tiny.pth");
        let summary = result.unwrap();
        // 150 Faster R-CNN keys - 8 box-head keys + 3 x (8 box-head + 6 mask-head) keys; 20 BN counters
        assert_eq!(
            summary,
            ForeignSummary {
                applied: 130 - 8 + 42,
                in_file: 150 - 8 + 42
            }
        );
        assert_eq!(model.type_name(), "CascadeRCNN");
        for i in 0..3 {
            let key = format!("roi_head.bbox_head.{i}.fc_reg.weight");
            let (shape, got) = ours(&model, &key);
            assert_eq!(shape, [32, 4], "class-agnostic deltas");
            assert_same(
                &got,
                (0..32 * 4).map(|j| formula(&key, (j % 4) * 32 + j / 4)),
                &key,
            );
            let file = format!("roi_head.mask_head.{i}.convs.0.conv.weight");
            let (shape, got) = ours(&model, &format!("roi_head.mask_head.{i}.convs.0.weight"));
            assert_eq!(shape, [16, 16, 3, 3]);
            assert_same(&got, (0..got.len()).map(|j| formula(&file, j)), &file);
        }
        let (_, result) = load(&cfg, "faster_rcnn_r18_tiny.pth");
        let err = result.unwrap_err().to_string();
        assert!(err.contains("roi_head.bbox_head.0.fc_cls.weight"), "{err}");
    }
}
