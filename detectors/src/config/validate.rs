//! Range checks of a typed experiment config, run once at load time.
//!
//! The schema (serde) guarantees types; these checks guarantee values that the loop can use: a zero image
//! scale, a zero standard deviation or a zero batch size would otherwise surface much later as a panicking
//! loader worker, NaN weights or a silently empty epoch. Every error names the JSON path of the field.

use super::error::ConfigError;
use super::typed::{ExperimentConfig, ModelConfig, OptimizerConfig, RetinaNetConfig};

/// Largest accepted `data.pipeline.img_scale` entry (pixels per side): 8192 x 8192 is already 800 MB of f32
/// pixels per image; larger values are typos (or an extra zero).
pub const MAX_IMG_SCALE: usize = 8192;
/// Most loader worker threads.
pub const MAX_NUM_WORKERS: usize = 256;
/// Most batches prepared ahead.
pub const MAX_PREFETCH: usize = 1024;

/// Check the values of `cfg` (loaded from `source`). The first offending field is reported as
/// [`ConfigError::Invalid`] with its JSON path, e.g. `data.pipeline.img_scale.0: must be at least 1, got 0`.
pub fn validate_experiment(cfg: &ExperimentConfig, source: &str) -> Result<(), ConfigError> {
    let mut c = Checks::default();
    check_data(&mut c, cfg);
    check_optimizer(&mut c, cfg);
    check_schedule(&mut c, cfg);
    // a new detector type adds its own checks here
    match &cfg.model {
        ModelConfig::RetinaNet(m) => check_retinanet(&mut c, m),
        ModelConfig::Rpn(m) => {
            check_rpn(&mut c, &m.neck, &m.rpn_head, &m.train_cfg.rpn);
            check_proposals(&mut c, &m.test_cfg.rpn, "model.test_cfg.rpn");
        }
        ModelConfig::FasterRcnn(m) | ModelConfig::MaskRcnn(m) => check_two_stage(&mut c, m),
        ModelConfig::CascadeRcnn(m) => check_cascade(&mut c, m),
    }
    match c.first {
        None => Ok(()),
        Some((path, message)) => Err(ConfigError::Invalid {
            source_name: source.to_string(),
            path,
            message,
        }),
    }
}

/// Collects the first failed check.
#[derive(Default)]
struct Checks {
    first: Option<(String, String)>,
}

impl Checks {
    fn fail(&mut self, path: impl Into<String>, message: String) {
        if self.first.is_none() {
            self.first = Some((path.into(), message));
        }
    }

    fn at_least(&mut self, path: &str, v: usize, min: usize) {
        if v < min {
            self.fail(path, format!("must be at least {min}, got {v}"));
        }
    }

    fn at_most(&mut self, path: &str, v: usize, max: usize) {
        if v > max {
            self.fail(path, format!("must be at most {max}, got {v}"));
        }
    }

    fn finite(&mut self, path: &str, v: f64) -> bool {
        if !v.is_finite() {
            self.fail(path, format!("must be a finite number, got {v}"));
        }
        v.is_finite()
    }

    fn positive(&mut self, path: &str, v: f64) {
        if self.finite(path, v) && v <= 0.0 {
            self.fail(path, format!("must be > 0, got {v}"));
        }
    }

    fn non_negative(&mut self, path: &str, v: f64) {
        if self.finite(path, v) && v < 0.0 {
            self.fail(path, format!("must be >= 0, got {v}"));
        }
    }

    /// `lo <= v <= hi`, or `lo <= v < hi` when `open_hi`.
    fn within(&mut self, path: &str, v: f64, lo: f64, hi: f64, open_hi: bool) {
        let ok = v >= lo && if open_hi { v < hi } else { v <= hi };
        if self.finite(path, v) && !ok {
            let close = if open_hi { ')' } else { ']' };
            self.fail(path, format!("must be in [{lo}, {hi}{close}, got {v}"));
        }
    }
}

