//! The region proposal network (Ren et al. 2015) as mmdetection builds it: a shared 3x3 conv + ReLU over each
//! FPN level, then a 1x1 conv to `A` objectness logits and one to `A * 4` deltas. Anchors are assigned with
//! MaxIoU (0.7 / 0.3, low-quality matches at >= 0.3), 256 are sampled per image (half positive), trained
//! with sigmoid BCE + L1 normalised by the sampled count; proposals are the per-level top `nms_pre`,
//! decoded, with NMS grouped by level and the best `max_per_img` kept.

use attndet_backbones::fused;
use attndet_backbones::layers::Activation;
use attndet_backbones::norm::NormMode;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::dense::{LevelOnHost, Sampling, dense_targets, image_candidates};
use super::retina::flatten_anchors;
use crate::anchors::{AnchorGenerator, anchor_inside_flags};
use crate::assigners::MaxIouAssigner;
use crate::coders::DeltaXywhCoder;
use crate::config::{BoxLossConfig, ProposalConfig, RpnHeadConfig, RpnTrainConfig};
use crate::losses::{BinaryCrossEntropyLoss, L1Loss, SmoothL1Loss};
use crate::models::{LossTerm, ModelError, Normaliser};
use crate::ops::batched_nms_host;
use crate::structures::{GroundTruth, ImageMeta};

fn model_err(field: &str) -> impl Fn(crate::structures::BlocksError) -> ModelError + '_ {
    move |e| ModelError(format!("{field}: {e}"))
}

/// A box regression loss (L1 or smooth L1), built from [`BoxLossConfig`].
#[derive(Debug, Clone, PartialEq)]
pub enum BoxLoss {
    /// L1.
    L1(L1Loss),
    /// Smooth L1.
    SmoothL1(SmoothL1Loss),
}

impl BoxLossConfig {
    /// Builds the loss.
    ///
    /// # Errors
    /// A smooth L1 `beta` that is not positive.
    pub fn init(&self) -> Result<BoxLoss, crate::structures::BlocksError> {
        Ok(match self {
            Self::L1Loss(c) => BoxLoss::L1(c.init()),
            Self::SmoothL1Loss(c) => BoxLoss::SmoothL1(c.init()?),
        })
    }
}

impl BoxLoss {
    /// The loss.
    ///
    /// # Shapes
    /// - pred, target: `[N, 4]`; weight: `[N, 4]` or `[N, 1]`; avg_factor: `[1]`; output: `[1]`
    pub fn forward<B: Backend>(
        &self,
        pred: Tensor<B, 2>,
        target: Tensor<B, 2>,
        weight: Option<Tensor<B, 2>>,
        avg_factor: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 1>, crate::structures::BlocksError> {
        match self {
            Self::L1(l) => l.forward(pred, target, weight, avg_factor),
            Self::SmoothL1(l) => l.forward(pred, target, weight, avg_factor),
        }
    }
}

/// The non-trainable parts of the RPN: anchors, coder, assignment, sampling, losses, proposal settings.
#[derive(Debug, Clone)]
pub struct RpnParts {
    anchors: AnchorGenerator,
    coder: DeltaXywhCoder,
    assigner: MaxIouAssigner,
    sampler: crate::samplers::RandomSampler,
    allowed_border: i32,
    loss_cls: BinaryCrossEntropyLoss,
    loss_bbox: BoxLoss,
    train_proposals: ProposalConfig,
    test_proposals: ProposalConfig,
}

/// The RPN head's modules and settings.
#[derive(Module, Debug)]
pub struct RpnHead<B: Backend> {
    /// Shared 3x3 conv.
    pub rpn_conv: Conv2d<B>,
    /// Objectness logits, `A` channels.
    pub rpn_cls: Conv2d<B>,
    /// Deltas, `A * 4` channels.
    pub rpn_reg: Conv2d<B>,
    num_anchors: usize,
    parts: RpnParts,
}

/// Salt of the RPN's anchor-sampling stream (the image seed is shared with other random choices).
const RPN_SAMPLING_SALT: u64 = 0x0052_504E; // "RPN"

fn normal_conv<B: Backend>(cin: usize, cout: usize, k: usize, device: &B::Device) -> Conv2d<B> {
    let pad = k / 2;
    let mut conv = Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
        .init(device);
    conv.bias = Some(Param::from_tensor(Tensor::zeros([cout], device)));
    conv
}

/// Proposals of one image, in the resized image's pixels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Proposals {
    /// Boxes `[x1, y1, x2, y2]`, by descending score.
    pub boxes: Vec<[f32; 4]>,
    /// Objectness scores (sigmoid).
    pub scores: Vec<f32>,
}

