//! The typed schema of the two-stage detectors (RPN alone, Faster R-CNN), with mmdetection's field names.
//! Every struct rejects unknown fields.

use serde::{Deserialize, Serialize};

use super::BackboneConfig;
use crate::anchors::AnchorGeneratorConfig;
use crate::assigners::MaxIouAssignerConfig;
use crate::coders::DeltaXywhCoderConfig;
use crate::losses::{BinaryCrossEntropyLossConfig, CrossEntropyLossConfig, L1LossConfig, SmoothL1LossConfig};
use crate::necks::FpnConfig;
use crate::ops::RoiExtractorConfig;
use crate::samplers::RandomSamplerConfig;

/// A box regression loss, chosen by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum BoxLossConfig {
    /// `|pred - target|` (mmdetection's Faster R-CNN default).
    L1Loss(L1LossConfig),
    /// Smooth L1 with transition `beta` (torchvision: 1/9; Cascade R-CNN's RPN: 1/9, its RoI heads: 1).
    SmoothL1Loss(SmoothL1LossConfig),
}

/// The region proposal network's head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpnHeadConfig {
    /// Channels of the shared 3x3 conv (the FPN's `out_channels`).
    pub feat_channels: usize,
    /// Anchors: mmdetection's `scales=[8]`, ratios 0.5/1/2, strides 4..64.
    pub anchor_generator: AnchorGeneratorConfig,
    /// Box coder (means 0, stds 1).
    pub bbox_coder: DeltaXywhCoderConfig,
    /// Objectness loss (sigmoid BCE).
    pub loss_cls: BinaryCrossEntropyLossConfig,
    /// Box loss.
    pub loss_bbox: BoxLossConfig,
}

/// How the RPN's training targets are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpnTrainConfig {
    /// Anchor assignment (0.7 / 0.3, low-quality matches at >= 0.3).
    pub assigner: MaxIouAssignerConfig,
    /// Anchor sampling (256 per image, half positive, no GT added).
    pub sampler: RandomSamplerConfig,
    /// Anchors beyond the image by more than this many pixels do not train; -1 keeps every valid anchor.
    #[serde(default = "minus_one")]
    pub allowed_border: i32,
}

fn minus_one() -> i32 {
    -1
}

/// How proposals are made from the RPN's outputs (mmdetection `rpn_proposal` / `test_cfg.rpn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalConfig {
    /// Best-scoring anchors kept per level before NMS.
    pub nms_pre: usize,
    /// Proposals kept per image after NMS.
    pub max_per_img: usize,
    /// IoU threshold of the NMS (grouped by level).
    pub nms_iou_thr: f64,
    /// Proposals with a side of at most this many pixels are dropped (0: drop only empty boxes).
    #[serde(default)]
    pub min_bbox_size: f64,
    /// Keep the proposals whose sides are at least `min_bbox_size` rather than above it (torchvision's
    /// `remove_small_boxes`, with `min_size` 1e-3).
    #[serde(default)]
    pub min_size_inclusive: bool,
    /// Rank each level's anchors by objectness logit, not by its sigmoid (torchvision). The two orders agree
    /// except where the sigmoid rounds distinct logits to one value.
    #[serde(default)]
    pub rank_by_logits: bool,
}

/// A region proposal network alone (mmdetection's `RPN` detector): proposals are its detections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpnConfig {
    /// The backbone.
    pub backbone: BackboneConfig,
    /// The FPN neck.
    pub neck: FpnConfig,
    /// The RPN head.
    pub rpn_head: RpnHeadConfig,
    /// Training settings.
    pub train_cfg: RpnOnlyTrainConfig,
    /// Inference settings.
    pub test_cfg: RpnOnlyTestConfig,
}

/// Training settings of an RPN alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpnOnlyTrainConfig {
    /// Target assignment and sampling.
    pub rpn: RpnTrainConfig,
}

/// Inference settings of an RPN alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpnOnlyTestConfig {
    /// Proposal generation.
    pub rpn: ProposalConfig,
}

