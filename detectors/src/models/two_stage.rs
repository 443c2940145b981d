//! Two-stage detectors in the spirit of torchvision's `GeneralizedRCNN`: a zoo backbone, an FPN, a region
//! proposal network and a RoI head. Faster R-CNN is a [`TwoStage`] with the standard RoI head; a region
//! proposal network trained alone is an [`Rpn`], whose detections are its proposals.

use attndet_backbones::{AnyBackbone, Backbone};
use burn::prelude::*;

use super::{Detections, Detector, EvalKind, Losses, ModelError, build_backbone};
use crate::config::{CascadeConfig, RpnConfig, TwoStageConfig};
use crate::data::BatchItem;
use crate::heads::rpn::{Proposals, RpnHead};
use crate::necks::Fpn;
use crate::roi_heads::{AnyRoiHead, RoiHead};
use crate::structures::{GroundTruth, ImageMeta};

/// FPN levels of a batch (finest first, `[N, C, H_l, W_l]` each) and their `[H_l, W_l]`.
type Pyramid<B> = (Vec<Tensor<B, 4>>, Vec<[usize; 2]>);

/// FPN features of a batch and their `[H_l, W_l]`.
fn pyramid<B: Backend>(
    backbone: &AnyBackbone<B>,
    neck: &Fpn<B>,
    images: Tensor<B, 4>,
) -> Result<Pyramid<B>, ModelError> {
    use super::timing::{Stage, mark};
    let device = images.device();
    let feats = backbone.forward_features(images);
    mark::<B>(Stage::Backbone, &device);
    let pyramid = neck
        .forward(feats)
        .map_err(|e| ModelError(format!("neck: {e}")))?;
    mark::<B>(Stage::Neck, &device);
    let sizes = pyramid.iter().map(|p| [p.dims()[2], p.dims()[3]]).collect();
    Ok((pyramid, sizes))
}

fn check_batch(n: usize, items: usize) -> Result<(), ModelError> {
    if n != items {
        return Err(ModelError(format!(
            "images: batch of {n} with {items} annotation sets"
        )));
    }
    Ok(())
}

/// The RPN's loss terms over a batch.
fn rpn_losses<B: Backend>(
    rpn: &RpnHead<B>,
    outs: &[(Tensor<B, 3>, Tensor<B, 3>)],
    sizes: &[[usize; 2]],
    batch_hw: [usize; 2],
    items: &[BatchItem],
) -> Result<Vec<super::LossTerm<B>>, ModelError> {
    let gts: Vec<&GroundTruth> = items.iter().map(|i| &i.gt).collect();
    let metas: Vec<&ImageMeta> = items.iter().map(|i| &i.meta).collect();
    let seeds: Vec<u64> = items.iter().map(|i| i.seed).collect();
    let (cls, reg) = rpn.losses(outs, sizes, batch_hw, &gts, &metas, &seeds)?;
    Ok(vec![cls, reg])
}

/// What every two-stage detector starts with: the backbone, its FPN, the RPN, and the FPN levels' strides.
struct Trunk<B: Backend> {
    backbone: AnyBackbone<B>,
    neck: Fpn<B>,
    rpn_head: RpnHead<B>,
    strides: Vec<usize>,
}

impl<B: Backend> Trunk<B> {
    /// Build the trunk; `proposals`: the training and the test proposal settings.
    fn build(
        backbone: &crate::config::BackboneConfig,
        neck: &crate::necks::FpnConfig,
        rpn_head: &crate::config::RpnHeadConfig,
        rpn_train: &crate::config::RpnTrainConfig,
        [train, test]: [&crate::config::ProposalConfig; 2],
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let backbone_module = build_backbone::<B>(backbone, device)?;
        let neck_module = neck
            .init::<B>(&backbone_module.feature_specs(), device)
            .map_err(|e| ModelError(format!("model.neck: {e}")))?;
        let strides: Vec<usize> = neck_module.output_specs().iter().map(|s| s.stride).collect();
        let rpn_head = RpnHead::from_config(
            rpn_head,
            rpn_train,
            train,
            test,
            neck.out_channels,
            &strides,
            device,
        )?;
        Ok(Self {
            backbone: backbone_module,
            neck: neck_module,
            rpn_head,
            strides,
        })
    }
}

/// A backbone, an FPN, an RPN and a RoI head (Faster R-CNN with the standard head).
#[derive(Module, Debug)]
pub struct TwoStage<B: Backend> {
    /// Backbone from the zoo.
    pub backbone: AnyBackbone<B>,
    /// FPN.
    pub neck: Fpn<B>,
    /// Region proposal network.
    pub rpn_head: RpnHead<B>,
    /// Second stage.
    pub roi_head: AnyRoiHead<B>,
}

