//! Detectors: the trait the engine trains and evaluates, the one enum of every detector, and the models.
//!
//! A new detector is a module implementing [`Detector`] and an arm of [`AnyDetector`] (built from its
//! [`ModelConfig`] arm): the engine and the tools only ever see [`AnyDetector`].

use burn::prelude::*;

use crate::config::ModelConfig;
use crate::data::BatchItem;
use crate::ops::RoiAlignBackend;
use crate::structures::ImageMeta;

pub mod cost;
pub mod foreign;
pub mod retinanet;
pub mod timing;
pub mod two_stage;
pub use retinanet::RetinaNet;
pub use two_stage::{Rpn, TwoStage};

/// The backends the detectors run on: every burn backend with a RoIAlign (Flex, CUDA, and `Autodiff` of
/// either). The one bound that generic detector code needs.
pub trait DetBackend: RoiAlignBackend {}

impl<B: RoiAlignBackend> DetBackend for B {}

/// Detections of one image, in the coordinates of the original (unresized, unflipped) image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detections {
    /// Boxes `[x1, y1, x2, y2]` in original-image pixels.
    pub boxes: Vec<[f32; 4]>,
    /// Scores in `[0, 1]`, descending.
    pub scores: Vec<f32>,
    /// 0-based class indices.
    pub labels: Vec<usize>,
    /// Instance masks at the original image size, one per box (detectors with a mask branch); `None`
    /// otherwise.
    pub masks: Option<Vec<attndet_coco::mask::Rle>>,
}

impl Detections {
    /// Number of detections.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether there is no detection.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}

/// What a loss term was averaged over: the term is `sum / max(count, min)` (mmdetection's `avg_factor`, or the
/// element count of a plain mean), where `count` **adds up over images** (numbers of positives, of sampled
/// anchors or RoIs, of mask pixels) and `min` is the clamp applied to the batch total (1 for "at least one
/// positive", 0 when there is none). A clamp applied per image is part of `count`, not `min`.
///
/// This lets data-parallel training divide by the normaliser of the whole global batch: a replica rescales
/// its term by [`Normaliser::rescale`] with the count summed over replicas, so that the averaged gradient is
/// the one of a single device with the global batch. Heads only report what they divided by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normaliser {
    /// The count over this batch, additive over images.
    pub count: f64,
    /// Lower bound of the divisor.
    pub min: f64,
}

impl Normaliser {
    /// A term divided by `max(count, min)`.
    pub fn new(count: f64, min: f64) -> Self {
        Self { count, min }
    }

    /// The divisor used: `max(count, min)`.
    pub fn divisor(&self) -> f64 {
        self.count.max(self.min)
    }

    /// The factor that turns this batch's term into its share of the term averaged over a larger batch
    /// whose counts sum to `total_count`: `divisor(count) / divisor(total_count)` (1 when the total divisor
    /// is 0: then every share is an empty, zero term).
    pub fn rescale(&self, total_count: f64) -> f64 {
        let total = total_count.max(self.min);
        if total > 0.0 { self.divisor() / total } else { 1.0 }
    }
}

/// One named loss term of a batch and what it was averaged over.
#[derive(Debug, Clone)]
pub struct LossTerm<B: Backend> {
    /// e.g. `"loss_cls"`.
    pub name: &'static str,
    /// The term, a scalar `[1]`: `sum / normaliser.divisor()`.
    pub value: Tensor<B, 1>,
    /// What the sum was divided by.
    pub normaliser: Normaliser,
}

impl<B: Backend> LossTerm<B> {
    /// A term named `name`.
    pub fn new(name: &'static str, value: Tensor<B, 1>, normaliser: Normaliser) -> Self {
        Self {
            name,
            value,
            normaliser,
        }
    }

    /// The term renamed and scaled by a loss weight (a cascade stage's). The normaliser is unchanged: a
    /// constant factor commutes with the rescaling across replicas.
    pub fn weighted(self, name: &'static str, weight: f32) -> Self {
        Self {
            name,
            value: self.value * weight,
            normaliser: self.normaliser,
        }
    }
}

