//! mmdetection's `Shared2FCBBoxHead`: pooled RoI features flattened through shared fully connected layers
//! (2 x 1024 + ReLU), then a classifier over `K + 1` classes (background last) and class-specific (or
//! class-agnostic) box deltas. Its targets, its losses, and its inference (softmax, per-class decoding, score
//! threshold, per-class NMS, top-k).
//!
//! Initialisation as mmdetection's: shared layers Xavier-uniform, classifier N(0, 0.01), regressor N(0, 0.001),
//! biases 0.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};

use crate::coders::DeltaXywhCoder;
use crate::config::{BBoxHeadConfig, RcnnTestConfig};
use crate::heads::dense::{int_tensor, rows_tensor};
use crate::heads::rpn::BoxLoss;
use crate::losses::CrossEntropyLoss;
use crate::models::{Detections, LossTerm, ModelError, Normaliser};
use crate::ops::batched_nms_host;
use crate::samplers::SamplingResult;
use crate::structures::ImageMeta;

fn err(field: &'static str) -> impl Fn(crate::structures::BlocksError) -> ModelError {
    move |e| ModelError(format!("{field}: {e}"))
}

/// Coder and losses of a box head.
#[derive(Debug, Clone)]
pub struct BBoxHeadParts {
    coder: DeltaXywhCoder,
    loss_cls: CrossEntropyLoss,
    loss_bbox: BoxLoss,
}

/// The box head's layers.
#[derive(Module, Debug)]
pub struct BBoxHead<B: Backend> {
    /// Shared fully connected layers.
    pub shared_fcs: Vec<Linear<B>>,
    /// Classifier, `K + 1` outputs (background last).
    pub fc_cls: Linear<B>,
    /// Deltas, `4 K` (class-specific, class `c` at columns `4c..4c+4`) or 4 outputs.
    pub fc_reg: Linear<B>,
    num_classes: usize,
    reg_class_agnostic: bool,
    parts: BBoxHeadParts,
}

fn linear<B: Backend>(din: usize, dout: usize, init: Initializer, device: &B::Device) -> Linear<B> {
    let mut l = LinearConfig::new(din, dout).with_initializer(init).init(device);
    l.bias = Some(Param::from_tensor(Tensor::zeros([dout], device)));
    l
}

/// Targets of the sampled RoIs of a batch, concatenated over images (each image's positives, then its
/// negatives).
///
/// # Shapes
/// - labels: `[R]` (class, `K` for background); bbox_targets: `[R, 4]`; bbox_weights: `[R, 1]`
#[derive(Debug, Clone)]
pub struct RoiTargets<B: Backend> {
    /// Class of each sampled RoI.
    pub labels: Tensor<B, 1, Int>,
    /// Encoded deltas (0 for negatives).
    pub bbox_targets: Tensor<B, 2>,
    /// 1 for positives.
    pub bbox_weights: Tensor<B, 2>,
}

impl BBoxHeadConfig {
    /// Build the head.
    ///
    /// # Errors
    /// Out-of-range config values, naming the field under `prefix`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<BBoxHead<B>, ModelError> {
        if self.num_classes == 0 || self.fc_out_channels == 0 || self.roi_feat_size == 0 {
            return Err(ModelError(
                "model.roi_head.bbox_head: num_classes, fc_out_channels and roi_feat_size must be positive"
                    .into(),
            ));
        }
        let din = self.in_channels * self.roi_feat_size * self.roi_feat_size;
        let shared_fcs = (0..self.num_shared_fcs)
            .map(|i| {
                linear(
                    if i == 0 { din } else { self.fc_out_channels },
                    self.fc_out_channels,
                    Initializer::XavierUniform { gain: 1.0 },
                    device,
                )
            })
            .collect();
        let last = if self.num_shared_fcs == 0 {
            din
        } else {
            self.fc_out_channels
        };
        let reg_out = if self.reg_class_agnostic {
            4
        } else {
            4 * self.num_classes
        };
        Ok(BBoxHead {
            shared_fcs,
            fc_cls: linear(
                last,
                self.num_classes + 1,
                Initializer::Normal { mean: 0.0, std: 0.01 },
                device,
            ),
            fc_reg: linear(
                last,
                reg_out,
                Initializer::Normal {
                    mean: 0.0,
                    std: 0.001,
                },
                device,
            ),
            num_classes: self.num_classes,
            reg_class_agnostic: self.reg_class_agnostic,
            parts: BBoxHeadParts {
                coder: self
                    .bbox_coder
                    .init()
                    .map_err(err("model.roi_head.bbox_head.bbox_coder"))?,
                loss_cls: self.loss_cls.init(),
                loss_bbox: self
                    .loss_bbox
                    .init()
                    .map_err(err("model.roi_head.bbox_head.loss_bbox"))?,
            },
        })
    }
}