impl<B: Backend> TwoStage<B> {
    /// Build from a config.
    pub fn from_config(cfg: &TwoStageConfig, device: &B::Device) -> Result<Self, ModelError> {
        let trunk = Trunk::build(
            &cfg.backbone,
            &cfg.neck,
            &cfg.rpn_head,
            &cfg.train_cfg.rpn,
            [&cfg.train_cfg.rpn_proposal, &cfg.test_cfg.rpn],
            device,
        )?;
        Self::assemble(
            trunk,
            &cfg.roi_head,
            std::slice::from_ref(&cfg.train_cfg.rcnn),
            &cfg.test_cfg.rcnn,
            device,
        )
    }

    /// Build a Cascade R-CNN (one second-stage target setting per stage).
    pub fn from_cascade_config(cfg: &CascadeConfig, device: &B::Device) -> Result<Self, ModelError> {
        let trunk = Trunk::build(
            &cfg.backbone,
            &cfg.neck,
            &cfg.rpn_head,
            &cfg.train_cfg.rpn,
            [&cfg.train_cfg.rpn_proposal, &cfg.test_cfg.rpn],
            device,
        )?;
        Self::assemble(
            trunk,
            &cfg.roi_head,
            &cfg.train_cfg.rcnn,
            &cfg.test_cfg.rcnn,
            device,
        )
    }

    /// The trunk and the configured RoI head, as one model.
    fn assemble(
        trunk: Trunk<B>,
        roi_head: &crate::config::RoiHeadConfig,
        train: &[crate::config::RcnnTrainConfig],
        test: &crate::config::RcnnTestConfig,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let Trunk {
            backbone,
            neck,
            rpn_head,
            strides,
        } = trunk;
        let roi_head = AnyRoiHead::from_config(roi_head, train, test, &strides, device)?;
        Ok(Self {
            backbone,
            neck,
            rpn_head,
            roi_head,
        }
        .fork(device))
    }
}

impl<B: super::DetBackend> Detector<B> for TwoStage<B> {
    fn losses(&self, images: Tensor<B, 4>, items: &[BatchItem]) -> Result<Losses<B>, ModelError> {
        let [n, _, h, w] = images.dims();
        check_batch(n, items.len())?;
        let (feats, sizes) = pyramid(&self.backbone, &self.neck, images)?;
        let outs = self.rpn_head.forward(&feats);
        let mut terms = rpn_losses(&self.rpn_head, &outs, &sizes, [h, w], items)?;
        let metas: Vec<&ImageMeta> = items.iter().map(|i| &i.meta).collect();
        let proposals = self.rpn_head.proposals(outs, &sizes, &metas, true)?;
        let gts: Vec<&GroundTruth> = items.iter().map(|i| &i.gt).collect();
        let seeds: Vec<u64> = items.iter().map(|i| i.seed).collect();
        terms.extend(self.roi_head.losses(&feats, &proposals, &gts, &seeds, &metas)?);
        Ok(Losses { terms })
    }

    fn predict(&self, images: Tensor<B, 4>, metas: &[ImageMeta]) -> Result<Vec<Detections>, ModelError> {
        use super::timing::{Stage, mark};
        let device = images.device();
        let (feats, sizes) = pyramid(&self.backbone, &self.neck, images)?;
        let outs = self.rpn_head.forward(&feats);
        mark::<B>(Stage::Heads, &device);
        let metas: Vec<&ImageMeta> = metas.iter().collect();
        let proposals = self.rpn_head.proposals(outs, &sizes, &metas, false)?;
        mark::<B>(Stage::PostProcess, &device);
        // the RoI head (features, box and mask branches, and its own per-class NMS) counts as heads
        let dets = self.roi_head.predict(&feats, &proposals, &metas);
        mark::<B>(Stage::Heads, &device);
        dets
    }

    fn eval_kinds(&self) -> Vec<EvalKind> {
        self.roi_head.eval_kinds()
    }
}

/// A region proposal network alone (mmdetection's `RPN` detector).
#[derive(Module, Debug)]
pub struct Rpn<B: Backend> {
    /// Backbone from the zoo.
    pub backbone: AnyBackbone<B>,
    /// FPN.
    pub neck: Fpn<B>,
    /// Region proposal network.
    pub rpn_head: RpnHead<B>,
}