impl<B: Backend> RpnHead<B> {
    /// Build the head for an FPN of `in_channels` channels whose levels have `level_strides`.
    ///
    /// # Errors
    /// A config value out of range, or anchor strides that differ from the FPN's, naming the field.
    pub fn from_config(
        head: &RpnHeadConfig,
        train: &RpnTrainConfig,
        train_proposals: &ProposalConfig,
        test_proposals: &ProposalConfig,
        in_channels: usize,
        level_strides: &[usize],
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let anchors = head
            .anchor_generator
            .init()
            .map_err(model_err("model.rpn_head.anchor_generator"))?;
        anchors
            .check_level_strides(level_strides)
            .map_err(|e| ModelError(format!("model.rpn_head.anchor_generator.strides: {e}")))?;
        let num_anchors = anchors.num_base_anchors()[0];
        let parts = RpnParts {
            coder: head
                .bbox_coder
                .init()
                .map_err(model_err("model.rpn_head.bbox_coder"))?,
            assigner: train
                .assigner
                .init()
                .map_err(model_err("model.train_cfg.rpn.assigner"))?,
            sampler: train
                .sampler
                .init()
                .map_err(model_err("model.train_cfg.rpn.sampler"))?,
            allowed_border: train.allowed_border,
            loss_cls: head.loss_cls.init(),
            loss_bbox: head
                .loss_bbox
                .init()
                .map_err(model_err("model.rpn_head.loss_bbox"))?,
            train_proposals: train_proposals.clone(),
            test_proposals: test_proposals.clone(),
            anchors,
        };
        if train.sampler.add_gt_as_proposals {
            return Err(ModelError(
                "model.train_cfg.rpn.sampler.add_gt_as_proposals: must be false (anchors are not proposals)"
                    .into(),
            ));
        }
        Ok(Self {
            rpn_conv: normal_conv(in_channels, head.feat_channels, 3, device),
            rpn_cls: normal_conv(head.feat_channels, num_anchors, 1, device),
            rpn_reg: normal_conv(head.feat_channels, num_anchors * 4, 1, device),
            num_anchors,
            parts,
        })
    }

    /// Record the head's layers on every level of `[C, H, W]` in `counter` (ptflops convention).
    pub fn count_flops(
        &self,
        counter: &mut attndet_backbones::cost::CostCounter,
        levels: &[attndet_backbones::cost::Chw],
    ) {
        for &x in levels {
            let y = counter.conv2d("rpn_conv", &self.rpn_conv, x);
            counter.relu("rpn_conv.relu", y);
            counter.conv2d("rpn_cls", &self.rpn_cls, y);
            counter.conv2d("rpn_reg", &self.rpn_reg, y);
        }
    }

    /// Raw outputs of every level, flattened in anchor order.
    ///
    /// # Shapes
    /// - feats: one `[N, C, H_l, W_l]` per level
    /// - output: one `([N, H_l * W_l * A, 1], [N, H_l * W_l * A, 4])` per level
    pub fn forward(&self, feats: &[Tensor<B, 4>]) -> Vec<(Tensor<B, 3>, Tensor<B, 3>)> {
        feats
            .iter()
            .map(|f| {
                let x = fused::conv_bn_act(&self.rpn_conv, None, f.clone(), NormMode::Auto, Activation::Relu);
                (
                    flatten_anchors(fused::conv(&self.rpn_cls, x.clone()), 1),
                    flatten_anchors(fused::conv(&self.rpn_reg, x), 4),
                )
            })
            .collect()
    }

