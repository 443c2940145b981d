//! Tests of inheritance, `_delete_`, overrides and typo errors, on small files written to a temp dir and on
//! the shipped configs.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("attndet-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn write(&self, rel: &str, value: serde_json::Value) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, serde_json::to_string_pretty(&value).unwrap()).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn bases_merge_deeply_in_order_then_the_file_on_top() {
    let d = Dir::new("merge");
    d.write(
        "base/a.json",
        json!({"x": {"p": 1, "q": 2}, "list": [1, 2, 3], "only_a": true}),
    );
    d.write("base/b.json", json!({"x": {"q": 20, "r": 30}, "list": [9]}));
    let top = d.write(
        "top.json",
        json!({"_base_": ["base/a.json", "base/b.json"], "x": {"r": 300}}),
    );
    let v = load_resolved(&top).unwrap();
    // a then b: q overwritten by b, list replaced (not concatenated); the file's own r wins over b's.
    assert_eq!(
        v,
        json!({"x": {"p": 1, "q": 20, "r": 300}, "list": [9], "only_a": true})
    );
}

#[test]
fn delete_replaces_the_inherited_subtree() {
    let d = Dir::new("delete");
    d.write(
        "a.json",
        json!({"opt": {"type": "SGD", "lr": 0.1, "momentum": 0.9}}),
    );
    let top = d.write(
        "top.json",
        json!({"_base_": "a.json", "opt": {"_delete_": true, "type": "Adam", "lr": 1e-3}}),
    );
    let v = load_resolved(&top).unwrap();
    assert_eq!(v, json!({"opt": {"type": "Adam", "lr": 0.001}}));
}

#[test]
fn base_chains_resolve_relative_to_each_file() {
    let d = Dir::new("chain");
    d.write("x/base.json", json!({"a": 1}));
    d.write("x/mid.json", json!({"_base_": "base.json", "b": 2}));
    let top = d.write("y/top.json", json!({"_base_": "../x/mid.json", "c": 3}));
    assert_eq!(load_resolved(&top).unwrap(), json!({"a": 1, "b": 2, "c": 3}));
}