impl<B: Backend> Rpn<B> {
    /// Build from a config.
    pub fn from_config(cfg: &RpnConfig, device: &B::Device) -> Result<Self, ModelError> {
        // alone, the RPN makes its proposals with the test settings in training too (they are only evaluated)
        let Trunk {
            backbone,
            neck,
            rpn_head,
            ..
        } = Trunk::build(
            &cfg.backbone,
            &cfg.neck,
            &cfg.rpn_head,
            &cfg.train_cfg.rpn,
            [&cfg.test_cfg.rpn, &cfg.test_cfg.rpn],
            device,
        )?;
        Ok(Self {
            backbone,
            neck,
            rpn_head,
        }
        .fork(device))
    }

    /// Proposals of a batch, in each resized image.
    pub fn proposals(&self, images: Tensor<B, 4>, metas: &[ImageMeta]) -> Result<Vec<Proposals>, ModelError> {
        use super::timing::{Stage, mark};
        let device = images.device();
        let (feats, sizes) = pyramid(&self.backbone, &self.neck, images)?;
        let outs = self.rpn_head.forward(&feats);
        mark::<B>(Stage::Heads, &device);
        let metas: Vec<&ImageMeta> = metas.iter().collect();
        let proposals = self.rpn_head.proposals(outs, &sizes, &metas, false);
        mark::<B>(Stage::PostProcess, &device);
        proposals
    }
}

impl<B: Backend> Detector<B> for Rpn<B> {
    fn losses(&self, images: Tensor<B, 4>, items: &[BatchItem]) -> Result<Losses<B>, ModelError> {
        let [n, _, h, w] = images.dims();
        check_batch(n, items.len())?;
        let (feats, sizes) = pyramid(&self.backbone, &self.neck, images)?;
        let outs = self.rpn_head.forward(&feats);
        Ok(Losses {
            terms: rpn_losses(&self.rpn_head, &outs, &sizes, [h, w], items)?,
        })
    }

    /// Proposals as class-agnostic detections (label 0, the objectness as score).
    fn predict(&self, images: Tensor<B, 4>, metas: &[ImageMeta]) -> Result<Vec<Detections>, ModelError> {
        let proposals = self.proposals(images, metas)?;
        Ok(proposals
            .into_iter()
            .zip(metas)
            .map(|(p, meta)| Detections {
                boxes: p.boxes.iter().map(|&b| meta.to_original(b)).collect(),
                labels: vec![0; p.scores.len()],
                scores: p.scores,
                masks: None,
            })
            .collect())
    }

    fn eval_kinds(&self) -> Vec<EvalKind> {
        vec![EvalKind::Proposal]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, apply_override, from_value_with_path, load_resolved};
    use burn::backend::{Autodiff, Flex};

    type A = Autodiff<Flex>;

    /// Overrides that shrink the shipped two-stage model configs: ResNet-18, 3 classes, 16-channel neck and
    /// heads.
    const TINY: [&str; 8] = [
        "model.backbone.name=resnet18",
        "model.backbone.frozen_stages=-1",
        "model.backbone.norm_eval=false",
        "model.neck.out_channels=16",
        "model.rpn_head.feat_channels=16",
        "model.roi_head.bbox_head.in_channels=16",
        "model.roi_head.bbox_head.fc_out_channels=32",
        "model.roi_head.bbox_head.num_classes=3",
    ];

    /// The model config of `configs/_base_/models/{base}` with [`TINY`] and `extra` applied.
    fn tiny_model(base: &str, extra: &[&str]) -> ModelConfig {
        tiny_model_with(base, &TINY, extra)
    }