fn check_data(c: &mut Checks, cfg: &ExperimentConfig) {
    let d = &cfg.data;
    c.at_least("data.batch_size", d.batch_size, 1);
    c.at_most("data.num_workers", d.num_workers, MAX_NUM_WORKERS);
    c.at_most("data.prefetch", d.prefetch, MAX_PREFETCH);
    let p = &d.pipeline;
    for (i, &s) in p.img_scale.iter().enumerate() {
        let path = format!("data.pipeline.img_scale.{i}");
        c.at_least(&path, s, 1);
        c.at_most(&path, s, MAX_IMG_SCALE);
    }
    c.within("data.pipeline.flip_prob", p.flip_prob, 0.0, 1.0, false);
    for (i, &m) in p.mean.iter().enumerate() {
        c.finite(&format!("data.pipeline.mean.{i}"), m.into());
    }
    for (i, &s) in p.std.iter().enumerate() {
        c.positive(&format!("data.pipeline.std.{i}"), s.into());
    }
    c.at_most(
        "data.pipeline.pad_size_divisor",
        p.pad_size_divisor,
        MAX_IMG_SCALE,
    );
}

fn check_optimizer(c: &mut Checks, cfg: &ExperimentConfig) {
    c.positive("optimizer.lr", cfg.optimizer.lr());
    match &cfg.optimizer {
        OptimizerConfig::Sgd(s) => {
            c.within("optimizer.momentum", s.momentum, 0.0, 1.0, true);
            c.non_negative("optimizer.weight_decay", s.weight_decay);
        }
        OptimizerConfig::AdamW(a) => {
            for (i, &b) in a.betas.iter().enumerate() {
                c.within(&format!("optimizer.betas.{i}"), b, 0.0, 1.0, true);
            }
            c.positive("optimizer.eps", a.eps);
            c.non_negative("optimizer.weight_decay", a.weight_decay);
        }
    }
    if let Some(clip) = cfg.optimizer.grad_clip() {
        c.positive("optimizer.grad_clip.max_norm", clip.max_norm);
    }
}

fn check_schedule(c: &mut Checks, cfg: &ExperimentConfig) {
    c.within(
        "lr_config.warmup_ratio",
        cfg.lr_config.warmup_ratio,
        0.0,
        1.0,
        false,
    );
    c.positive("lr_config.gamma", cfg.lr_config.gamma);
    c.at_least("runner.max_epochs", cfg.runner.max_epochs, 1);
    c.at_least("checkpoint_config.interval", cfg.checkpoint_config.interval, 1);
    if let Some(n) = cfg.checkpoint_config.max_keep_ckpts {
        c.at_least("checkpoint_config.max_keep_ckpts", n, 1);
    }
    c.at_least("log_config.interval", cfg.log_config.interval, 1);
    c.at_least(
        "auto_scale_lr.base_batch_size",
        cfg.auto_scale_lr.base_batch_size,
        1,
    );
}

fn check_retinanet(c: &mut Checks, m: &RetinaNetConfig) {
    c.at_least("model.neck.out_channels", m.neck.out_channels, 1);
    c.at_least("model.neck.num_outs", m.neck.num_outs, 1);
    let h = &m.bbox_head;
    c.at_least("model.bbox_head.num_classes", h.num_classes, 1);
    c.at_least("model.bbox_head.feat_channels", h.feat_channels, 1);
    let p = h.prior_prob;
    if c.finite("model.bbox_head.prior_prob", p) && !(p > 0.0 && p < 1.0) {
        c.fail(
            "model.bbox_head.prior_prob",
            format!("must be in (0, 1), got {p}"),
        );
    }
    check_anchors(c, &h.anchor_generator, "model.bbox_head.anchor_generator");
    check_coder(c, &h.bbox_coder, "model.bbox_head.bbox_coder");
    c.non_negative(
        "model.bbox_head.loss_cls.loss_weight",
        h.loss_cls.loss_weight.into(),
    );
    c.non_negative("model.bbox_head.loss_cls.gamma", h.loss_cls.gamma.into());
    c.within(
        "model.bbox_head.loss_cls.alpha",
        h.loss_cls.alpha.into(),
        0.0,
        1.0,
        false,
    );
    c.non_negative(
        "model.bbox_head.loss_bbox.loss_weight",
        h.loss_bbox.loss_weight.into(),
    );
    let t = &m.test_cfg;
    c.at_least("model.test_cfg.nms_pre", t.nms_pre, 1);
    c.at_least("model.test_cfg.max_per_img", t.max_per_img, 1);
    c.finite("model.test_cfg.score_thr", t.score_thr);
    c.within("model.test_cfg.nms_iou_thr", t.nms_iou_thr, 0.0, 1.0, false);
}

