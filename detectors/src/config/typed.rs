//! The typed schema of a training config. Every struct rejects unknown fields, so a typo fails at load time.

use serde::{Deserialize, Serialize};

/// A whole experiment: model, data, optimisation schedule and runtime settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The detector.
    pub model: ModelConfig,
    /// Datasets and the input pipeline.
    pub data: DataConfig,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule (warmup + steps).
    pub lr_config: LrConfig,
    /// Length of training.
    pub runner: RunnerConfig,
    /// Validation during training.
    pub evaluation: EvaluationConfig,
    /// Checkpointing.
    pub checkpoint_config: CheckpointConfig,
    /// Logging.
    pub log_config: LogConfig,
    /// Linear scaling of the learning rate with the total batch size (`--auto-scale-lr`).
    pub auto_scale_lr: AutoScaleLrConfig,
    /// Seed of every random choice (initialisation, shuffling, flips).
    pub seed: u64,
}

/// Detectors, selected by `"type"`.
// One config per run: the size difference between the arms does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ModelConfig {
    /// RetinaNet (Lin et al. 2017): backbone + FPN + dense focal-loss head.
    RetinaNet(RetinaNetConfig),
    /// A region proposal network alone: its detections are class-agnostic proposals.
    #[serde(rename = "RPN")]
    Rpn(super::RpnConfig),
    /// Faster R-CNN (Ren et al. 2015): backbone + FPN + RPN + a RoI head.
    #[serde(rename = "FasterRCNN")]
    FasterRcnn(super::TwoStageConfig),
    /// Mask R-CNN (He et al. 2017): Faster R-CNN with a mask branch in its RoI head.
    #[serde(rename = "MaskRCNN")]
    MaskRcnn(super::TwoStageConfig),
    /// Cascade R-CNN (Cai and Vasconcelos 2018), with masks Cascade Mask R-CNN: a cascade RoI head.
    #[serde(rename = "CascadeRCNN")]
    CascadeRcnn(super::CascadeConfig),
}

impl ModelConfig {
    /// The backbone of any detector.
    pub fn backbone(&self) -> &BackboneConfig {
        match self {
            Self::RetinaNet(c) => &c.backbone,
            Self::Rpn(c) => &c.backbone,
            Self::FasterRcnn(c) | Self::MaskRcnn(c) => &c.backbone,
            Self::CascadeRcnn(c) => &c.backbone,
        }
    }

    /// Whether the detector trains on instance masks (the loader then rasterizes them).
    pub fn trains_masks(&self) -> bool {
        match self {
            Self::FasterRcnn(c) | Self::MaskRcnn(c) => c.roi_head.has_mask(),
            Self::CascadeRcnn(c) => c.roi_head.has_mask(),
            _ => false,
        }
    }

    /// The backbone of any detector, to change it.
    pub fn backbone_mut(&mut self) -> &mut BackboneConfig {
        match self {
            Self::RetinaNet(c) => &mut c.backbone,
            Self::Rpn(c) => &mut c.backbone,
            Self::FasterRcnn(c) | Self::MaskRcnn(c) => &mut c.backbone,
            Self::CascadeRcnn(c) => &mut c.backbone,
        }
    }

    /// Whose whole-detector checkpoints the detector reads (an RPN alone: mmdetection's).
    pub fn layout(&self) -> Layout {
        match self {
            Self::RetinaNet(c) => c.layout,
            // torchvision has neither an RPN alone nor Cascade R-CNN
            Self::Rpn(_) | Self::CascadeRcnn(_) => Layout::Mmdetection,
            Self::FasterRcnn(c) | Self::MaskRcnn(c) => c.layout,
        }
    }

    /// How the detector's class indices become dataset category ids.
    pub fn class_ids(&self) -> ClassIds {
        match self {
            Self::RetinaNet(c) => c.class_ids,
            Self::Rpn(_) | Self::CascadeRcnn(_) => ClassIds::Sorted,
            Self::FasterRcnn(c) | Self::MaskRcnn(c) => c.class_ids,
        }
    }

    /// Proposals the second stage sees at test time (`test_cfg.rpn.max_per_img`; 0 for one-stage detectors
    /// and an RPN alone): what its cost is counted for.
    pub fn test_proposals(&self) -> usize {
        match self {
            Self::FasterRcnn(m) | Self::MaskRcnn(m) => m.test_cfg.rpn.max_per_img,
            Self::CascadeRcnn(m) => m.test_cfg.rpn.max_per_img,
            Self::RetinaNet(_) | Self::Rpn(_) => 0,
        }
    }