    /// The model config of `configs/_base_/models/{base}` with `shrink` and `extra` applied.
    fn tiny_model_with(base: &str, shrink: &[&str], extra: &[&str]) -> ModelConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/_base_/models")
            .join(base);
        let mut v = load_resolved(&path).unwrap();
        for o in shrink.iter().chain(extra) {
            apply_override(&mut v, o).unwrap();
        }
        from_value_with_path(&v["model"], "tiny").unwrap()
    }

    /// The tensors read back from a saved checkpoint file, without the model, are named and shaped exactly as
    /// the model's own (through the `AnyDetector` enum, whose record names its variant), for every detector;
    /// a checkpoint of another structure is refused naming what is missing, never a panic.
    #[test]
    fn checkpoint_files_list_the_model_tensors_of_every_detector() {
        use crate::engine::checkpoint::{CheckpointError, TrainState, load_model, record_shapes, save_model};
        use crate::models::AnyDetector;
        let device = Default::default();
        let dir = std::env::temp_dir().join(format!("attndet-record-shapes-{}", std::process::id()));
        let state = TrainState {
            epoch: 0,
            global_iter: 0,
            seed: 0,
            base_lr: 0.01,
            best: None,
            config: serde_json::Value::Null,
            classes: Vec::new(),
        };
        let retina = {
            let mut c = crate::models::retinanet::tests::tiny_config();
            c.bbox_head.num_classes = 3;
            ModelConfig::RetinaNet(c)
        };
        let mask = [
            "model.roi_head.mask_head.in_channels=16",
            "model.roi_head.mask_head.conv_out_channels=16",
            "model.roi_head.mask_head.num_classes=3",
        ];
        let rpn_extra: [&str; 0] = [];
        let configs = [
            retina,
            tiny_model("faster_rcnn_r50_fpn.json", &[]),
            tiny_model("mask_rcnn_r50_fpn.json", &mask),
            tiny_rpn(&rpn_extra),
        ];
        for (i, cfg) in configs.iter().enumerate() {
            let model = AnyDetector::<Flex>::from_config(cfg, &device).unwrap();
            let ckpt = dir.join(format!("m{i}"));
            save_model::<Flex, _>(&ckpt, &model, &state).unwrap();
            let mut stored = record_shapes(&ckpt.join("model.mpk")).unwrap();
            let mut expected: Vec<(String, Vec<usize>)> =
                attndet_backbones::checkpoint::tensor_shapes(&model)
                    .into_iter()
                    .map(|t| (t.path, t.shape))
                    .collect();
            stored.sort();
            expected.sort();
            assert!(expected.len() > 50, "{i}: {}", expected.len());
            assert_eq!(stored, expected, "detector {i}");
            load_model::<Flex, _>(&ckpt, AnyDetector::from_config(cfg, &device).unwrap(), &device).unwrap();
        }
        // Faster R-CNN weights into a Mask R-CNN: the mask head is missing (burn alone would not say so)
        let masked = AnyDetector::<Flex>::from_config(&configs[2], &device).unwrap();
        match load_model::<Flex, _>(&dir.join("m1"), masked, &device) {
            Err(CheckpointError::Mismatch { mismatch, .. }) => {
                assert!(
                    mismatch.unexpected.is_empty() && mismatch.misshaped.is_empty(),
                    "{mismatch}"
                );
                assert!(
                    mismatch.missing.iter().any(|p| p.contains("mask_head")),
                    "{mismatch}"
                );
            }
            other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
        }
        // and the other way round: the mask head's tensors are unexpected
        let plain = AnyDetector::<Flex>::from_config(&configs[1], &device).unwrap();
        let err = load_model::<Flex, _>(&dir.join("m2"), plain, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected: roi_head.mask_head"), "{err}");
        // a file that is not a record
        std::fs::write(dir.join("m0/model.mpk"), b"garbage").unwrap();
        assert!(record_shapes(&dir.join("m0/model.mpk")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The shipped RPN model config, shrunk (its RoI-head overrides do not apply).
    fn tiny_rpn(extra: &[&str]) -> ModelConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/_base_/models/rpn_r50_fpn.json");
        let mut v = load_resolved(&path).unwrap();
        for o in TINY.iter().take(5).chain(extra) {
            apply_override(&mut v, o).unwrap();
        }
        from_value_with_path(&v["model"], "tiny").unwrap()
    }

    /// The shipped Faster R-CNN model config, shrunk.
    fn tiny_config() -> TwoStageConfig {
        let ModelConfig::FasterRcnn(cfg) = tiny_model("faster_rcnn_r50_fpn.json", &[]) else {
            panic!("the Faster R-CNN base config is a FasterRCNN")
        };
        cfg
    }

    fn item(boxes: Vec<[f32; 4]>, labels: Vec<usize>, seed: u64) -> BatchItem {
        BatchItem {
            meta: ImageMeta::unscaled(1, (64, 64)),
            gt: GroundTruth {
                boxes,
                labels,
                ..Default::default()
            },
            seed,
        }
    }

    fn losses(model: &TwoStage<A>, items: &[BatchItem]) -> Vec<(&'static str, f32)> {
        let images = Tensor::<A, 4>::random(
            [items.len(), 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let l = model.losses(images, items).unwrap();
        l.terms
            .iter()
            .map(|t| (t.name, t.value.clone().into_scalar()))
            .collect()
    }

    /// mmdetection's head tests for the RPN and the RoI head: with no ground truth every sampled anchor and
    /// RoI is a negative, so both classification losses are positive and both box losses are 0; one box makes
    /// all four positive (the GT box is added as a proposal, so the second stage has a positive even when
    /// the untrained RPN proposes nothing near it).
    #[test]
    fn empty_gt_gives_cls_losses_only_and_one_box_gives_all() {
        let device = Default::default();
        A::seed(&device, 0);
        let model = TwoStage::<A>::from_config(&tiny_config(), &device).unwrap();
        let l = losses(&model, &[item(vec![], vec![], 1)]);
        let names: Vec<&str> = l.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"]);
        assert!(l[0].1 > 0.0 && l[2].1 > 0.0, "{l:?}");
        assert_eq!((l[1].1, l[3].1), (0.0, 0.0), "{l:?}");
        let l = losses(&model, &[item(vec![[10.0, 12.0, 40.0, 50.0]], vec![1], 1)]);
        assert!(l.iter().all(|(_, v)| *v > 0.0), "{l:?}");
        // a batch whose images have no boxes at all
        let l = losses(&model, &[item(vec![], vec![], 1), item(vec![], vec![], 2)]);
        assert_eq!((l[1].1, l[3].1), (0.0, 0.0), "{l:?}");
    }

    /// An image's sampled targets depend on its seed alone, not on the batch it is in: the second stage's
    /// losses of an image equal whether it is alone or with another (equal images, so the normalisers are
    /// the same multiple).
    #[test]
    fn sampling_follows_the_image_seed() {
        let device = Default::default();
        A::seed(&device, 0);
        let model = TwoStage::<A>::from_config(&tiny_config(), &device).unwrap();
        let it = item(
            vec![[4.0, 4.0, 30.0, 40.0], [30.0, 20.0, 60.0, 60.0]],
            vec![0, 2],
            7,
        );
        let images = Tensor::<A, 4>::random(
            [1, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let one = model.losses(images.clone(), std::slice::from_ref(&it)).unwrap();
        let two = model
            .losses(Tensor::cat(vec![images.clone(), images], 0), &[it.clone(), it])
            .unwrap();
        for (ta, tb) in one.terms.iter().zip(&two.terms) {
            let n = ta.name;
            let (a, b) = (ta.value.clone().into_scalar(), tb.value.clone().into_scalar());
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{n}: {a} vs {b}");
        }
    }

    #[test]
    fn predictions_respect_the_caps_and_lie_in_the_original_image() {
        let device = Default::default();
        let mut cfg = tiny_config();
        cfg.test_cfg.rcnn.max_per_img = 7;
        cfg.test_cfg.rcnn.score_thr = 0.0;
        let model = TwoStage::<Flex>::from_config(&cfg, &device).unwrap();
        let mut meta = ImageMeta::unscaled(1, (32, 32));
        meta.img_size = (64, 64);
        meta.scale = (2.0, 2.0);
        let images = Tensor::<Flex, 4>::random(
            [2, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let dets = model.predict(images, &[meta.clone(), meta]).unwrap();
        assert_eq!(dets.len(), 2);
        assert_eq!(dets[0].len(), 7);
        assert!(dets[0].boxes.iter().flatten().all(|&c| (0.0..=32.0).contains(&c)));
        assert!(dets[0].scores.windows(2).all(|w| w[0] >= w[1]));
        assert!(dets[0].labels.iter().all(|&l| l < 3));
        // an image without proposals gives no detections
        let (feats, _) = pyramid(
            &model.backbone,
            &model.neck,
            Tensor::<Flex, 4>::zeros([1, 3, 64, 64], &device),
        )
        .unwrap();
        let meta = ImageMeta::unscaled(1, (64, 64));
        let none = model
            .roi_head
            .predict(&feats, &[Proposals::default()], &[&meta])
            .unwrap();
        assert_eq!(none, vec![Detections::default()]);
    }

    /// An RPN alone predicts class-agnostic proposals, at most `max_per_img`, by descending objectness.
    #[test]
    fn rpn_alone_predicts_proposals() {
        let device = Default::default();
        let tiny = tiny_config();
        let cfg = RpnConfig {
            backbone: tiny.backbone,
            neck: tiny.neck,
            rpn_head: tiny.rpn_head,
            train_cfg: crate::config::RpnOnlyTrainConfig {
                rpn: tiny.train_cfg.rpn,
            },
            test_cfg: crate::config::RpnOnlyTestConfig {
                rpn: crate::config::ProposalConfig {
                    max_per_img: 50,
                    ..tiny.test_cfg.rpn
                },
            },
        };
        let model = Rpn::<Flex>::from_config(&cfg, &device).unwrap();
        let images = Tensor::<Flex, 4>::random(
            [1, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let dets = model
            .predict(images, &[ImageMeta::unscaled(1, (64, 64))])
            .unwrap();
        assert_eq!(dets[0].len(), 50);
        assert!(dets[0].labels.iter().all(|&l| l == 0));
        assert!(dets[0].scores.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(model.eval_kinds(), vec![EvalKind::Proposal]);
    }

    /// The shipped Mask R-CNN model config, shrunk like [`tiny_config`].
    fn tiny_mask_config() -> TwoStageConfig {
        let extra = [
            "model.roi_head.mask_head.in_channels=16",
            "model.roi_head.mask_head.conv_out_channels=16",
            "model.roi_head.mask_head.num_classes=3",
        ];
        let ModelConfig::MaskRcnn(cfg) = tiny_model("mask_rcnn_r50_fpn.json", &extra) else {
            panic!("the Mask R-CNN base config is a MaskRCNN")
        };
        cfg
    }

    /// The mask head test: no instance gives a zero mask loss that still back-propagates; one instance (its
    /// mask the left half of its box) gives a positive mask loss; inference pastes one mask per detection
    /// at the original size.
    #[test]
    fn mask_loss_is_zero_without_instances_and_positive_with_one() {
        let device = Default::default();
        A::seed(&device, 0);
        let model = TwoStage::<A>::from_config(&tiny_mask_config(), &device).unwrap();
        let mut empty = item(vec![], vec![], 1);
        empty.gt.masks = Some(vec![]);
        let l = losses(&model, &[empty]);
        assert_eq!(l[4], ("loss_mask", 0.0), "{l:?}");
        let b = [10.0f32, 12.0, 40.0, 50.0];
        let bits: Vec<bool> = (0..64 * 64)
            .map(|p| {
                let (y, x) = ((p / 64) as f32, (p % 64) as f32);
                x >= b[0] && x < 25.0 && y >= b[1] && y < b[3]
            })
            .collect();
        let mut one = item(vec![b], vec![1], 1);
        one.gt.masks = Some(vec![crate::structures::RleMask::encode(&bits, [64, 64])]);
        let images = Tensor::<A, 4>::random(
            [1, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let l = model.losses(images.clone(), std::slice::from_ref(&one)).unwrap();
        let mask = &l.terms[4];
        assert_eq!(mask.name, "loss_mask");
        assert!(mask.value.clone().into_scalar() > 0.0);
        // the loss reaches the mask head
        let grads = l.total().backward();
        let AnyRoiHead::Standard(h) = &model.roi_head else {
            panic!("a MaskRCNN has the standard head")
        };
        let g = h
            .mask_head
            .as_ref()
            .unwrap()
            .conv_logits
            .weight
            .grad(&grads)
            .unwrap();
        assert!(g.abs().sum().into_scalar() > 0.0);
        let mut cfg = tiny_mask_config();
        cfg.test_cfg.rcnn.score_thr = 0.0;
        cfg.test_cfg.rcnn.max_per_img = 5;
        let model = TwoStage::<Flex>::from_config(&cfg, &device).unwrap();
        let mut meta = ImageMeta::unscaled(1, (32, 32));
        meta.img_size = (64, 64);
        meta.scale = (2.0, 2.0);
        let dets = model.predict(images.inner(), &[meta]).unwrap();
        let masks = dets[0].masks.as_ref().unwrap();
        assert_eq!(masks.len(), dets[0].len());
        assert!(masks.iter().all(|m| (m.h, m.w) == (32, 32)));
        assert_eq!(model.eval_kinds(), vec![EvalKind::Bbox, EvalKind::Segm]);
    }

    /// [`TINY`] for the cascade's list of box heads: the trunk's overrides and each stage's head shrunk.
    fn tiny_cascade_overrides(extra: &[&str]) -> Vec<String> {
        let mut o: Vec<String> = TINY[..5].iter().map(|s| s.to_string()).collect();
        for i in 0..3 {
            o.push(format!("model.roi_head.bbox_head.{i}.in_channels=16"));
            o.push(format!("model.roi_head.bbox_head.{i}.fc_out_channels=32"));
            o.push(format!("model.roi_head.bbox_head.{i}.num_classes=3"));
        }
        o.extend(extra.iter().map(|s| s.to_string()));
        o
    }

    /// The shipped Cascade R-CNN model config (`base`), shrunk like [`tiny_config`].
    fn tiny_cascade(base: &str, extra: &[&str]) -> crate::config::CascadeConfig {
        let o = tiny_cascade_overrides(extra);
        let o: Vec<&str> = o.iter().map(String::as_str).collect();
        let ModelConfig::CascadeRcnn(cfg) = tiny_model_with(base, &o, &[]) else {
            panic!("the Cascade R-CNN base configs are CascadeRCNNs")
        };
        cfg
    }

    const CASCADE_NAMES: [&str; 8] = [
        "loss_rpn_cls",
        "loss_rpn_bbox",
        "s0.loss_cls",
        "s0.loss_bbox",
        "s1.loss_cls",
        "s1.loss_bbox",
        "s2.loss_cls",
        "s2.loss_bbox",
    ];

    /// mmdetection's head tests for every stage: no ground truth gives positive classification losses and
    /// zero box losses at each stage; one box makes every term positive (the GT box is a proposal at each
    /// stage, since the sampler adds it again after the refinement drops it); a batch of images without
    /// boxes; and images whose RPN proposes nothing (the second stage sees only the GT boxes).
    #[test]
    fn cascade_empty_gt_gives_cls_losses_only_at_every_stage() {
        let device = Default::default();
        A::seed(&device, 0);
        let model =
            TwoStage::<A>::from_cascade_config(&tiny_cascade("cascade_rcnn_r50_fpn.json", &[]), &device)
                .unwrap();
        let l = losses(&model, &[item(vec![], vec![], 1)]);
        let names: Vec<&str> = l.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, CASCADE_NAMES);
        for s in 0..3 {
            assert!(l[2 + 2 * s].1 > 0.0, "stage {s}: {l:?}");
            assert_eq!(l[3 + 2 * s].1, 0.0, "stage {s}: {l:?}");
        }
        let l = losses(&model, &[item(vec![[10.0, 12.0, 40.0, 50.0]], vec![1], 1)]);
        assert!(l.iter().all(|(_, v)| *v > 0.0), "{l:?}");
        let l = losses(&model, &[item(vec![], vec![], 1), item(vec![], vec![], 2)]);
        assert!((0..3).all(|s| l[3 + 2 * s].1 == 0.0), "{l:?}");
        // no proposals at all: with no ground truth nothing is sampled, with one box only the GT is
        let (feats, _) = pyramid(
            &model.backbone,
            &model.neck,
            Tensor::<A, 4>::zeros([1, 3, 64, 64], &device),
        )
        .unwrap();
        let meta = ImageMeta::unscaled(1, (64, 64));
        let none = GroundTruth::default();
        let terms = model
            .roi_head
            .losses(&feats, &[Proposals::default()], &[&none], &[1], &[&meta])
            .unwrap();
        assert_eq!(terms.len(), 6);
        assert!(
            terms.iter().all(|t| t.value.clone().into_scalar() == 0.0),
            "{terms:?}"
        );
        let one = GroundTruth {
            boxes: vec![[10.0, 12.0, 40.0, 50.0]],
            labels: vec![2],
            ..Default::default()
        };
        let terms = model
            .roi_head
            .losses(&feats, &[Proposals::default()], &[&one], &[1], &[&meta])
            .unwrap();
        for t in &terms {
            let (n, v) = (t.name, t.value.clone().into_scalar());
            assert!(v.is_finite(), "{n}: {v}");
            if n.ends_with("loss_cls") {
                assert!(v > 0.0, "{n}: {v}");
            }
        }
    }

    /// The stage weights scale each stage's terms: weights 1 / 0.5 / 0.25 against 1 / 1 / 1 on the same
    /// model and batch give stage 1 half and stage 2 a quarter of the unweighted terms, stage 0 the same.
    #[test]
    fn cascade_stage_weights_scale_each_stage() {
        let device = Default::default();
        let batch = [item(
            vec![[10.0, 12.0, 40.0, 50.0], [30.0, 5.0, 60.0, 30.0]],
            vec![1, 0],
            3,
        )];
        let images = Tensor::<A, 4>::random(
            [1, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let plain_model = TwoStage::<A>::from_cascade_config(
            &tiny_cascade(
                "cascade_rcnn_r50_fpn.json",
                &["model.roi_head.stage_loss_weights=[1.0, 1.0, 1.0]"],
            ),
            &device,
        )
        .unwrap();
        let run = |weights: &str| -> Vec<f32> {
            let cfg = tiny_cascade(
                "cascade_rcnn_r50_fpn.json",
                &[&format!("model.roi_head.stage_loss_weights={weights}")],
            );
            // the same parameters in both models: only the weights differ
            let model = TwoStage::<A>::from_cascade_config(&cfg, &device)
                .unwrap()
                .load_record(plain_model.clone().into_record());
            let l = model.losses(images.clone(), &batch).unwrap();
            l.terms.iter().map(|t| t.value.clone().into_scalar()).collect()
        };
        let weighted = run("[1.0, 0.5, 0.25]");
        let plain = run("[1.0, 1.0, 1.0]");
        for (i, scale) in [(2, 1.0), (3, 1.0), (4, 0.5), (5, 0.5), (6, 0.25), (7, 0.25)] {
            let (a, b) = (weighted[i], plain[i] * scale);
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{}: {a} vs {b}",
                CASCADE_NAMES[i]
            );
        }
    }

    /// Inference: at most `max_per_img` detections by descending score inside the original image; an image
    /// without proposals gives none; the detector is a CascadeRCNN.
    #[test]
    fn cascade_predictions_respect_the_caps() {
        let device = Default::default();
        let mut cfg = tiny_cascade("cascade_rcnn_r50_fpn.json", &[]);
        cfg.test_cfg.rcnn.max_per_img = 7;
        cfg.test_cfg.rcnn.score_thr = 0.0;
        let model = TwoStage::<Flex>::from_cascade_config(&cfg, &device).unwrap();
        let mut meta = ImageMeta::unscaled(1, (32, 32));
        meta.img_size = (64, 64);
        meta.scale = (2.0, 2.0);
        let images = Tensor::<Flex, 4>::random(
            [2, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let dets = model
            .predict(images.clone(), &[meta.clone(), meta.clone()])
            .unwrap();
        assert_eq!(dets.len(), 2);
        assert_eq!(dets[0].len(), 7);
        assert!(dets[0].boxes.iter().flatten().all(|&c| (0.0..=32.0).contains(&c)));
        assert!(dets[0].scores.windows(2).all(|w| w[0] >= w[1]));
        assert!(dets[0].labels.iter().all(|&l| l < 3));
        let (feats, _) = pyramid(&model.backbone, &model.neck, images).unwrap();
        let none = model
            .roi_head
            .predict(
                &feats,
                &[Proposals::default(), Proposals::default()],
                &[&meta, &meta],
            )
            .unwrap();
        assert_eq!(none, vec![Detections::default(); 2]);
        let any = super::super::AnyDetector::TwoStage(model);
        assert_eq!(any.type_name(), "CascadeRCNN");
    }

    /// Cascade Mask R-CNN: a mask loss per stage (zero without instances, positive with one, reaching every
    /// stage's mask head), and masks at the original size on the final boxes.
    #[test]
    fn cascade_mask_loss_per_stage_and_masks_at_test() {
        let device = Default::default();
        A::seed(&device, 0);
        let extra = [
            "model.roi_head.mask_head.in_channels=16",
            "model.roi_head.mask_head.conv_out_channels=16",
            "model.roi_head.mask_head.num_classes=3",
        ];
        let cfg = tiny_cascade("cascade_mask_rcnn_r50_fpn.json", &extra);
        let model = TwoStage::<A>::from_cascade_config(&cfg, &device).unwrap();
        let mut empty = item(vec![], vec![], 1);
        empty.gt.masks = Some(vec![]);
        let l = losses(&model, &[empty]);
        let masks: Vec<_> = l.iter().filter(|(n, _)| n.ends_with("loss_mask")).collect();
        assert_eq!(masks.len(), 3, "{l:?}");
        assert!(masks.iter().all(|(_, v)| *v == 0.0), "{l:?}");
        let b = [10.0f32, 12.0, 40.0, 50.0];
        let bits: Vec<bool> = (0..64 * 64)
            .map(|p| {
                let (y, x) = ((p / 64) as f32, (p % 64) as f32);
                x >= b[0] && x < 25.0 && y >= b[1] && y < b[3]
            })
            .collect();
        let mut one = item(vec![b], vec![1], 1);
        one.gt.masks = Some(vec![crate::structures::RleMask::encode(&bits, [64, 64])]);
        let images = Tensor::<A, 4>::random(
            [1, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let l = model.losses(images.clone(), std::slice::from_ref(&one)).unwrap();
        let names: Vec<&str> = l.terms.iter().map(|t| t.name).collect();
        assert_eq!(&names[2..5], ["s0.loss_cls", "s0.loss_bbox", "s0.loss_mask"]);
        let grads = l.total().backward();
        let AnyRoiHead::Cascade(h) = &model.roi_head else {
            panic!("a CascadeRCNN has the cascade head")
        };
        assert_eq!(h.mask_head.len(), 3);
        for (i, m) in h.mask_head.iter().enumerate() {
            let g = m.conv_logits.weight.grad(&grads).unwrap();
            assert!(g.abs().sum().into_scalar() > 0.0, "mask head {i}");
        }
        let mut cfg = cfg;
        cfg.test_cfg.rcnn.score_thr = 0.0;
        cfg.test_cfg.rcnn.max_per_img = 5;
        let model = TwoStage::<Flex>::from_cascade_config(&cfg, &device).unwrap();
        let mut meta = ImageMeta::unscaled(1, (32, 32));
        meta.img_size = (64, 64);
        meta.scale = (2.0, 2.0);
        let dets = model.predict(images.inner(), &[meta]).unwrap();
        let masks = dets[0].masks.as_ref().unwrap();
        assert_eq!(masks.len(), dets[0].len());
        assert!(masks.iter().all(|m| (m.h, m.w) == (32, 32)));
        assert_eq!(model.eval_kinds(), vec![EvalKind::Bbox, EvalKind::Segm]);
    }
}