fn check_anchors(c: &mut Checks, a: &crate::anchors::AnchorGeneratorConfig, ag: &str) {
    if a.strides.is_empty() {
        c.fail(format!("{ag}.strides"), "must not be empty".into());
    }
    for (i, &s) in a.strides.iter().enumerate() {
        c.at_least(&format!("{ag}.strides.{i}"), s, 1);
    }
    if a.ratios.is_empty() {
        c.fail(format!("{ag}.ratios"), "must not be empty".into());
    }
    for (i, &r) in a.ratios.iter().enumerate() {
        c.positive(&format!("{ag}.ratios.{i}"), r.into());
    }
    for (i, &s) in a.scales.iter().flatten().enumerate() {
        c.positive(&format!("{ag}.scales.{i}"), s.into());
    }
    if let Some(o) = a.octave_base_scale {
        c.positive(&format!("{ag}.octave_base_scale"), o.into());
    }
    if let Some(n) = a.scales_per_octave {
        c.at_least(&format!("{ag}.scales_per_octave"), n, 1);
    }
    for (i, &s) in a.base_sizes.iter().flatten().enumerate() {
        c.positive(&format!("{ag}.base_sizes.{i}"), s.into());
    }
}

fn check_coder(c: &mut Checks, coder: &crate::coders::DeltaXywhCoderConfig, path: &str) {
    for (i, &s) in coder.target_stds.iter().enumerate() {
        c.positive(&format!("{path}.target_stds.{i}"), s.into());
    }
    for (i, &s) in coder.target_means.iter().enumerate() {
        c.finite(&format!("{path}.target_means.{i}"), s.into());
    }
}

fn check_proposals(c: &mut Checks, p: &super::ProposalConfig, path: &str) {
    c.at_least(&format!("{path}.nms_pre"), p.nms_pre, 1);
    c.at_least(&format!("{path}.max_per_img"), p.max_per_img, 1);
    c.within(&format!("{path}.nms_iou_thr"), p.nms_iou_thr, 0.0, 1.0, false);
    c.non_negative(&format!("{path}.min_bbox_size"), p.min_bbox_size);
}

fn check_sampler(c: &mut Checks, s: &crate::samplers::RandomSamplerConfig, path: &str) {
    c.at_least(&format!("{path}.num"), s.num, 1);
    c.within(
        &format!("{path}.pos_fraction"),
        s.pos_fraction.into(),
        0.0,
        1.0,
        false,
    );
}

fn check_rpn(
    c: &mut Checks,
    neck: &crate::necks::FpnConfig,
    h: &super::RpnHeadConfig,
    train: &super::RpnTrainConfig,
) {
    c.at_least("model.neck.out_channels", neck.out_channels, 1);
    c.at_least("model.neck.num_outs", neck.num_outs, 1);
    c.at_least("model.rpn_head.feat_channels", h.feat_channels, 1);
    check_anchors(c, &h.anchor_generator, "model.rpn_head.anchor_generator");
    check_coder(c, &h.bbox_coder, "model.rpn_head.bbox_coder");
    check_sampler(c, &train.sampler, "model.train_cfg.rpn.sampler");
}

fn check_two_stage(c: &mut Checks, m: &super::TwoStageConfig) {
    check_rpn(c, &m.neck, &m.rpn_head, &m.train_cfg.rpn);
    check_proposals(c, &m.train_cfg.rpn_proposal, "model.train_cfg.rpn_proposal");
    check_proposals(c, &m.test_cfg.rpn, "model.test_cfg.rpn");
    check_sampler(c, &m.train_cfg.rcnn.sampler, "model.train_cfg.rcnn.sampler");
    match &m.roi_head {
        super::RoiHeadConfig::Standard(r) => {
            check_bbox_head(c, &r.bbox_head, "model.roi_head.bbox_head");
            check_pooled_channels(
                c,
                m.neck.out_channels,
                "model.roi_head.bbox_head",
                r.bbox_head.in_channels,
            );
            check_mask_head(
                c,
                m.neck.out_channels,
                r.bbox_head.num_classes,
                r.mask_head.as_ref(),
            );
        }
        super::RoiHeadConfig::Cascade(_) => c.fail(
            "model.roi_head.type",
            "a CascadeRoIHead needs one train_cfg.rcnn per stage: use \"type\": \"CascadeRCNN\"".into(),
        ),
    }
    check_rcnn_test(c, &m.test_cfg.rcnn);
}