/// The box head of a RoI head (mmdetection `Shared2FCBBoxHead`: two shared fully connected layers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BBoxHeadConfig {
    /// Channels of the pooled features (the FPN's).
    pub in_channels: usize,
    /// Pooled feature size (7).
    pub roi_feat_size: usize,
    /// Width of the shared fully connected layers (1024).
    pub fc_out_channels: usize,
    /// Shared fully connected layers (2).
    #[serde(default = "two")]
    pub num_shared_fcs: usize,
    /// Object classes (background excluded: the classifier has `num_classes + 1` outputs, background last).
    pub num_classes: usize,
    /// One box for every class (false) or one shared box (Cascade R-CNN).
    #[serde(default)]
    pub reg_class_agnostic: bool,
    /// Box coder (stds 0.1/0.1/0.2/0.2).
    pub bbox_coder: DeltaXywhCoderConfig,
    /// Classification loss (softmax cross-entropy).
    pub loss_cls: CrossEntropyLossConfig,
    /// Box loss.
    pub loss_bbox: BoxLossConfig,
}

fn two() -> usize {
    2
}

/// The RoI head, chosen by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum RoiHeadConfig {
    /// One box head on one multi-level RoIAlign (Faster R-CNN).
    #[serde(rename = "StandardRoIHead")]
    Standard(StandardRoiHeadConfig),
    /// Stages of box heads, each refining the previous one's boxes (Cascade R-CNN).
    #[serde(rename = "CascadeRoIHead")]
    Cascade(CascadeRoiHeadConfig),
}

impl RoiHeadConfig {
    /// Whether the head has a mask branch.
    pub fn has_mask(&self) -> bool {
        match self {
            Self::Standard(h) => h.mask_head.is_some(),
            Self::Cascade(h) => h.mask_head.is_some(),
        }
    }

    /// Object classes of the (last) box head.
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Standard(h) => h.bbox_head.num_classes,
            Self::Cascade(h) => h.bbox_head.last().map_or(0, |b| b.num_classes),
        }
    }
}

/// mmdetection's `CascadeRoIHead`: `num_stages` box heads, each with its own RoIAlign (one config shared by
/// every stage) and its own assignment (`train_cfg.rcnn[i]`); stage `i`'s refined boxes are stage `i + 1`'s
/// proposals. With `mask_head`, one mask head per stage (Cascade Mask R-CNN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeRoiHeadConfig {
    /// Stages (3).
    pub num_stages: usize,
    /// Weight of each stage's losses (1, 0.5, 0.25).
    pub stage_loss_weights: Vec<f64>,
    /// Multi-level RoIAlign of every stage's box branch (7x7).
    pub bbox_roi_extractor: RoiExtractorConfig,
    /// The box head of each stage (class-agnostic, stds shrinking stage by stage).
    pub bbox_head: Vec<BBoxHeadConfig>,
    /// Multi-level RoIAlign of every stage's mask branch (14x14).
    #[serde(default)]
    pub mask_roi_extractor: Option<RoiExtractorConfig>,
    /// The mask head, one built per stage (Cascade Mask R-CNN).
    #[serde(default)]
    pub mask_head: Option<FcnMaskHeadConfig>,
}

/// mmdetection's `StandardRoIHead`, with the mask branch of Mask R-CNN when `mask_head` is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandardRoiHeadConfig {
    /// Multi-level RoIAlign of the box branch (7x7, finest scale 56).
    pub bbox_roi_extractor: RoiExtractorConfig,
    /// The box head.
    pub bbox_head: BBoxHeadConfig,
    /// Multi-level RoIAlign of the mask branch (14x14).
    #[serde(default)]
    pub mask_roi_extractor: Option<RoiExtractorConfig>,
    /// The mask head (Mask R-CNN).
    #[serde(default)]
    pub mask_head: Option<FcnMaskHeadConfig>,
}

