//! One detector on two backends, stage by stage: the same weights (one checkpoint loaded into both) and the
//! same batch, then the largest difference of every stage's output: backbone levels, FPN levels, the heads
//! (RetinaNet), every loss term and its normaliser, and the gradient of every parameter.
//!
//! `gpu_path.rs` runs it CPU against wgpu, where it says which stage a disagreement starts in; the CPU suite
//! runs it CPU against CPU (`backend_stages.rs`), where every difference must be exactly zero.

use std::path::Path;

use attndet_detectors::config::{ExperimentConfig, load_typed};
use attndet_detectors::data::BatchItem;
use attndet_detectors::engine::checkpoint::{TrainState, load_model, save_model};
use attndet_detectors::models::{AnyDetector, DetBackend, Detector};
use attndet_detectors::structures::{GroundTruth, ImageMeta, RleMask};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// The largest difference of one stage's output between the two backends.
#[derive(Debug, Clone)]
pub struct StageDiff {
    /// What was compared (`backbone.2`, `fpn.0`, `loss.loss_cls`, `grad.neck.lateral_convs.0.weight`, ...).
    pub name: String,
    /// `max |a - b|` over the elements.
    pub max_abs: f32,
    /// `max |a|`, the scale the difference is relative to.
    pub scale: f32,
}

impl StageDiff {
    /// `max_abs / scale` (0 when both are 0).
    pub fn relative(&self) -> f32 {
        if self.max_abs == 0.0 {
            0.0
        } else {
            self.max_abs / self.scale.max(f32::MIN_POSITIVE)
        }
    }
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

fn stage(name: String, a: &[f32], b: &[f32]) -> StageDiff {
    assert_eq!(
        a.len(),
        b.len(),
        "{name}: the two backends give different lengths"
    );
    let max_abs = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
    StageDiff { name, max_abs, scale }
}

/// Overrides that make the RetinaNet synthetic demo config tiny (16 FPN channels, one head conv): what the
/// GPU-path tests run on lavapipe.
pub const RETINANET_TINY: &[&str] = &[
    "model.neck.out_channels=16",
    "model.bbox_head.feat_channels=16",
    "model.bbox_head.stacked_convs=1",
];

/// The same for Faster R-CNN (16 FPN and RPN channels, 32-wide fc layers).
pub const FASTER_RCNN_TINY: &[&str] = &[
    "model.neck.out_channels=16",
    "model.rpn_head.feat_channels=16",
    "model.roi_head.bbox_head.in_channels=16",
    "model.roi_head.bbox_head.fc_out_channels=32",
];

/// The same for Mask R-CNN (and a 16-wide mask head).
pub const MASK_RCNN_TINY: &[&str] = &[
    "model.neck.out_channels=16",
    "model.rpn_head.feat_channels=16",
    "model.roi_head.bbox_head.in_channels=16",
    "model.roi_head.bbox_head.fc_out_channels=32",
    "model.roi_head.mask_head.in_channels=16",
    "model.roi_head.mask_head.conv_out_channels=16",
];

/// The same for Cascade R-CNN (each of the three stages 32 wide).
pub const CASCADE_RCNN_TINY: &[&str] = &[
    "model.neck.out_channels=16",
    "model.rpn_head.feat_channels=16",
    "model.roi_head.bbox_head.0.in_channels=16",
    "model.roi_head.bbox_head.0.fc_out_channels=32",
    "model.roi_head.bbox_head.1.in_channels=16",
    "model.roi_head.bbox_head.1.fc_out_channels=32",
    "model.roi_head.bbox_head.2.in_channels=16",
    "model.roi_head.bbox_head.2.fc_out_channels=32",
];

/// The tiny variant of a shipped config that the GPU-path tests train: 64 x 64 inputs, 16 FPN channels.
pub fn tiny_config(config: &str, overrides: &[&str]) -> ExperimentConfig {
    let path = attndet_tests::workspace_root().join("configs").join(config);
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load_typed::<ExperimentConfig>(&path, &overrides)
        .unwrap_or_else(|e| panic!("{config}: {e}"))
        .0
}

/// A batch of two 64 x 64 images (values in [-1, 1), a fixed LCG) with three boxes of three classes and their
/// masks (filled rectangles).
pub fn batch() -> (Vec<f32>, Vec<BatchItem>) {
    let pixels = super::values(2 * 3 * 64 * 64, 0x2545_f491_4f6c_dd1d);
    let rect_mask = |b: [f32; 4]| {
        let bitmap: Vec<bool> = (0..64 * 64)
            .map(|i| {
                let (y, x) = ((i / 64) as f32, (i % 64) as f32);
                x >= b[0] && x < b[2] && y >= b[1] && y < b[3]
            })
            .collect();
        RleMask::encode(&bitmap, [64, 64])
    };
    let item = |id: u64, boxes: Vec<[f32; 4]>, labels: Vec<usize>| BatchItem {
        meta: ImageMeta::unscaled(id, (64, 64)),
        gt: GroundTruth {
            masks: Some(boxes.iter().map(|&b| rect_mask(b)).collect()),
            boxes,
            labels,
            ignore: Vec::new(),
        },
        seed: id,
    };
    let items = vec![
        item(
            1,
            vec![[8.0, 10.0, 40.0, 44.0], [30.0, 5.0, 60.0, 30.0]],
            vec![0, 2],
        ),
        item(2, vec![[4.0, 20.0, 28.0, 60.0]], vec![1]),
    ];
    (pixels, items)
}

/// Every float parameter's gradient (or `None` for a frozen one), by module path, in visiting order.
struct Grads<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    path: Vec<String>,
    out: Vec<(String, Option<Vec<f32>>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let grad = param.val().grad(self.grads).map(host);
        self.out.push((self.path.join("."), grad));
    }
}

