//! Second stages of two-stage detectors: a RoI head takes the FPN features and each image's proposals, and
//! gives losses (training) or detections (inference). A standard head, a cascade head and a head with a
//! mask branch all plug into [`crate::models::TwoStage`] through [`RoiHead`] and an arm of [`AnyRoiHead`].

use burn::prelude::*;

use crate::config::{RcnnTestConfig, RcnnTrainConfig, RoiHeadConfig};
use crate::heads::rpn::Proposals;
use crate::models::{DetBackend, Detections, EvalKind, ModelError};
use crate::structures::{GroundTruth, ImageMeta};

pub mod bbox_head;
pub mod cascade;
pub mod mask_head;
pub mod stage;
pub mod standard;

pub use bbox_head::BBoxHead;
pub use cascade::CascadeRoiHead;
pub use standard::StandardRoiHead;

/// Named loss terms of a RoI head, each with what it was averaged over.
pub type RoiLosses<B> = Vec<crate::models::LossTerm<B>>;

/// What a two-stage detector needs from its second stage.
pub trait RoiHead<B: Backend> {
    /// Training losses.
    ///
    /// # Shapes
    /// - feats: the FPN levels, finest first, each `[N, C, H_l, W_l]`
    /// - proposals, gts, seeds, metas: N entries (proposals and ground truth in the resized image; each
    ///   image's seed for its sampling; its meta, whose resized size clips refined boxes)
    fn losses(
        &self,
        feats: &[Tensor<B, 4>],
        proposals: &[Proposals],
        gts: &[&GroundTruth],
        seeds: &[u64],
        metas: &[&ImageMeta],
    ) -> Result<RoiLosses<B>, ModelError>;

    /// Detections of each image, mapped back to its original size.
    fn predict(
        &self,
        feats: &[Tensor<B, 4>],
        proposals: &[Proposals],
        metas: &[&ImageMeta],
    ) -> Result<Vec<Detections>, ModelError>;

    /// What the detections are evaluated as.
    fn eval_kinds(&self) -> Vec<EvalKind> {
        vec![EvalKind::Bbox]
    }
}

/// Every RoI head, built from its [`RoiHeadConfig`] arm.
// One head per model: the size difference between the arms does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyRoiHead<B: Backend> {
    /// Faster R-CNN's.
    Standard(StandardRoiHead<B>),
    /// Cascade R-CNN's.
    Cascade(CascadeRoiHead<B>),
}

impl<B: Backend> AnyRoiHead<B> {
    /// Build the configured head for FPN levels of `level_strides`; `train`: the second-stage target
    /// settings, one per stage (one for the standard head).
    pub fn from_config(
        cfg: &RoiHeadConfig,
        train: &[RcnnTrainConfig],
        test: &RcnnTestConfig,
        level_strides: &[usize],
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        Ok(match cfg {
            RoiHeadConfig::Standard(c) => {
                let [train] = train else {
                    return Err(ModelError(format!(
                        "model.train_cfg.rcnn: {} entries for a StandardRoIHead, which has one stage",
                        train.len()
                    )));
                };
                Self::Standard(c.init(train, test, level_strides, device)?)
            }
            RoiHeadConfig::Cascade(c) => Self::Cascade(c.init(train, test, level_strides, device)?),
        })
    }
}

impl<B: DetBackend> RoiHead<B> for AnyRoiHead<B> {
    fn losses(
        &self,
        feats: &[Tensor<B, 4>],
        proposals: &[Proposals],
        gts: &[&GroundTruth],
        seeds: &[u64],
        metas: &[&ImageMeta],
    ) -> Result<RoiLosses<B>, ModelError> {
        match self {
            Self::Standard(h) => h.losses(feats, proposals, gts, seeds, metas),
            Self::Cascade(h) => h.losses(feats, proposals, gts, seeds, metas),
        }
    }

    fn predict(
        &self,
        feats: &[Tensor<B, 4>],
        proposals: &[Proposals],
        metas: &[&ImageMeta],
    ) -> Result<Vec<Detections>, ModelError> {
        match self {
            Self::Standard(h) => h.predict(feats, proposals, metas),
            Self::Cascade(h) => h.predict(feats, proposals, metas),
        }
    }

    fn eval_kinds(&self) -> Vec<EvalKind> {
        match self {
            Self::Standard(h) => h.eval_kinds(),
            Self::Cascade(h) => h.eval_kinds(),
        }
    }
}