#[test]
fn base_cycle_and_missing_base_are_errors_naming_the_file() {
    let d = Dir::new("cycle");
    d.write("a.json", json!({"_base_": "b.json"}));
    let b = d.write("b.json", json!({"_base_": "a.json"}));
    let err = load_resolved(&b).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
    let m = d.write("m.json", json!({"_base_": "nope.json"}));
    let err = load_resolved(&m).unwrap_err().to_string();
    assert!(
        err.contains("nope.json") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn overrides_are_typed() {
    let mut v = json!({"optimizer": {"lr": 0.01}, "data": {"pipeline": {"img_scale": [1333, 800]}}});
    apply_override(&mut v, "optimizer.lr=0.02").unwrap();
    apply_override(&mut v, "optimizer.grad_clip=null").unwrap();
    apply_override(&mut v, "lr_config.step=8,11").unwrap();
    apply_override(&mut v, "data.pipeline.img_scale.1=640").unwrap();
    apply_override(&mut v, "model.backbone.name=se_resnet50").unwrap();
    apply_override(&mut v, "data.skip_bad_images=true").unwrap();
    apply_override(&mut v, "data.pipeline.mean=[1.5, 2, 3]").unwrap();
    assert_eq!(
        v,
        json!({
            "optimizer": {"lr": 0.02, "grad_clip": null},
            "data": {"pipeline": {"img_scale": [1333, 640], "mean": [1.5, 2, 3]}, "skip_bad_images": true},
            "lr_config": {"step": [8, 11]},
            "model": {"backbone": {"name": "se_resnet50"}}
        })
    );
}

#[test]
fn bad_overrides_are_errors() {
    let mut v = json!({"a": {"b": 1}, "l": [1]});
    assert!(
        apply_override(&mut v, "a.b")
            .unwrap_err()
            .to_string()
            .contains("KEY=VALUE")
    );
    assert!(
        apply_override(&mut v, "a.b.c=1")
            .unwrap_err()
            .to_string()
            .contains("not an object")
    );
    assert!(
        apply_override(&mut v, "l.5=1")
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
    assert!(apply_override(&mut v, "a..b=1").is_err());
}

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

#[test]
fn shipped_configs_resolve_and_type_check() {
    for name in [
        "retinanet_r50_fpn_1x_coco.json",
        "retinanet_r50_fpn_2x_coco.json",
        "retinanet_se-r50_fpn_2x_coco.json",
        "retinanet_dca-se-r50_fpn_2x_coco.json",
        "retinanet_eca-r50_fpn_1x_coco.json",
    ] {
        let path = configs_dir().join("retinanet").join(name);
        let (cfg, _): (ExperimentConfig, _) =
            load_typed(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ModelConfig::RetinaNet(m) = &cfg.model else {
            panic!("{name}: expected RetinaNet");
        };
        assert_eq!(m.bbox_head.num_classes, 80);
        assert_eq!(m.neck.add_extra_convs, crate::necks::ExtraConvs::OnInput);
        let OptimizerConfig::Sgd(sgd) = &cfg.optimizer else {
            panic!("{name}: expected SGD");
        };
        // RetinaNet's own lr (0.01 for 16 images) and clipping at 35, as in mmdetection.
        assert_eq!(sgd.lr, 0.01);
        assert_eq!(sgd.grad_clip, Some(GradClipConfig { max_norm: 35.0 }));
        let two_x = name.contains("2x");
        assert_eq!(cfg.runner.max_epochs, if two_x { 24 } else { 12 });
        assert_eq!(cfg.lr_config.step, if two_x { vec![16, 22] } else { vec![8, 11] });
    }
    let (cfg, _): (ExperimentConfig, _) = load_typed(
        &configs_dir().join("retinanet/retinanet_dca-se-r50_fpn_2x_coco.json"),
        &[],
    )
    .unwrap();
    let ModelConfig::RetinaNet(m) = cfg.model else {
        panic!("expected RetinaNet");
    };
    assert_eq!(m.backbone.name, "dca_se_resnet50");
}

#[test]
fn typo_fails_with_its_json_path() {
    let path = configs_dir().join("retinanet/retinanet_r50_fpn_1x_coco.json");
    let err = load_typed::<ExperimentConfig>(&path, &["model.bbox_head.loss_cls.gama=2".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.bbox_head.loss_cls.gama") && err.contains("unknown field `gama`"),
        "{err}"
    );
    let err = load_typed::<ExperimentConfig>(&path, &["optimizer.momentun=0.9".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("optimizer.momentun"), "{err}");
    let err = load_typed::<ExperimentConfig>(&path, &["data.batch_size=two".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data.batch_size") && err.contains("invalid type"),
        "{err}"
    );
    let err = load_typed::<ExperimentConfig>(&path, &["model.type=YOLO".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `YOLO`"), "{err}");
}

#[test]
fn empty_config_reports_the_first_missing_field() {
    let d = Dir::new("empty");
    let p = d.write("e.json", json!({}));
    let err = load_typed::<ExperimentConfig>(&p, &[]).unwrap_err().to_string();
    assert!(err.contains("missing field `model`"), "{err}");
}

#[test]
fn optimizer_type_selects_sgd_or_adamw_with_torch_defaults() {
    let sgd: OptimizerConfig = serde_json::from_value(json!({
        "type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001, "grad_clip": null
    }))
    .unwrap();
    assert_eq!(sgd.lr(), 0.01);
    assert!(sgd.grad_clip().is_none());
    let adamw: OptimizerConfig = serde_json::from_value(json!({
        "type": "AdamW", "lr": 0.002, "weight_decay": 0.05, "grad_clip": {"max_norm": 10.0}
    }))
    .unwrap();
    // torch.optim.AdamW's defaults: betas (0.9, 0.999), eps 1e-8
    let OptimizerConfig::AdamW(a) = &adamw else {
        panic!("expected AdamW, got {adamw:?}");
    };
    assert_eq!((a.betas, a.eps), ([0.9, 0.999], 1e-8));
    assert_eq!(adamw.lr(), 0.002);
    assert_eq!(adamw.grad_clip(), Some(&GradClipConfig { max_norm: 10.0 }));
    // SGD's momentum is not an AdamW field: a config switching type must `_delete_` the inherited SGD keys
    let err = serde_json::from_value::<OptimizerConfig>(json!({
        "type": "AdamW", "lr": 0.002, "weight_decay": 0.05, "momentum": 0.9
    }))
    .unwrap_err()
    .to_string();
    assert!(err.contains("momentum"), "{err}");
    let err = serde_json::from_value::<OptimizerConfig>(json!({"type": "Adam", "lr": 0.1}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Adam"), "{err}");
}

/// Every two-stage config of the tree loads, names a backbone of the zoo, and keeps mmdetection's settings
/// (RPN 0.7 / 0.3 with 256 samples, RoI 0.5 with 512 samples a quarter positive, stds 0.1/0.1/0.2/0.2).
#[test]
fn two_stage_configs_load_with_mmdetections_settings() {
    let mut seen = 0;
    for dir in ["faster_rcnn", "rpn", "mask_rcnn"] {
        for entry in std::fs::read_dir(configs_dir().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let name = path.display().to_string();
            let (cfg, _): (ExperimentConfig, _) =
                load_typed(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            attndet_backbones::BackboneArch::parse(&cfg.model.backbone().name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
            match &cfg.model {
                ModelConfig::MaskRcnn(m) => {
                    // Mask R-CNN's second-stage assigner keeps low-quality matches (Faster R-CNN's does not)
                    assert!(m.train_cfg.rcnn.assigner.match_low_quality, "{name}");
                    let crate::config::RoiHeadConfig::Standard(h) = &m.roi_head else {
                        panic!("{name}: a MaskRCNN has the standard head")
                    };
                    let mask = h.mask_head.as_ref().expect("a mask head");
                    assert_eq!(mask.roi_feat_size, 14, "{name}");
                    assert_eq!(
                        h.mask_roi_extractor.as_ref().unwrap().output_size,
                        [14, 14],
                        "{name}"
                    );
                    assert_eq!(
                        cfg.evaluation.metric,
                        vec![crate::models::EvalKind::Bbox, crate::models::EvalKind::Segm],
                        "{name}"
                    );
                    if !name.contains("synth") {
                        assert_eq!(
                            (mask.num_convs, mask.conv_out_channels, mask.num_classes),
                            (4, 256, 80)
                        );
                    }
                }
                ModelConfig::FasterRcnn(m) => {
                    assert_eq!(m.train_cfg.rpn.assigner.pos_iou_thr, 0.7, "{name}");
                    assert_eq!(m.train_cfg.rpn.sampler.num, 256, "{name}");
                    assert_eq!(m.train_cfg.rcnn.assigner.pos_iou_thr, 0.5, "{name}");
                    assert!(!m.train_cfg.rcnn.assigner.match_low_quality, "{name}");
                    assert_eq!(m.train_cfg.rcnn.sampler.pos_fraction, 0.25, "{name}");
                    let crate::config::RoiHeadConfig::Standard(h) = &m.roi_head else {
                        panic!("{name}: a FasterRCNN has the standard head")
                    };
                    assert_eq!(h.bbox_head.bbox_coder.target_stds, [0.1, 0.1, 0.2, 0.2], "{name}");
                    assert_eq!(
                        cfg.evaluation.metric,
                        vec![crate::models::EvalKind::Bbox],
                        "{name}"
                    );
                    if !name.contains("synth") {
                        assert_eq!(m.train_cfg.rcnn.sampler.num, 512, "{name}");
                        assert_eq!(h.bbox_head.num_classes, 80, "{name}");
                        assert_eq!(m.test_cfg.rpn.max_per_img, 1000, "{name}");
                    }
                }
                ModelConfig::Rpn(m) => {
                    assert_eq!(m.test_cfg.rpn.nms_pre, 1000, "{name}");
                    assert_eq!(
                        cfg.evaluation.metric,
                        vec![crate::models::EvalKind::Proposal],
                        "{name}"
                    );
                }
                ModelConfig::RetinaNet(_) | ModelConfig::CascadeRcnn(_) => {
                    panic!("{name}: not a Faster R-CNN, Mask R-CNN or RPN config")
                }
            }
        }
    }
    assert_eq!(
        seen, 13,
        "7 Faster R-CNN configs, 1 RPN config and 5 Mask R-CNN configs"
    );
}

/// Every Cascade R-CNN config loads, names a backbone of the zoo and keeps mmdetection's
/// `cascade-rcnn_r50_fpn` settings: RPN with 2000 training proposals, `allowed_border` 0 and SmoothL1 beta
/// 1/9; three class-agnostic stages at IoU 0.5 / 0.6 / 0.7, weights 1 / 0.5 / 0.25, stds
/// 0.1-0.2 / 0.05-0.1 / 0.033-0.067, SmoothL1 beta 1; DCANet's "20e" files train 24 epochs (steps 16 and
/// 22, warmup ratio 1/3, clipping at 35).
#[test]
fn cascade_configs_load_with_mmdetections_settings() {
    use crate::config::{BoxLossConfig, RoiHeadConfig};
    let mut seen = 0;
    for entry in std::fs::read_dir(configs_dir().join("cascade_rcnn")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.display().to_string();
        let (cfg, _): (ExperimentConfig, _) =
            load_typed(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        crate::config::validate_experiment(&cfg, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        attndet_backbones::BackboneArch::parse(&cfg.model.backbone().name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        seen += 1;
        let ModelConfig::CascadeRcnn(m) = &cfg.model else {
            panic!("{name}: not a CascadeRCNN")
        };
        let RoiHeadConfig::Cascade(h) = &m.roi_head else {
            panic!("{name}: not a CascadeRoIHead")
        };
        assert_eq!(m.train_cfg.rpn.allowed_border, 0, "{name}");
        assert_eq!(
            m.rpn_head.loss_bbox,
            BoxLossConfig::SmoothL1Loss(serde_json::from_value(json!({"beta": 1.0 / 9.0})).unwrap()),
            "{name}"
        );
        assert_eq!(h.num_stages, 3, "{name}");
        assert_eq!(h.stage_loss_weights, [1.0, 0.5, 0.25], "{name}");
        let stds = [
            [0.1, 0.1, 0.2, 0.2],
            [0.05, 0.05, 0.1, 0.1],
            [0.033, 0.033, 0.067, 0.067],
        ];
        for (i, (b, t)) in h.bbox_head.iter().zip(&m.train_cfg.rcnn).enumerate() {
            let iou = [0.5, 0.6, 0.7][i];
            assert!(b.reg_class_agnostic, "{name} stage {i}");
            assert_eq!(b.bbox_coder.target_stds, stds[i], "{name} stage {i}");
            assert_eq!(
                b.loss_bbox,
                BoxLossConfig::SmoothL1Loss(serde_json::from_value(json!({"beta": 1.0})).unwrap()),
                "{name} stage {i}"
            );
            let a = &t.assigner;
            assert_eq!((a.pos_iou_thr, a.min_pos_iou), (iou, iou), "{name} stage {i}");
            assert!(!a.match_low_quality, "{name} stage {i}");
            assert!(t.sampler.add_gt_as_proposals, "{name} stage {i}");
            assert_eq!(t.sampler.pos_fraction, 0.25, "{name} stage {i}");
            if !name.contains("synth") {
                assert_eq!((b.num_classes, b.fc_out_channels), (80, 1024), "{name}");
                assert_eq!(t.sampler.num, 512, "{name}");
            }
        }
        if !name.contains("synth") {
            assert_eq!(m.train_cfg.rpn_proposal.max_per_img, 2000, "{name}");
            assert_eq!(m.test_cfg.rpn.max_per_img, 1000, "{name}");
        }
        let metric = if cfg.model.trains_masks() {
            vec![crate::models::EvalKind::Bbox, crate::models::EvalKind::Segm]
        } else {
            vec![crate::models::EvalKind::Bbox]
        };
        assert_eq!(cfg.evaluation.metric, metric, "{name}");
        if name.contains("20e") {
            assert_eq!(cfg.runner.max_epochs, 24, "{name}");
            assert_eq!(cfg.lr_config.step, [16, 22], "{name}");
            assert!((cfg.lr_config.warmup_ratio - 1.0 / 3.0).abs() < 1e-12, "{name}");
            assert_eq!(
                cfg.optimizer.grad_clip().map(|g| g.max_norm),
                Some(35.0),
                "{name}"
            );
        }
    }
    assert_eq!(
        seen, 6,
        "2 mmdetection 1x configs, 3 DCANet 20e configs, 1 synthetic demo"
    );
}

/// An unknown `"type"` of a nested tagged enum (a RoI head, a loss) is reported at that `type` field.
#[test]
fn unknown_nested_type_names_its_field() {
    let path = configs_dir().join("faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json");
    for (o, field) in [
        ("model.roi_head.type=\"DoubleHead\"", "model.roi_head.type"),
        (
            "model.rpn_head.loss_bbox.type=\"IoULoss\"",
            "model.rpn_head.loss_bbox.type",
        ),
    ] {
        let err = load_typed::<ExperimentConfig>(&path, &[o.into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field) && err.contains("unknown variant"),
            "{o}: {err}"
        );
    }
}

/// The torchvision configs load with torchvision's settings (each checked against torchvision 0.29's
/// `models/detection/{faster_rcnn,retinanet,rpn,roi_heads,anchor_utils,_utils}.py` and `ops/poolers.py`), and
/// the mmdetection configs keep the defaults of every torchvision option.
#[test]
fn torchvision_configs_load_with_torchvisions_settings() {
    use crate::config::{ClassIds, Layout};
    use crate::ops::LevelMapping;
    let load = |name: &str| -> ExperimentConfig {
        load_typed(&configs_dir().join("torchvision").join(name), &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .0
    };
    let cfg = load("fasterrcnn_resnet50_fpn.json");
    let ModelConfig::FasterRcnn(m) = &cfg.model else {
        panic!("a FasterRCNN")
    };
    assert_eq!(
        (m.layout, m.class_ids),
        (Layout::Torchvision, ClassIds::Offset { offset: 1 })
    );
    // FrozenBatchNorm2d with the eps 0 of the released COCO weights
    assert_eq!(
        (
            m.backbone.norm_eps,
            m.backbone.norm_requires_grad,
            m.backbone.norm_eval
        ),
        (Some(0.0), false, true)
    );
    let a = &m.rpn_head.anchor_generator;
    assert_eq!(
        a.sizes.as_ref().unwrap(),
        &vec![vec![32.0], vec![64.0], vec![128.0], vec![256.0], vec![512.0]]
    );
    assert!(a.round_base_anchors && a.strides_from_batch);
    assert!(m.rpn_head.bbox_coder.clamp_wh_above_only);
    assert_eq!(
        (
            m.train_cfg.rpn_proposal.nms_pre,
            m.train_cfg.rpn_proposal.max_per_img
        ),
        (2000, 2000)
    );
    let t = &m.test_cfg;
    assert_eq!(
        (t.rpn.nms_pre, t.rpn.max_per_img, t.rpn.min_bbox_size),
        (1000, 1000, 0.001)
    );
    assert!(t.rpn.min_size_inclusive && t.rpn.rank_by_logits);
    assert_eq!(
        (
            t.rcnn.score_thr,
            t.rcnn.nms_iou_thr,
            t.rcnn.max_per_img,
            t.rcnn.min_bbox_size
        ),
        (0.05, 0.5, 100, 0.01)
    );
    let crate::config::RoiHeadConfig::Standard(h) = &m.roi_head else {
        panic!("torchvision's Faster R-CNN has a standard RoI head")
    };
    let e = &h.bbox_roi_extractor;
    assert_eq!((e.sampling_ratio, e.aligned), (2, false));
    assert_eq!(
        e.mapping,
        LevelMapping::Torchvision {
            canonical_scale: 224.0,
            canonical_level: 4.0
        }
    );
    assert_eq!(h.bbox_head.num_classes, 90);
    assert!(h.bbox_head.bbox_coder.clamp_wh_above_only);
    assert_eq!(cfg.data.pipeline.img_scale, [1333, 800]);

    let cfg = load("retinanet_resnet50_fpn.json");
    let ModelConfig::RetinaNet(m) = &cfg.model else {
        panic!("a RetinaNet")
    };
    assert_eq!(
        (m.layout, m.class_ids),
        (Layout::Torchvision, ClassIds::Offset { offset: 0 })
    );
    assert_eq!(m.bbox_head.num_classes, 91);
    // LastLevelP6P7(256, 256): P6 from P5, ReLU before P7
    assert_eq!(m.neck.add_extra_convs, crate::necks::ExtraConvs::OnOutput);
    assert!(m.neck.relu_before_extra_convs);
    // int(32 * 2^(1/3)) = 40, int(32 * 2^(2/3)) = 50, ...
    let sizes = m.bbox_head.anchor_generator.sizes.as_ref().unwrap();
    assert_eq!(sizes[0], [32.0, 40.0, 50.0]);
    assert_eq!(sizes[4], [512.0, 645.0, 812.0]);
    assert_eq!((m.test_cfg.nms_pre, m.test_cfg.max_per_img), (1000, 300));

    // the mmdetection configs keep every torchvision option off
    let (cfg, _): (ExperimentConfig, _) = load_typed(
        &configs_dir().join("faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json"),
        &[],
    )
    .unwrap();
    let ModelConfig::FasterRcnn(m) = &cfg.model else {
        panic!("a FasterRCNN")
    };
    assert_eq!((m.layout, m.class_ids), (Layout::Mmdetection, ClassIds::Sorted));
    assert_eq!((m.backbone.norm_eps, m.backbone.norm_requires_grad), (None, true));
    let a = &m.rpn_head.anchor_generator;
    assert!(a.sizes.is_none() && !a.strides_from_batch && !m.rpn_head.bbox_coder.clamp_wh_above_only);
    assert!(!m.test_cfg.rpn.min_size_inclusive && !m.test_cfg.rpn.rank_by_logits);
}

/// torchvision's `maskrcnn_resnet50_fpn` (`models/detection/mask_rcnn.py`): Faster R-CNN's settings, the mask
/// RoIAlign 14x14 with `sampling_ratio=2`, `aligned=False` and the level mapper of `MultiScaleRoIAlign`, the
/// mask head for 90 classes with torchvision's targets and paste, and no low-quality matches in the RoI head's
/// Matcher; mmdetection's Mask R-CNN keeps its own conventions.
#[test]
fn the_torchvision_mask_rcnn_config_has_torchvisions_mask_branch() {
    use crate::config::{Layout, MaskConvention};
    use crate::ops::LevelMapping;
    let load = |name: &str| -> ExperimentConfig {
        load_typed(&configs_dir().join(name), &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .0
    };
    let cfg = load("torchvision/maskrcnn_resnet50_fpn.json");
    let ModelConfig::MaskRcnn(m) = &cfg.model else {
        panic!("a MaskRCNN")
    };
    assert_eq!(m.layout, Layout::Torchvision);
    assert_eq!(m.backbone.norm_eps, Some(0.0));
    assert!(!m.train_cfg.rcnn.assigner.match_low_quality);
    assert_eq!(m.test_cfg.rcnn.min_bbox_size, 0.01);
    assert_eq!(cfg.runner.max_epochs, 26);
    let crate::config::RoiHeadConfig::Standard(h) = &m.roi_head else {
        panic!("a standard RoI head")
    };
    assert_eq!(h.bbox_head.num_classes, 90);
    let e = h.mask_roi_extractor.as_ref().expect("a mask RoIAlign");
    assert_eq!((e.output_size, e.sampling_ratio, e.aligned), ([14, 14], 2, false));
    assert_eq!(
        e.mapping,
        LevelMapping::Torchvision {
            canonical_scale: 224.0,
            canonical_level: 4.0
        }
    );
    let mask = h.mask_head.as_ref().expect("a mask head");
    assert_eq!(
        (
            mask.num_convs,
            mask.conv_out_channels,
            mask.roi_feat_size,
            mask.num_classes
        ),
        (4, 256, 14, 90)
    );
    assert_eq!(
        (mask.paste, mask.targets),
        (MaskConvention::Torchvision, MaskConvention::Torchvision)
    );
    assert_eq!(mask.mask_thr_binary, 0.5);

    let cfg = load("mask_rcnn/mask_rcnn_r50_fpn_1x_coco.json");
    let ModelConfig::MaskRcnn(m) = &cfg.model else {
        panic!("a MaskRCNN")
    };
    let crate::config::RoiHeadConfig::Standard(h) = &m.roi_head else {
        panic!("a standard RoI head")
    };
    let mask = h.mask_head.as_ref().expect("a mask head");
    assert_eq!(
        (mask.paste, mask.targets),
        (MaskConvention::Mmdetection, MaskConvention::Mmdetection)
    );
    let err = load_typed::<ExperimentConfig>(
        &configs_dir().join("mask_rcnn/mask_rcnn_r50_fpn_1x_coco.json"),
        &[r#"model.roi_head.mask_head.paste="detectron""#.to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("paste") || err.contains("detectron"), "{err}");
}

#[test]
fn class_ids_give_the_category_of_each_class() {
    use crate::config::ClassIds;
    assert_eq!(ClassIds::Sorted.category_ids(&[2, 7, 9], 3), vec![2, 7, 9]);
    // torchvision's Faster R-CNN: class 0 is category 1 (person), class 89 category 90 (toothbrush)
    let tv = ClassIds::Offset { offset: 1 }.category_ids(&[1, 2, 90], 90);
    assert_eq!((tv.len(), tv[0], tv[89]), (90, 1, 90));
    assert!(ClassIds::Offset { offset: 0 }.category_ids(&[], 0).is_empty());
    let err = serde_json::from_value::<ClassIds>(json!({"type": "offset"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("offset"), "{err}");
}