/// A RoI head pools the FPN's levels, so its `in_channels` must be the neck's `out_channels` (otherwise the
/// first fully connected layer or conv meets features of another width, a shape panic at the first step).
fn check_pooled_channels(c: &mut Checks, neck_out: usize, head: &str, in_channels: usize) {
    if in_channels != neck_out {
        c.fail(
            format!("{head}.in_channels"),
            format!(
                "{in_channels} channels, but the RoI features are the FPN's model.neck.out_channels = {neck_out}"
            ),
        );
    }
}

/// The mask head: its sizes, its threshold, its input width, and one mask map per box class (a label of the
/// box head must index a mask map).
fn check_mask_head(
    c: &mut Checks,
    neck_out: usize,
    box_classes: usize,
    mask: Option<&super::FcnMaskHeadConfig>,
) {
    if let Some(h) = mask {
        let path = "model.roi_head.mask_head";
        c.at_least(&format!("{path}.num_classes"), h.num_classes, 1);
        if h.num_classes != box_classes {
            c.fail(
                format!("{path}.num_classes"),
                format!("{} classes, the box head has {box_classes}", h.num_classes),
            );
        }
        c.at_least(&format!("{path}.conv_out_channels"), h.conv_out_channels, 1);
        c.at_least(&format!("{path}.roi_feat_size"), h.roi_feat_size, 1);
        c.within(
            &format!("{path}.mask_thr_binary"),
            h.mask_thr_binary,
            0.0,
            1.0,
            false,
        );
        check_pooled_channels(c, neck_out, path, h.in_channels);
    }
}

fn check_bbox_head(c: &mut Checks, b: &super::BBoxHeadConfig, path: &str) {
    c.at_least(&format!("{path}.num_classes"), b.num_classes, 1);
    c.at_least(&format!("{path}.fc_out_channels"), b.fc_out_channels, 1);
    c.at_least(&format!("{path}.roi_feat_size"), b.roi_feat_size, 1);
    check_coder(c, &b.bbox_coder, &format!("{path}.bbox_coder"));
}

/// Cascade R-CNN: as a two-stage detector, with as many box heads, loss weights and `train_cfg.rcnn`
/// entries as stages, all heads of one class count.
fn check_cascade(c: &mut Checks, m: &super::CascadeConfig) {
    check_rpn(c, &m.neck, &m.rpn_head, &m.train_cfg.rpn);
    check_proposals(c, &m.train_cfg.rpn_proposal, "model.train_cfg.rpn_proposal");
    check_proposals(c, &m.test_cfg.rpn, "model.test_cfg.rpn");
    let super::RoiHeadConfig::Cascade(r) = &m.roi_head else {
        c.fail(
            "model.roi_head.type",
            "a CascadeRCNN needs a CascadeRoIHead (a StandardRoIHead is a FasterRCNN or MaskRCNN)".into(),
        );
        return;
    };
    let n = r.num_stages;
    c.at_least("model.roi_head.num_stages", n, 1);
    for (path, len) in [
        ("model.roi_head.bbox_head", r.bbox_head.len()),
        ("model.roi_head.stage_loss_weights", r.stage_loss_weights.len()),
        ("model.train_cfg.rcnn", m.train_cfg.rcnn.len()),
    ] {
        if len != n {
            c.fail(path, format!("{len} entries for {n} stages (num_stages)"));
        }
    }
    if let Some(first) = r.bbox_head.first() {
        check_mask_head(c, m.neck.out_channels, first.num_classes, r.mask_head.as_ref());
    }
    for (i, b) in r.bbox_head.iter().enumerate() {
        check_bbox_head(c, b, &format!("model.roi_head.bbox_head.{i}"));
        check_pooled_channels(
            c,
            m.neck.out_channels,
            &format!("model.roi_head.bbox_head.{i}"),
            b.in_channels,
        );
        if b.num_classes != r.bbox_head[0].num_classes {
            c.fail(
                format!("model.roi_head.bbox_head.{i}.num_classes"),
                format!(
                    "{} classes, stage 0 has {}",
                    b.num_classes, r.bbox_head[0].num_classes
                ),
            );
        }
    }
    for (i, w) in r.stage_loss_weights.iter().enumerate() {
        c.non_negative(&format!("model.roi_head.stage_loss_weights.{i}"), *w);
    }
    for (i, t) in m.train_cfg.rcnn.iter().enumerate() {
        check_sampler(c, &t.sampler, &format!("model.train_cfg.rcnn.{i}.sampler"));
    }
    check_rcnn_test(c, &m.test_cfg.rcnn);
}