pub fn gradients<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &B::Gradients,
) -> Vec<(String, Option<Vec<f32>>)> {
    let mut v = Grads::<B> {
        grads,
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

/// The outputs of each stage of `model` on `images`: backbone levels, FPN levels and (RetinaNet) the heads.
fn stage_outputs<B: DetBackend>(model: &AnyDetector<B>, images: Tensor<B, 4>) -> Vec<(String, Vec<f32>)> {
    use attndet_backbones::Backbone;
    let mut out = Vec::new();
    let (backbone, neck) = match model {
        AnyDetector::RetinaNet(m) => (&m.backbone, &m.neck),
        AnyDetector::TwoStage(m) => (&m.backbone, &m.neck),
        AnyDetector::Rpn(m) => (&m.backbone, &m.neck),
    };
    let feats = backbone.forward_features(images.clone());
    for (l, f) in feats.iter().enumerate() {
        out.push((format!("backbone.{l}"), host(f.clone())));
    }
    let pyramid = neck.forward(feats).expect("FPN forward");
    for (l, p) in pyramid.iter().enumerate() {
        out.push((format!("fpn.{l}"), host(p.clone())));
    }
    if let AnyDetector::RetinaNet(m) = model {
        for (l, (cls, reg)) in m.bbox_head.forward(&pyramid).into_iter().enumerate() {
            out.push((format!("head.cls.{l}"), host(cls)));
            out.push((format!("head.reg.{l}"), host(reg)));
        }
    }
    out
}

/// The losses (value and normaliser count per term) and every gradient of one training forward/backward.
#[allow(clippy::type_complexity)]
fn training_step<B: DetBackend + AutodiffBackend>(
    model: &AnyDetector<B>,
    images: Tensor<B, 4>,
    items: &[BatchItem],
) -> (Vec<(String, f32, f32)>, Vec<(String, Option<Vec<f32>>)>) {
    let losses = model.losses(images, items).expect("losses");
    let terms = losses
        .terms
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.value.clone().into_scalar().elem::<f32>(),
                t.normaliser.count as f32,
            )
        })
        .collect();
    let grads = losses.total().backward();
    (terms, gradients(model, &grads))
}

/// The initial weights of `cfg`'s model (seed 7, built on backend `A`), written as the checkpoint
/// `dir/weights`: what the comparisons load on every backend.
pub fn initial_weights<A: DetBackend + AutodiffBackend>(
    cfg: &ExperimentConfig,
    device: &A::Device,
    dir: &Path,
) -> std::path::PathBuf {
    A::seed(device, 7);
    let init = AnyDetector::<A>::from_config(&cfg.model, device).expect("model");
    let ckpt = dir.join("weights");
    let state = TrainState {
        epoch: 0,
        global_iter: 0,
        seed: 7,
        base_lr: 0.0,
        best: None,
        config: serde_json::Value::Null,
        classes: Vec::new(),
    };
    save_model::<A, _>(&ckpt, &init, &state).expect("save");
    ckpt
}