    /// Object classes the detector predicts (1 for an RPN: "object").
    pub fn num_classes(&self) -> usize {
        match self {
            Self::RetinaNet(c) => c.bbox_head.num_classes,
            Self::Rpn(_) => 1,
            Self::FasterRcnn(c) | Self::MaskRcnn(c) => c.roi_head.num_classes(),
            Self::CascadeRcnn(c) => c.roi_head.num_classes(),
        }
    }
}

/// The layout of the whole-detector checkpoints a detector reads (`attndet test`, `infer`, `convert` with a
/// `.pth`), and so the meaning of its classifier's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// mmdetection: `backbone.*`, `neck.*`, `rpn_head.*`, `roi_head.*`, `bbox_head.*` keys; K classifier rows
    /// (a softmax classifier: K + 1, background last), as our own checkpoints.
    #[default]
    Mmdetection,
    /// torchvision: `backbone.body.*`, `backbone.fpn.*`, `rpn.head.*`, `roi_heads.*`, `head.*` keys. Its
    /// RetinaNet's K rows are taken as they are; its Faster R-CNN's softmax rows (background first) are
    /// reordered to ours (background last) and the background's 4 regression rows, which nothing reads, are
    /// dropped, so that every score is torchvision's.
    Torchvision,
}

/// How a class index of the detector becomes a dataset category id (and an annotation's category id a
/// training label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClassIds {
    /// Class k is the k-th category of the dataset in ascending id order (mmdetection: COCO's 80 categories
    /// become 0..80).
    #[default]
    Sorted,
    /// Class k is category id `k + offset` (torchvision's COCO models, whose rows are the raw category ids
    /// with their gaps: RetinaNet `offset` 0 with 91 classes, class 0 never trained; Faster R-CNN `offset` 1
    /// with 90 classes once the background row is moved last). Annotations whose id falls outside the
    /// classes are left out.
    Offset {
        /// Category id of class 0.
        offset: u64,
    },
}

impl ClassIds {
    /// The category id of each of `num_classes` classes, given the dataset's ids in ascending order.
    pub fn category_ids(&self, sorted_dataset_ids: &[u64], num_classes: usize) -> Vec<u64> {
        match self {
            Self::Sorted => sorted_dataset_ids.to_vec(),
            Self::Offset { offset } => (0..num_classes as u64).map(|k| k + offset).collect(),
        }
    }
}

/// RetinaNet with mmdetection's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetinaNetConfig {
    /// The backbone (from the zoo).
    pub backbone: BackboneConfig,
    /// The FPN neck.
    pub neck: crate::necks::FpnConfig,
    /// The dense head.
    pub bbox_head: RetinaHeadConfig,
    /// Training-only settings (target assignment).
    pub train_cfg: RetinaTrainConfig,
    /// Inference settings.
    pub test_cfg: DenseTestConfig,
    /// Layout of the whole-detector checkpoints it reads.
    #[serde(default)]
    pub layout: Layout,
    /// How its classes become category ids.
    #[serde(default)]
    pub class_ids: ClassIds,
}

/// A backbone of the zoo and how it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// Zoo name, e.g. `resnet50`, `se_resnet50`.
    pub name: String,
    /// Stages whose parameters are frozen: -1 none, 0 the stem, 1 stem + first stage, ...
    pub frozen_stages: i32,
    /// Keep BatchNorm statistics frozen while training (mmdetection's `norm_eval`).
    pub norm_eval: bool,
    /// Initial weights: a PyTorch (`.pth`, `.pth.tar`, `.pt`) or safetensors checkpoint of the backbone, with or
    /// without its classifier head, or a whole mmdetection detector checkpoint (its `backbone.*` tensors).
    /// `null`: random init.
    #[serde(default)]
    pub init_checkpoint: Option<String>,
    /// BatchNorm epsilon of every layer (ResNet family); `null`: the zoo's, 1e-5. torchvision's released COCO
    /// detectors use 0 (their builders call `overwrite_eps(model, 0.0)`).
    #[serde(default)]
    pub norm_eps: Option<f64>,
    /// Whether BatchNorm's weight and bias train (mmdetection's `norm_cfg.requires_grad`, ResNet family).
    /// `false` with `norm_eval` is torchvision's FrozenBatchNorm2d: statistics and affine fixed, the same
    /// `y = (x - mean) / sqrt(var + eps) * weight + bias` in the forward pass.
    #[serde(default = "default_true")]
    pub norm_requires_grad: bool,
}

fn default_true() -> bool {
    true
}