/// Named loss terms of one batch; the total is their sum.
#[derive(Debug, Clone)]
pub struct Losses<B: Backend> {
    /// The terms, e.g. `loss_cls`, `loss_bbox`.
    pub terms: Vec<LossTerm<B>>,
}

impl<B: Backend> Losses<B> {
    /// Sum of the terms.
    pub fn total(&self) -> Tensor<B, 1> {
        let device = self.terms.first().map(|t| t.value.device()).unwrap_or_default();
        self.terms
            .iter()
            .fold(Tensor::zeros([1], &device), |acc, t| acc + t.value.clone())
    }
}

/// A model failure caused by its input (wrong shapes, bad annotations).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub String);

/// What a detector's predictions are evaluated as: the COCO IoU types, and proposal recall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalKind {
    /// Box AP (the 12 COCO stats).
    Bbox,
    /// Mask AP.
    Segm,
    /// Class-agnostic box recall of region proposals (AR@100/300/1000, and small/medium/large AR@1000).
    Proposal,
}

impl EvalKind {
    /// The name used in configs, logs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bbox => "bbox",
            Self::Segm => "segm",
            Self::Proposal => "proposal",
        }
    }
}

impl std::fmt::Display for EvalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EvalKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bbox" => Ok(Self::Bbox),
            "segm" => Ok(Self::Segm),
            "proposal" => Ok(Self::Proposal),
            _ => Err(format!("unknown metric `{s}`: expected bbox, segm or proposal")),
        }
    }
}

/// What the engine needs from a detector.
pub trait Detector<B: Backend> {
    /// Training losses of a batch.
    ///
    /// # Shapes
    /// - images: `[N, 3, H, W]`, normalised and padded; `items`: N entries with the ground truth in the
    ///   transformed image
    fn losses(&self, images: Tensor<B, 4>, items: &[BatchItem]) -> Result<Losses<B>, ModelError>;

    /// Detections of a batch, mapped back to each original image.
    ///
    /// # Shapes
    /// - images: `[N, 3, H, W]`; metas: N entries; output: N entries
    fn predict(&self, images: Tensor<B, 4>, metas: &[ImageMeta]) -> Result<Vec<Detections>, ModelError>;

    /// What the predictions are evaluated as, the main metric first (bbox for box detectors, bbox and segm
    /// with a mask branch, proposal for a region proposal network alone).
    fn eval_kinds(&self) -> Vec<EvalKind> {
        vec![EvalKind::Bbox]
    }
}

/// Every detector of the zoo, built from its [`ModelConfig`] arm.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyDetector<B: Backend> {
    /// RetinaNet.
    RetinaNet(RetinaNet<B>),
    /// A region proposal network alone.
    Rpn(Rpn<B>),
    /// Faster R-CNN (and the two-stage detectors built on its seam).
    TwoStage(TwoStage<B>),
}

impl<B: DetBackend> AnyDetector<B> {
    /// Build the configured detector (backbone weights from its `init_checkpoint` when given).
    pub fn from_config(cfg: &ModelConfig, device: &B::Device) -> Result<Self, ModelError> {
        Ok(match cfg {
            ModelConfig::RetinaNet(c) => Self::RetinaNet(RetinaNet::from_config(c, device)?),
            ModelConfig::Rpn(c) => Self::Rpn(Rpn::from_config(c, device)?),
            ModelConfig::FasterRcnn(c) | ModelConfig::MaskRcnn(c) => {
                let masks = cfg.trains_masks();
                let is_mask = matches!(cfg, ModelConfig::MaskRcnn(_));
                if masks != is_mask {
                    return Err(ModelError(if is_mask {
                        "model.roi_head.mask_head: a MaskRCNN needs a mask head".into()
                    } else {
                        "model.roi_head.mask_head: a FasterRCNN has no mask head (use \"type\": \"MaskRCNN\")"
                            .into()
                    }));
                }
                Self::TwoStage(TwoStage::from_config(c, device)?)
            }
            ModelConfig::CascadeRcnn(c) => Self::TwoStage(TwoStage::from_cascade_config(c, device)?),
        })
    }