fn check_rcnn_test(c: &mut Checks, t: &super::RcnnTestConfig) {
    c.at_least("model.test_cfg.rcnn.max_per_img", t.max_per_img, 1);
    c.finite("model.test_cfg.rcnn.score_thr", t.score_thr);
    c.within("model.test_cfg.rcnn.nms_iou_thr", t.nms_iou_thr, 0.0, 1.0, false);
    c.non_negative("model.test_cfg.rcnn.min_bbox_size", t.min_bbox_size);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_typed;
    use std::path::Path;

    fn demo_with(overrides: &[&str]) -> Result<(), ConfigError> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/retinanet/retinanet_r18_fpn_synth_demo.json");
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &overrides).expect("typed");
        validate_experiment(&cfg, "demo.json")
    }

    fn err_of(overrides: &[&str]) -> String {
        demo_with(overrides)
            .expect_err("the config must be rejected")
            .to_string()
    }

    #[test]
    fn shipped_configs_pass() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/retinanet");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &[]).unwrap();
            validate_experiment(&cfg, "x").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    #[test]
    fn zero_image_scale_names_its_path() {
        let e = err_of(&["data.pipeline.img_scale=[0,0]", "data.pipeline.keep_ratio=false"]);
        assert!(
            e.contains("`data.pipeline.img_scale.0`") && e.contains("at least 1"),
            "{e}"
        );
        let e = err_of(&["data.pipeline.img_scale=[100000,800]"]);
        assert!(
            e.contains("`data.pipeline.img_scale.0`") && e.contains("at most 8192"),
            "{e}"
        );
    }

    #[test]
    fn each_range_is_checked_with_its_path() {
        for (o, path) in [
            ("data.pipeline.std=[0,1,1]", "data.pipeline.std.0"),
            ("data.pipeline.std=[1,-2,1]", "data.pipeline.std.1"),
            ("data.batch_size=0", "data.batch_size"),
            ("data.num_workers=100000", "data.num_workers"),
            ("data.pipeline.flip_prob=1.5", "data.pipeline.flip_prob"),
            ("optimizer.lr=0", "optimizer.lr"),
            ("optimizer.lr=-0.1", "optimizer.lr"),
            ("optimizer.grad_clip.max_norm=0", "optimizer.grad_clip.max_norm"),
            ("optimizer.betas=[1,0.9]", "optimizer.betas.0"),
            ("model.bbox_head.num_classes=0", "model.bbox_head.num_classes"),
            (
                "model.bbox_head.anchor_generator.strides=[8,0,32]",
                "model.bbox_head.anchor_generator.strides.1",
            ),
            (
                "model.bbox_head.anchor_generator.strides=[]",
                "model.bbox_head.anchor_generator.strides",
            ),
            ("model.bbox_head.prior_prob=1", "model.bbox_head.prior_prob"),
            ("runner.max_epochs=0", "runner.max_epochs"),
            ("checkpoint_config.interval=0", "checkpoint_config.interval"),
            (
                "checkpoint_config.max_keep_ckpts=0",
                "checkpoint_config.max_keep_ckpts",
            ),
            ("log_config.interval=0", "log_config.interval"),
            ("auto_scale_lr.base_batch_size=0", "auto_scale_lr.base_batch_size"),
            ("lr_config.gamma=0", "lr_config.gamma"),
        ] {
            match demo_with(&[o]) {
                Err(ConfigError::Invalid { path: p, .. }) => assert_eq!(p, path, "{o}"),
                other => panic!("{o}: expected an error at {path}, got {other:?}"),
            }
        }
    }

    #[test]
    fn two_stage_values_are_checked_with_their_path() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json");
        for (o, field) in [
            (
                "model.train_cfg.rcnn.sampler.num=0",
                "model.train_cfg.rcnn.sampler.num",
            ),
            (
                "model.test_cfg.rpn.nms_iou_thr=1.5",
                "model.test_cfg.rpn.nms_iou_thr",
            ),
            (
                "model.rpn_head.anchor_generator.strides=[4, 0, 16, 32]",
                "model.rpn_head.anchor_generator.strides.1",
            ),
            (
                "model.roi_head.bbox_head.num_classes=0",
                "model.roi_head.bbox_head.num_classes",
            ),
            // the RoI features are the FPN's: a head of another width would panic at its first layer
            (
                "model.roi_head.bbox_head.in_channels=128",
                "model.roi_head.bbox_head.in_channels",
            ),
            (
                "model.neck.out_channels=32",
                "model.roi_head.bbox_head.in_channels",
            ),
        ] {
            let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &[o.to_string()]).expect("typed");
            let err = validate_experiment(&cfg, "demo.json").expect_err(o).to_string();
            assert!(err.contains(field), "{o}: {err}");
        }
        let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &[]).unwrap();
        validate_experiment(&cfg, "demo.json").unwrap();
    }

    /// Cascade R-CNN: the stage counts of the heads, the weights and `train_cfg.rcnn` must agree, every stage
    /// has one class count, and each stage's values are checked at their index.
    #[test]
    fn cascade_values_are_checked_with_their_path() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/cascade_rcnn/cascade_rcnn_r18_fpn_synth_demo.json");
        for (o, field) in [
            ("model.roi_head.num_stages=2", "model.roi_head.bbox_head"),
            (
                "model.roi_head.stage_loss_weights=[1.0, 0.5]",
                "model.roi_head.stage_loss_weights",
            ),
            (
                "model.roi_head.stage_loss_weights=[1.0, -0.5, 0.25]",
                "model.roi_head.stage_loss_weights.1",
            ),
            (
                "model.roi_head.bbox_head.2.num_classes=4",
                "model.roi_head.bbox_head.2.num_classes",
            ),
            (
                "model.train_cfg.rcnn.1.sampler.num=0",
                "model.train_cfg.rcnn.1.sampler.num",
            ),
            (
                "model.roi_head.bbox_head.1.in_channels=32",
                "model.roi_head.bbox_head.1.in_channels",
            ),
        ] {
            let err = match load_typed::<ExperimentConfig>(&path, &[o.to_string()]) {
                Ok((cfg, _)) => validate_experiment(&cfg, "demo.json").expect_err(o).to_string(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(field), "{o}: {err}");
        }
        let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &[]).unwrap();
        validate_experiment(&cfg, "demo.json").unwrap();
    }

    /// Mask R-CNN: the mask head reads the FPN's channels and has one map per box class.
    #[test]
    fn mask_head_values_are_checked_with_their_path() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/mask_rcnn/mask_rcnn_r18_fpn_synth_demo.json");
        for (o, field, says) in [
            (
                "model.roi_head.mask_head.in_channels=32",
                "model.roi_head.mask_head.in_channels",
                "model.neck.out_channels",
            ),
            (
                "model.roi_head.mask_head.num_classes=7",
                "model.roi_head.mask_head.num_classes",
                "the box head has",
            ),
            (
                "model.roi_head.mask_head.mask_thr_binary=2",
                "model.roi_head.mask_head.mask_thr_binary",
                "must be in [0, 1]",
            ),
            (
                "model.roi_head.mask_head.conv_out_channels=0",
                "model.roi_head.mask_head.conv_out_channels",
                "at least 1",
            ),
        ] {
            let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &[o.to_string()]).expect("typed");
            let err = validate_experiment(&cfg, "demo.json").expect_err(o).to_string();
            assert!(err.contains(field) && err.contains(says), "{o}: {err}");
        }
        let (cfg, _): (ExperimentConfig, _) = load_typed(&path, &[]).unwrap();
        validate_experiment(&cfg, "demo.json").unwrap();
    }
}