/// RetinaNet's head: shared towers, anchors, coder and losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetinaHeadConfig {
    /// Object classes (background excluded).
    pub num_classes: usize,
    /// 3x3 convs in each tower.
    pub stacked_convs: usize,
    /// Channels of the towers.
    pub feat_channels: usize,
    /// Initial foreground probability of the classifier (bias = -log((1 - p) / p)).
    pub prior_prob: f64,
    /// Anchors.
    pub anchor_generator: crate::anchors::AnchorGeneratorConfig,
    /// Box coder.
    pub bbox_coder: crate::coders::DeltaXywhCoderConfig,
    /// Classification loss.
    pub loss_cls: crate::losses::FocalLossConfig,
    /// Box regression loss.
    pub loss_bbox: crate::losses::L1LossConfig,
}

/// Training-only settings of RetinaNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetinaTrainConfig {
    /// Anchor to ground-truth assignment.
    pub assigner: crate::assigners::MaxIouAssignerConfig,
}

/// Inference of a dense head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseTestConfig {
    /// Top-scoring candidates kept per level before NMS.
    pub nms_pre: usize,
    /// Minimum score of a detection.
    pub score_thr: f64,
    /// IoU threshold of the (class-aware) NMS.
    pub nms_iou_thr: f64,
    /// Detections kept per image.
    pub max_per_img: usize,
}

/// Datasets and the input pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Directory the relative dataset paths are resolved against (itself relative to the working directory).
    pub data_root: String,
    /// Training split.
    pub train: SplitConfig,
    /// Validation split (evaluation during training and `attndet test`).
    pub val: SplitConfig,
    /// Images per batch.
    pub batch_size: usize,
    /// Loader worker threads (decode + transforms).
    pub num_workers: usize,
    /// Batches prepared ahead of the training step.
    pub prefetch: usize,
    /// Batch images of similar aspect ratio together (less padding).
    pub group_by_aspect_ratio: bool,
    /// Skip (and count) corrupt or missing images instead of stopping with an error.
    #[serde(default)]
    pub skip_bad_images: bool,
    /// Transforms.
    pub pipeline: PipelineConfig,
}

/// One split of a COCO-format dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Annotation file (COCO instances JSON).
    pub ann_file: String,
    /// Image directory (`file_name`s are relative to it).
    pub img_dir: String,
}

/// The image transforms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Target scale `[long, short]`: with `keep_ratio` the image is scaled by the largest factor that keeps
    /// its long side <= long and its short side <= short (mmdetection's `(1333, 800)`).
    pub img_scale: [usize; 2],
    /// Keep the aspect ratio (else stretch to exactly `img_scale`).
    pub keep_ratio: bool,
    /// Probability of a horizontal flip in training.
    pub flip_prob: f64,
    /// Per-channel RGB mean subtracted (0..255 scale).
    pub mean: [f32; 3],
    /// Per-channel RGB std dividing.
    pub std: [f32; 3],
    /// Pad height and width up to a multiple of this.
    pub pad_size_divisor: usize,
}

/// The optimizer, chosen by `"type"` as in mmdetection's `optimizer` dict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Stochastic gradient descent with momentum (PyTorch semantics: no dampening, coupled weight decay).
    #[serde(rename = "SGD")]
    Sgd(SgdConfig),
    /// Adam with decoupled weight decay (PyTorch's `AdamW`): far less sensitive to the learning rate when
    /// training from scratch, which is what the synthetic demo does.
    #[serde(rename = "AdamW")]
    AdamW(AdamWConfig),
}

impl OptimizerConfig {
    /// Base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Sgd(c) => c.lr,
            Self::AdamW(c) => c.lr,
        }
    }

    /// Global-norm clipping, if any.
    pub fn grad_clip(&self) -> Option<&GradClipConfig> {
        match self {
            Self::Sgd(c) => c.grad_clip.as_ref(),
            Self::AdamW(c) => c.grad_clip.as_ref(),
        }
    }
}

/// AdamW settings (defaults: PyTorch's betas and eps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Added to the denominator for stability.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay (every parameter's value shrinks by `lr * weight_decay` per step).
    pub weight_decay: f64,
    /// Clip the global L2 norm of all gradients; `null`: no clipping.
    #[serde(default)]
    pub grad_clip: Option<GradClipConfig>,
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}

fn default_eps() -> f64 {
    1e-8
}

/// SGD settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Base learning rate (for `auto_scale_lr.base_batch_size` images per step when auto-scaling).
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Apply no weight decay to normalisation parameters and biases (mmdetection's `norm_decay_mult=0,
    /// bias_decay_mult=0`).
    #[serde(default)]
    pub no_decay_on_norm_and_bias: bool,
    /// Clip the global L2 norm of all gradients; `null`: no clipping.
    pub grad_clip: Option<GradClipConfig>,
}