    /// The detector's type name, as in configs (`"type"`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::RetinaNet(_) => "RetinaNet",
            Self::Rpn(_) => "RPN",
            Self::TwoStage(m) if matches!(m.roi_head, crate::roi_heads::AnyRoiHead::Cascade(_)) => {
                "CascadeRCNN"
            }
            Self::TwoStage(m) if m.eval_kinds().contains(&EvalKind::Segm) => "MaskRCNN",
            Self::TwoStage(_) => "FasterRCNN",
        }
    }
}

impl<B: DetBackend> Detector<B> for AnyDetector<B> {
    fn losses(&self, images: Tensor<B, 4>, items: &[BatchItem]) -> Result<Losses<B>, ModelError> {
        match self {
            Self::RetinaNet(m) => m.losses(images, items),
            Self::Rpn(m) => m.losses(images, items),
            Self::TwoStage(m) => m.losses(images, items),
        }
    }

    fn predict(&self, images: Tensor<B, 4>, metas: &[ImageMeta]) -> Result<Vec<Detections>, ModelError> {
        match self {
            Self::RetinaNet(m) => m.predict(images, metas),
            Self::Rpn(m) => m.predict(images, metas),
            Self::TwoStage(m) => m.predict(images, metas),
        }
    }

    fn eval_kinds(&self) -> Vec<EvalKind> {
        match self {
            Self::RetinaNet(m) => m.eval_kinds(),
            Self::Rpn(m) => m.eval_kinds(),
            Self::TwoStage(m) => m.eval_kinds(),
        }
    }
}

/// Build a configured backbone: from the zoo, weights from `init_checkpoint` when given (head-less and
/// whole-detector checkpoints, mmdetection's `backbone.*`, are accepted too), norm_eval and frozen stages
/// applied.
pub fn build_backbone<B: Backend>(
    cfg: &crate::config::BackboneConfig,
    device: &B::Device,
) -> Result<attndet_backbones::AnyBackbone<B>, ModelError> {
    use attndet_backbones::{Backbone, BackboneArch, NormMode};
    let arch = BackboneArch::parse(&cfg.name).map_err(|e| ModelError(format!("model.backbone.name: {e}")))?;
    let mut backbone = arch
        .build::<B>(device)
        .map_err(|e| ModelError(format!("model.backbone: {e}")))?;
    if let Some(path) = &cfg.init_checkpoint {
        backbone
            .load_backbone_weights(&arch, std::path::Path::new(path))
            .map_err(|e| ModelError(format!("model.backbone.init_checkpoint {path}: {e}")))?;
    }
    let backbone = set_norms(backbone, cfg)?;
    let backbone = backbone.with_norm_mode(if cfg.norm_eval {
        NormMode::Frozen
    } else {
        NormMode::Auto
    });
    Ok(if cfg.frozen_stages >= 0 {
        backbone.with_frozen_stages(cfg.frozen_stages as usize)
    } else {
        backbone
    })
}