/// mmdetection's `FCNMaskHead`: convs, a 2x deconvolution and per-class mask logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcnMaskHeadConfig {
    /// 3x3 convs (4).
    pub num_convs: usize,
    /// Channels of the pooled features (the FPN's).
    pub in_channels: usize,
    /// Channels of the convs (256).
    pub conv_out_channels: usize,
    /// Pooled size (14); the masks are twice that (28).
    pub roi_feat_size: usize,
    /// Object classes.
    pub num_classes: usize,
    /// One mask for every class (false) or one shared.
    #[serde(default)]
    pub class_agnostic: bool,
    /// Threshold of pasted mask probabilities (0.5).
    pub mask_thr_binary: f64,
    /// Weight of the mask loss.
    #[serde(default = "one")]
    pub loss_weight: f64,
    /// How the predicted class's probabilities are pasted into the image at test time (mmdetection's
    /// `_do_paste_mask` or torchvision's `paste_masks_in_image`).
    #[serde(default)]
    pub paste: MaskConvention,
    /// How the training targets are made: mmdetection's (the instance mask pooled by aligned RoIAlign,
    /// binarised at 0.5) or torchvision's (`project_masks_on_boxes`: RoIAlign with `aligned=False`, the pooled
    /// fractions kept as soft targets).
    #[serde(default)]
    pub targets: MaskConvention,
}

/// Whose convention a step of the mask branch follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskConvention {
    /// mmdetection's (our default).
    #[default]
    Mmdetection,
    /// torchvision's.
    Torchvision,
}

fn one() -> f64 {
    1.0
}

/// How the second stage's targets are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RcnnTrainConfig {
    /// Proposal assignment (0.5 / 0.5; low-quality matches off for Faster R-CNN, on for Mask R-CNN).
    pub assigner: MaxIouAssignerConfig,
    /// Proposal sampling (512 per image, a quarter positive, ground truth added as proposals).
    pub sampler: RandomSamplerConfig,
}

/// Inference of the second stage (mmdetection `multiclass_nms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RcnnTestConfig {
    /// Minimum class score of a detection.
    pub score_thr: f64,
    /// IoU threshold of the per-class NMS.
    pub nms_iou_thr: f64,
    /// Detections kept per image.
    pub max_per_img: usize,
    /// Detections with a side of at most this many pixels are dropped before NMS (torchvision: 0.01; 0: off).
    #[serde(default)]
    pub min_bbox_size: f64,
}

/// Training settings of a two-stage detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoStageTrainConfig {
    /// RPN targets.
    pub rpn: RpnTrainConfig,
    /// Proposals made in training.
    pub rpn_proposal: ProposalConfig,
    /// Second-stage targets.
    pub rcnn: RcnnTrainConfig,
}

/// Training settings of a Cascade R-CNN: the RPN's, and one second-stage assignment per stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeTrainConfig {
    /// RPN targets.
    pub rpn: RpnTrainConfig,
    /// Proposals made in training.
    pub rpn_proposal: ProposalConfig,
    /// Each stage's targets (IoU 0.5, 0.6, 0.7).
    pub rcnn: Vec<RcnnTrainConfig>,
}

/// Cascade R-CNN and Cascade Mask R-CNN (mmdetection's `CascadeRCNN`): a two-stage detector whose RoI head
/// has one set of targets per stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    /// The backbone.
    pub backbone: BackboneConfig,
    /// The FPN neck.
    pub neck: FpnConfig,
    /// The RPN head.
    pub rpn_head: RpnHeadConfig,
    /// The RoI head (`CascadeRoIHead`).
    pub roi_head: RoiHeadConfig,
    /// Training settings.
    pub train_cfg: CascadeTrainConfig,
    /// Inference settings.
    pub test_cfg: TwoStageTestConfig,
}

/// Inference settings of a two-stage detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoStageTestConfig {
    /// Proposals made at test time.
    pub rpn: ProposalConfig,
    /// The second stage's post-processing.
    pub rcnn: RcnnTestConfig,
}

/// A two-stage detector: backbone, FPN, RPN and a RoI head (Faster R-CNN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoStageConfig {
    /// The backbone.
    pub backbone: BackboneConfig,
    /// The FPN neck.
    pub neck: FpnConfig,
    /// The RPN head.
    pub rpn_head: RpnHeadConfig,
    /// The RoI head.
    pub roi_head: RoiHeadConfig,
    /// Training settings.
    pub train_cfg: TwoStageTrainConfig,
    /// Inference settings.
    pub test_cfg: TwoStageTestConfig,
    /// Layout of the whole-detector checkpoints it reads.
    #[serde(default)]
    pub layout: super::Layout,
    /// How its classes become category ids.
    #[serde(default)]
    pub class_ids: super::ClassIds,
}