/// Global-norm gradient clipping (`torch.nn.utils.clip_grad_norm_`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradClipConfig {
    /// Maximum global L2 norm.
    pub max_norm: f64,
}

/// Learning-rate schedule: linear warmup, then step decay at epoch milestones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrConfig {
    /// Iterations of linear warmup (0: none).
    pub warmup_iters: usize,
    /// Learning-rate factor at iteration 0 of the warmup.
    pub warmup_ratio: f64,
    /// Epochs after which the rate is multiplied by `gamma`.
    pub step: Vec<usize>,
    /// Decay factor.
    pub gamma: f64,
}

/// Training length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Epochs.
    pub max_epochs: usize,
}

/// Validation during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Evaluate every N epochs (0: never during training).
    pub interval: usize,
    /// What to evaluate (`["bbox"]`, `["bbox", "segm"]`, `["proposal"]`); empty: what the detector predicts.
    #[serde(default)]
    pub metric: Vec<crate::models::EvalKind>,
    /// Keep `WORK_DIR/best` for the best value of a metric: `true` for the first evaluated metric's main
    /// figure (AP, or AR@1000 for proposals), a name such as `"bbox_mAP"`, `"segm_mAP"`, `"bbox_mAP_50"` or
    /// `"proposal_AR@1000"`, or `false`.
    pub save_best: SaveBest,
}

/// The `evaluation.save_best` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SaveBest {
    /// `true`: the first metric's main figure; `false`: no best checkpoint.
    Enabled(bool),
    /// A named figure.
    Metric(String),
}

impl SaveBest {
    /// The figure to maximise, given the evaluated kinds (`None` when off). `(kind, index into its stats,
    /// name)`.
    ///
    /// # Errors
    /// An unknown name, or a kind that is not evaluated, naming the field.
    pub fn target(
        &self,
        kinds: &[crate::models::EvalKind],
    ) -> Result<Option<(crate::models::EvalKind, usize, String)>, String> {
        use crate::models::EvalKind;
        let name = match self {
            Self::Enabled(false) => return Ok(None),
            Self::Enabled(true) => match kinds.first() {
                None => return Ok(None),
                Some(EvalKind::Proposal) => "proposal_AR@1000".to_string(),
                Some(k) => format!("{k}_mAP"),
            },
            Self::Metric(m) => m.clone(),
        };
        let (kind, figure) = name.split_once('_').ok_or_else(|| {
            format!(
                "evaluation.save_best: `{name}` is not of the form bbox_mAP, segm_mAP_50, proposal_AR@1000"
            )
        })?;
        let kind: EvalKind = kind
            .parse()
            .map_err(|e| format!("evaluation.save_best: `{name}`: {e}"))?;
        let index = match (kind, figure) {
            (EvalKind::Proposal, "AR@100") => 0,
            (EvalKind::Proposal, "AR@300") => 1,
            (EvalKind::Proposal, "AR@1000") => 2,
            (EvalKind::Bbox | EvalKind::Segm, "mAP") => 0,
            (EvalKind::Bbox | EvalKind::Segm, "mAP_50") => 1,
            (EvalKind::Bbox | EvalKind::Segm, "mAP_75") => 2,
            _ => {
                return Err(format!(
                    "evaluation.save_best: unknown figure `{figure}` of {kind} (bbox/segm: mAP, mAP_50, \
                     mAP_75; proposal: AR@100, AR@300, AR@1000)"
                ));
            }
        };
        if !kinds.contains(&kind) {
            return Err(format!(
                "evaluation.save_best: `{name}`, but {kind} is not evaluated (evaluated: {})",
                kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(Some((kind, index, name)))
    }
}

/// Checkpointing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save every N epochs.
    pub interval: usize,
    /// Keep only the N newest `epoch_N` checkpoints (`best/` is kept besides them, and so is a checkpoint the
    /// run resumed from); absent or `null`: keep every one.
    #[serde(default)]
    pub max_keep_ckpts: Option<usize>,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Write a JSON line every N iterations.
    pub interval: usize,
    /// Also write the logged scalars as TensorBoard event files in `WORK_DIR/tf_logs/`.
    #[serde(default)]
    pub tensorboard: bool,
}

/// Linear learning-rate scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoScaleLrConfig {
    /// Scale (also switched on by `--auto-scale-lr`).
    pub enable: bool,
    /// The batch size the base learning rate was tuned for.
    pub base_batch_size: usize,
}