/// `config` (made tiny by `overrides`) on backends `A` and `G`: one checkpoint written from `A` into `dir` and
/// loaded into both, one batch, every stage compared (see the module's doc).
pub fn detector_stages<A, G>(
    config: &str,
    overrides: &[&str],
    da: &A::Device,
    dg: &G::Device,
    dir: &Path,
) -> Vec<StageDiff>
where
    A: DetBackend + AutodiffBackend,
    G: DetBackend + AutodiffBackend,
{
    let cfg = tiny_config(config, overrides);
    let ckpt = initial_weights::<A>(&cfg, da, dir);
    let a = load_model::<A, _>(&ckpt, AnyDetector::<A>::from_config(&cfg.model, da).unwrap(), da)
        .expect("load A");
    let g = load_model::<G, _>(&ckpt, AnyDetector::<G>::from_config(&cfg.model, dg).unwrap(), dg)
        .expect("load G");

    let (pixels, items) = batch();
    let images_a = Tensor::<A, 4>::from_data(TensorData::new(pixels.clone(), [2, 3, 64, 64]), da);
    let images_g = Tensor::<G, 4>::from_data(TensorData::new(pixels, [2, 3, 64, 64]), dg);

    let mut diffs = Vec::new();
    for ((name, va), (_, vg)) in stage_outputs(&a, images_a.clone())
        .into_iter()
        .zip(stage_outputs(&g, images_g.clone()))
    {
        diffs.push(stage(name, &va, &vg));
    }
    let (terms_a, grads_a) = training_step(&a, images_a, &items);
    let (terms_g, grads_g) = training_step(&g, images_g, &items);
    assert_eq!(terms_a.len(), terms_g.len(), "loss terms");
    for ((name, va, na), (_, vg, ng)) in terms_a.into_iter().zip(terms_g) {
        diffs.push(stage(format!("loss.{name}"), &[va], &[vg]));
        diffs.push(stage(format!("normaliser.{name}"), &[na], &[ng]));
    }
    diffs.extend(gradient_diffs(grads_a, grads_g));
    diffs
}

/// The losses and gradients of `config` on the CPU for the stage batch against those of the same batch in the
/// other image order: mathematically equal, so what differs is float summation order alone. How large that is
/// per parameter says how far apart two correct backends (which sum in their own orders) can be.
pub fn reordering_sensitivity(config: &str, overrides: &[&str], dir: &Path) -> Vec<StageDiff> {
    type A = burn::backend::Autodiff<burn::backend::Flex>;
    let da = Default::default();
    let cfg = tiny_config(config, overrides);
    let ckpt = initial_weights::<A>(&cfg, &da, dir);
    let load = || {
        load_model::<A, _>(
            &ckpt,
            AnyDetector::<A>::from_config(&cfg.model, &da).unwrap(),
            &da,
        )
        .expect("load")
    };
    let (a, b) = (load(), load());
    let (pixels, items) = batch();
    let half = pixels.len() / 2;
    let swapped: Vec<f32> = pixels[half..].iter().chain(&pixels[..half]).copied().collect();
    let items_swapped: Vec<BatchItem> = items.iter().rev().cloned().collect();
    let ia = Tensor::<A, 4>::from_data(TensorData::new(pixels, [2, 3, 64, 64]), &da);
    let ib = Tensor::<A, 4>::from_data(TensorData::new(swapped, [2, 3, 64, 64]), &da);
    let (ta, ga) = training_step(&a, ia, &items);
    let (tb, gb) = training_step(&b, ib, &items_swapped);
    let mut diffs = Vec::new();
    for ((name, va, na), (_, vb, nb)) in ta.into_iter().zip(tb) {
        diffs.push(stage(format!("loss.{name}"), &[va], &[vb]));
        diffs.push(stage(format!("normaliser.{name}"), &[na], &[nb]));
    }
    diffs.extend(gradient_diffs(ga, gb));
    diffs
}

/// The difference of every parameter gradient of two runs (`gradients` of the same model on each), named
/// `grad.PATH`; a parameter without a gradient in both (a frozen one, running statistics) is skipped.
///
/// # Panics
/// When the runs list other parameters, or one has a gradient the other lacks.
pub fn gradient_diffs(
    a: Vec<(String, Option<Vec<f32>>)>,
    b: Vec<(String, Option<Vec<f32>>)>,
) -> Vec<StageDiff> {
    assert_eq!(a.len(), b.len(), "parameters");
    let mut diffs = Vec::new();
    for ((name, ga), (_, gb)) in a.into_iter().zip(b) {
        match (ga, gb) {
            (Some(ga), Some(gb)) => diffs.push(stage(format!("grad.{name}"), &ga, &gb)),
            (None, None) => {}
            (ga, gb) => panic!(
                "grad.{name}: a gradient on one side only (A: {}, B: {})",
                ga.is_some(),
                gb.is_some()
            ),
        }
    }
    diffs
}

/// The table of `diffs`, one stage per line, for the test's output.
pub fn report(title: &str, diffs: &[StageDiff]) -> String {
    let mut s = format!("{title}: stage, max |a - b|, max |a|, relative\n");
    for d in diffs {
        s += &format!(
            "  {:<60} {:>11.3e} {:>11.3e} {:>11.3e}\n",
            d.name,
            d.max_abs,
            d.scale,
            d.relative()
        );
    }
    s
}