    /// The RPN's losses `(loss_rpn_cls, loss_rpn_bbox)` for head outputs `outs` of a batch of `[H, W]`, both
    /// averaged over the sampled anchors (`max(pos, 1) + max(neg, 1)` per image, added up over images).
    ///
    /// # Shapes
    /// - outs: per level `([N, T_l, 1], [N, T_l, 4])`, sizes: the levels' `[H_l, W_l]`; gts, metas and seeds
    ///   (each image's sampling seed): N entries
    pub fn losses(
        &self,
        outs: &[(Tensor<B, 3>, Tensor<B, 3>)],
        sizes: &[[usize; 2]],
        batch_hw: [usize; 2],
        gts: &[&GroundTruth],
        metas: &[&ImageMeta],
        seeds: &[u64],
    ) -> Result<(LossTerm<B>, LossTerm<B>), ModelError> {
        let p = &self.parts;
        let device = outs[0].0.device();
        let anchors = Tensor::cat(
            p.anchors
                .grid_anchors_in::<B>(sizes, Some(batch_hw), &device)
                .map_err(model_err("anchors"))?,
            0,
        );
        let t = anchors.dims()[0];
        let n = gts.len();
        let cls = Tensor::cat(outs.iter().map(|(c, _)| c.clone()).collect(), 1); // [N, T, 1]
        let reg = Tensor::cat(outs.iter().map(|(_, r)| r.clone()).collect(), 1); // [N, T, 4]
        let (mut labels, mut weights, mut box_t, mut box_w) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut avg_factor = 0usize;
        for ((gt, meta), &seed) in gts.iter().zip(metas).zip(seeds) {
            // each image has its own sampling stream: the targets do not depend on the batching
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ RPN_SAMPLING_SALT);
            let valid = Tensor::cat(
                p.anchors
                    .valid_flags::<B>(sizes, meta.pad_hw(batch_hw), &device)
                    .map_err(model_err("anchors"))?,
                0,
            );
            let valid = anchor_inside_flags(anchors.clone(), valid, meta.img_hw(), p.allowed_border as f32);
            let tg = dense_targets(
                anchors.clone(),
                valid,
                gt,
                1,
                true,
                &p.assigner,
                &p.coder,
                Sampling::Random(&p.sampler, &mut rng),
            )?;
            let (pos, neg) = tg.sampled.unwrap_or_default();
            // mmdetection's SamplingResult.avg_factor: max(pos, 1) + max(neg, 1) per image
            avg_factor += pos.max(1) + neg.max(1);
            // BCE target: 1 for the foreground class (label 0), 0 for background (label 1)
            labels.push(tg.labels.equal_elem(0).float().reshape([t, 1]));
            weights.push(tg.label_weights.reshape([t, 1]));
            box_t.push(tg.box_targets);
            box_w.push(tg.box_weights);
        }
        let avg = Tensor::<B, 1>::from_floats([avg_factor as f32], &device);
        let loss_cls = p
            .loss_cls
            .forward(
                cls.reshape([n * t, 1]),
                Tensor::cat(labels, 0),
                Some(Tensor::cat(weights, 0)),
                Some(avg.clone()),
            )
            .map_err(model_err("loss_rpn_cls"))?;
        let loss_bbox = p
            .loss_bbox
            .forward(
                reg.reshape([n * t, 4]),
                Tensor::cat(box_t, 0),
                Some(Tensor::cat(box_w, 0)),
                Some(avg),
            )
            .map_err(model_err("loss_rpn_bbox"))?;
        // the per-image clamps are part of the count: no clamp on the total
        let norm = Normaliser::new(avg_factor as f64, 0.0);
        Ok((
            LossTerm::new("loss_rpn_cls", loss_cls, norm),
            LossTerm::new("loss_rpn_bbox", loss_bbox, norm),
        ))
    }

    /// Proposals of each image of a batch, with the training or test settings.
    ///
    /// # Shapes
    /// - outs: per level `([N, T_l, 1], [N, T_l, 4])`, sizes: the levels' `[H_l, W_l]`; metas: N entries
    pub fn proposals(
        &self,
        outs: Vec<(Tensor<B, 3>, Tensor<B, 3>)>,
        sizes: &[[usize; 2]],
        metas: &[&ImageMeta],
        training: bool,
    ) -> Result<Vec<Proposals>, ModelError> {
        let p = &self.parts;
        let cfg = if training {
            &p.train_proposals
        } else {
            &p.test_proposals
        };
        if outs.is_empty() {
            return Ok(vec![Proposals::default(); metas.len()]);
        }
        let device = outs[0].0.device();
        // the batch tensor is padded to the largest padded image
        let batch_hw = metas.iter().fold([0, 0], |[h, w], m| {
            [h.max(m.pad_size.1 as usize), w.max(m.pad_size.0 as usize)]
        });
        let anchors = p
            .anchors
            .grid_anchors_in::<B>(sizes, Some(batch_hw), &device)
            .map_err(model_err("anchors"))?;
        // no gradient flows through proposals: read the values off the graph
        let host: Vec<LevelOnHost> = outs
            .into_iter()
            .zip(anchors)
            .map(|((c, r), a)| {
                let c = if cfg.rank_by_logits {
                    c.detach()
                } else {
                    sigmoid(c.detach())
                };
                LevelOnHost::read(c, r.detach(), a)
            })
            .collect();
        let min_size = cfg.min_bbox_size as f32;
        let big_enough = |side: f32| {
            if cfg.min_size_inclusive {
                side >= min_size
            } else {
                side > min_size
            }
        };
        metas
            .iter()
            .enumerate()
            .map(|(i, meta)| {
                let c = image_candidates::<B>(
                    &host,
                    i,
                    1,
                    f32::NEG_INFINITY,
                    cfg.nms_pre,
                    &p.coder,
                    meta.img_hw(),
                    &device,
                )?;
                let keep: Vec<usize> = (0..c.boxes.len())
                    .filter(|&j| {
                        let b = c.boxes[j];
                        big_enough(b[2] - b[0]) && big_enough(b[3] - b[1])
                    })
                    .collect();
                let boxes: Vec<[f32; 4]> = keep.iter().map(|&j| c.boxes[j]).collect();
                let scores: Vec<f32> = keep
                    .iter()
                    .map(|&j| {
                        let s = c.scores[j];
                        if cfg.rank_by_logits {
                            1.0 / (1.0 + (-s).exp())
                        } else {
                            s
                        }
                    })
                    .collect();
                let levels: Vec<i64> = keep.iter().map(|&j| c.levels[j]).collect();
                let kept = batched_nms_host(&boxes, &scores, &levels, cfg.nms_iou_thr as f32);
                Ok(Proposals {
                    boxes: kept.iter().take(cfg.max_per_img).map(|&j| boxes[j]).collect(),
                    scores: kept.iter().take(cfg.max_per_img).map(|&j| scores[j]).collect(),
                })
            })
            .collect()
    }
}