/// Apply `norm_eps` and `norm_requires_grad` to every BatchNorm of a ResNet-family backbone.
fn set_norms<B: Backend>(
    backbone: attndet_backbones::AnyBackbone<B>,
    cfg: &crate::config::BackboneConfig,
) -> Result<attndet_backbones::AnyBackbone<B>, ModelError> {
    use attndet_backbones::AnyBackbone;
    use attndet_backbones::resnet::block::Block;
    use burn::module::Module;
    use burn::nn::BatchNorm;
    if cfg.norm_eps.is_none() && cfg.norm_requires_grad {
        return Ok(backbone);
    }
    let AnyBackbone::ResNet(mut r) = backbone else {
        return Err(ModelError(format!(
            "model.backbone.norm_eps / norm_requires_grad: supported for the ResNet family, not {}",
            cfg.name
        )));
    };
    let set = |mut bn: BatchNorm<B>| {
        if let Some(eps) = cfg.norm_eps {
            bn.epsilon = eps;
        }
        if cfg.norm_requires_grad { bn } else { bn.no_grad() }
    };
    r.bn1 = set(r.bn1);
    let mut unsupported = None;
    for layer in [&mut r.layer1, &mut r.layer2, &mut r.layer3, &mut r.layer4] {
        *layer = std::mem::take(layer)
            .into_iter()
            .map(|b| match b {
                Block::Basic(mut b) => {
                    b.bn1 = set(b.bn1);
                    b.bn2 = set(b.bn2);
                    b.downsample = b.downsample.map(|mut d| {
                        d.bn = set(d.bn);
                        d
                    });
                    Block::Basic(b)
                }
                Block::Bottleneck(mut b) => {
                    b.bn1 = set(b.bn1);
                    b.bn2 = set(b.bn2);
                    b.bn3 = set(b.bn3);
                    b.downsample = b.downsample.map(|mut d| {
                        d.bn = set(d.bn);
                        d
                    });
                    Block::Bottleneck(b)
                }
                other => {
                    unsupported = Some(cfg.name.clone());
                    other
                }
            })
            .collect();
    }
    if let Some(name) = unsupported {
        return Err(ModelError(format!(
            "model.backbone.norm_eps / norm_requires_grad: not supported for the blocks of {name}"
        )));
    }
    Ok(AnyBackbone::ResNet(r))
}

/// Map a box from the transformed image back to the original (see [`ImageMeta::to_original`]).
pub fn to_original(b: [f32; 4], meta: &ImageMeta) -> [f32; 4] {
    meta.to_original(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisers_rescale_a_share_to_the_global_average() {
        // positives 3 and 0 on two replicas, clamp 1: terms S1 / 3 and S2 / 1; globally (S1 + S2) / 3
        let (a, b) = (Normaliser::new(3.0, 1.0), Normaliser::new(0.0, 1.0));
        assert_eq!(a.rescale(3.0), 1.0);
        assert!((b.rescale(3.0) - 1.0 / 3.0).abs() < 1e-15);
        // no positive anywhere: the divisor stays 1 on both, as on one device
        assert_eq!(b.rescale(0.0), 1.0);
        // per-image clamps live in the count (RPN): 2 + 3 of 5 sampled
        assert_eq!(Normaliser::new(2.0, 0.0).rescale(5.0), 0.4);
        // an empty share (count 0, no clamp): factor 0 of an empty term; all empty: 1
        assert_eq!(Normaliser::new(0.0, 0.0).rescale(4.0), 0.0);
        assert_eq!(Normaliser::new(0.0, 0.0).rescale(0.0), 1.0);
    }

    #[test]
    fn boxes_map_back_through_scale_and_flip() {
        let meta = ImageMeta {
            image_id: 1,
            file: "x.png".into(),
            ori_size: (100, 50),
            img_size: (200, 100),
            scale: (2.0, 2.0),
            flipped: true,
            pad_size: (224, 128),
        };
        // flipped frame box [20, 10, 60, 30] -> unflipped [200 - 60, 10, 200 - 20, 30] = [140, 10, 180, 30]
        // -> / 2 = [70, 5, 90, 15]
        assert_eq!(
            to_original([20.0, 10.0, 60.0, 30.0], &meta),
            [70.0, 5.0, 90.0, 15.0]
        );
        // clipped to the original size
        assert_eq!(
            to_original(
                [-4.0, 0.0, 210.0, 120.0],
                &ImageMeta {
                    flipped: false,
                    ..meta
                }
            ),
            [0.0, 0.0, 100.0, 50.0]
        );
    }
}