impl<B: Backend> BBoxHead<B> {
    /// Object classes (background excluded).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Class logits and deltas of pooled RoI features.
    ///
    /// # Shapes
    /// - x: `[R, C, S, S]`
    /// - output: logits `[R, K + 1]`, deltas `[R, 4 K]` (or `[R, 4]` class-agnostic)
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [r, c, h, w] = x.dims();
        let x = self
            .shared_fcs
            .iter()
            .fold(x.reshape([r, c * h * w]), |x, fc| relu(fc.forward(x)));
        (self.fc_cls.forward(x.clone()), self.fc_reg.forward(x))
    }

    /// Record the head's layers for `rois` pooled RoIs in `counter` (ptflops convention; RoIAlign is not
    /// counted, as in mmdetection's `get_flops`).
    pub fn count_flops(&self, counter: &mut attndet_backbones::cost::CostCounter, rois: usize) {
        for (i, fc) in self.shared_fcs.iter().enumerate() {
            let d = counter.linear(&format!("shared_fcs.{i}"), fc, rois);
            counter.relu(&format!("shared_fcs.{i}.relu"), [d, rois, 1]);
        }
        counter.linear("fc_cls", &self.fc_cls, rois);
        counter.linear("fc_reg", &self.fc_reg, rois);
    }

    /// Targets of the sampled RoIs of every image (mmdetection `BBoxHead.get_targets`).
    ///
    /// # Shapes
    /// - samples: per image; gt_boxes: per image `[M, 4]`
    pub fn targets(
        &self,
        samples: &[SamplingResult<B>],
        gt_boxes: &[Tensor<B, 2>],
    ) -> Result<RoiTargets<B>, ModelError> {
        let device = samples.first().map(|s| s.priors.device()).unwrap_or_default();
        let k = self.num_classes as i64;
        let (mut labels, mut targets, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for (s, gt) in samples.iter().zip(gt_boxes) {
            let (p, q) = (s.pos_inds.dims()[0], s.neg_inds.dims()[0]);
            if p > 0 {
                let matched = gt.clone().select(0, s.pos_gt_inds.clone());
                let enc = self
                    .parts
                    .coder
                    .encode(s.pos_priors(), matched)
                    .map_err(err("bbox targets"))?;
                labels.push(s.pos_gt_labels.clone());
                targets.push(enc);
                weights.push(Tensor::ones([p, 1], &device));
            }
            if q > 0 {
                labels.push(Tensor::full([q], k, &device));
                targets.push(Tensor::zeros([q, 4], &device));
                weights.push(Tensor::zeros([q, 1], &device));
            }
        }
        if labels.is_empty() {
            return Ok(RoiTargets {
                labels: Tensor::zeros([0], &device),
                bbox_targets: Tensor::zeros([0, 4], &device),
                bbox_weights: Tensor::zeros([0, 1], &device),
            });
        }
        Ok(RoiTargets {
            labels: Tensor::cat(labels, 0),
            bbox_targets: Tensor::cat(targets, 0),
            bbox_weights: Tensor::cat(weights, 0),
        })
    }

    /// The deltas of each RoI for its target class (class-specific regression), or the shared deltas.
    ///
    /// # Shapes
    /// - deltas: `[R, 4 K]` or `[R, 4]`; labels: `[R]` (background rows take class 0's: their weight is 0)
    /// - output: `[R, 4]`
    fn deltas_of_class(&self, deltas: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        if self.reg_class_agnostic {
            return deltas;
        }
        let r = deltas.dims()[0];
        let k = self.num_classes as i64;
        let cls = labels.clone().mask_fill(labels.greater_equal_elem(k), 0);
        let cols = (cls.reshape([r, 1]) * 4).repeat_dim(1, 4)
            + Tensor::<B, 1, Int>::arange(0..4, &deltas.device()).reshape([1, 4]);
        deltas.gather(1, cols)
    }

    /// `(loss_cls, loss_bbox)`: cross-entropy over the sampled RoIs and the box loss of the positives on their
    /// class's deltas, both normalised by the number of sampled RoIs, at least 1 (mmdetection's `avg_factor`s;
    /// reported as [`Normaliser`] `(R, 1)`). Every RoI head built on this box head (standard, cascade stages)
    /// gets its normalisers from here.
    ///
    /// # Shapes
    /// - logits: `[R, K + 1]`, deltas: `[R, 4 K]` or `[R, 4]`, targets for the same `R` rows
    pub fn losses(
        &self,
        logits: Tensor<B, 2>,
        deltas: Tensor<B, 2>,
        targets: &RoiTargets<B>,
    ) -> Result<(LossTerm<B>, LossTerm<B>), ModelError> {
        let r = logits.dims()[0];
        let device = logits.device();
        let avg = Tensor::<B, 1>::from_floats([r.max(1) as f32], &device);
        let loss_cls = self
            .parts
            .loss_cls
            .forward(logits, targets.labels.clone(), None, Some(avg.clone()))
            .map_err(err("loss_cls"))?;
        let pred = self.deltas_of_class(deltas, targets.labels.clone());
        let loss_bbox = self
            .parts
            .loss_bbox
            .forward(
                pred,
                targets.bbox_targets.clone(),
                Some(targets.bbox_weights.clone()),
                Some(avg),
            )
            .map_err(err("loss_bbox"))?;
        let norm = Normaliser::new(r as f64, 1.0);
        Ok((
            LossTerm::new("loss_cls", loss_cls, norm),
            LossTerm::new("loss_bbox", loss_bbox, norm),
        ))
    }

    /// mmdetection's `regress_by_class`: each RoI moved by its deltas for `labels` (the shared deltas when
    /// class-agnostic), clipped to `img_hw`. The boxes one cascade stage hands the next.
    ///
    /// # Shapes
    /// - rois: `[R, 4]`; labels: `[R]` (classes `< K`); deltas: `[R, 4 K]` or `[R, 4]`; output: `[R, 4]`
    pub fn regress_by_class(
        &self,
        rois: Tensor<B, 2>,
        labels: Tensor<B, 1, Int>,
        deltas: Tensor<B, 2>,
        img_hw: [usize; 2],
    ) -> Result<Tensor<B, 2>, ModelError> {
        if rois.dims()[0] == 0 {
            return Ok(rois);
        }
        let d = self.deltas_of_class(deltas, labels);
        self.parts
            .coder
            .decode(rois, d, Some(img_hw))
            .map_err(err("regress_by_class"))
    }

    /// Class probabilities `[R, K + 1]` and the boxes of every class `[R, K, 4]` (the same box for every class
    /// when class-agnostic), decoded against `rois` and clipped to `img_hw`.
    ///
    /// # Shapes
    /// - rois: `[R, 4]` in the resized image; logits `[R, K + 1]`; deltas `[R, 4 K]` or `[R, 4]`
    pub fn decode(
        &self,
        rois: Tensor<B, 2>,
        logits: Tensor<B, 2>,
        deltas: Tensor<B, 2>,
        img_hw: [usize; 2],
    ) -> Result<(Tensor<B, 2>, Tensor<B, 3>), ModelError> {
        let r = rois.dims()[0];
        let k = self.num_classes;
        let probs = softmax(logits, 1);
        let per = if self.reg_class_agnostic { 1 } else { k };
        let priors = rois.reshape([r, 1, 4]).repeat_dim(1, per).reshape([r * per, 4]);
        let boxes = self
            .parts
            .coder
            .decode(priors, deltas.reshape([r * per, 4]), Some(img_hw))
            .map_err(err("bbox decode"))?
            .reshape([r, per, 4]);
        let boxes = if per == 1 { boxes.repeat_dim(1, k) } else { boxes };
        Ok((probs, boxes))
    }

    /// mmdetection's `multiclass_nms` on one image's decoded RoIs: every (RoI, class) pair scoring above the
    /// threshold, per-class NMS, the best `max_per_img`, mapped back to the original image.
    ///
    /// # Shapes
    /// - probs: `[R, K + 1]`, boxes: `[R, K, 4]` (host reads of [`BBoxHead::decode`]'s outputs, row-major)
    /// - output: the detections (original image) and their boxes in the resized image
    pub fn post_process(
        &self,
        probs: &[f32],
        boxes: &[f32],
        r: usize,
        test: &RcnnTestConfig,
        meta: &ImageMeta,
    ) -> (Detections, Vec<[f32; 4]>) {
        let k = self.num_classes;
        let (mut cand_boxes, mut scores, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        let min = test.min_bbox_size as f32;
        for i in 0..r {
            for c in 0..k {
                let s = probs[i * (k + 1) + c];
                if s <= test.score_thr as f32 {
                    continue;
                }
                let o = (i * k + c) * 4;
                let b = [boxes[o], boxes[o + 1], boxes[o + 2], boxes[o + 3]];
                if min > 0.0 && (b[2] - b[0] < min || b[3] - b[1] < min) {
                    continue;
                }
                cand_boxes.push(b);
                scores.push(s);
                labels.push(c as i64);
            }
        }
        let keep = batched_nms_host(&cand_boxes, &scores, &labels, test.nms_iou_thr as f32);
        let mut det = Detections::default();
        let mut resized = Vec::new();
        for &j in keep.iter().take(test.max_per_img) {
            det.boxes.push(meta.to_original(cand_boxes[j]));
            det.scores.push(scores[j]);
            det.labels.push(labels[j] as usize);
            resized.push(cand_boxes[j]);
        }
        (det, resized)
    }
}

/// `[R, 5]` RoIs `(batch_index, x1, y1, x2, y2)` from per-image boxes.
pub fn rois_tensor<B: Backend>(per_image: &[Tensor<B, 2>], device: &B::Device) -> Tensor<B, 2> {
    let parts: Vec<Tensor<B, 2>> = per_image
        .iter()
        .enumerate()
        .filter(|(_, b)| b.dims()[0] > 0)
        .map(|(i, b)| {
            let n = b.dims()[0];
            Tensor::cat(vec![Tensor::full([n, 1], i as f32, device), b.clone()], 1)
        })
        .collect();
    if parts.is_empty() {
        Tensor::zeros([0, 5], device)
    } else {
        Tensor::cat(parts, 0)
    }
}

/// Upload host boxes and labels (helpers shared by the RoI heads).
pub fn gt_tensors<B: Backend>(
    boxes: &[[f32; 4]],
    labels: &[usize],
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    (
        rows_tensor(boxes, device),
        int_tensor(labels.iter().map(|&l| l as i64).collect(), device),
    )
}
