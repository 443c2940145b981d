//! The torchvision configs (`configs/torchvision/`) reproduce torchvision's RetinaNet, Faster R-CNN and Mask
//! R-CNN: with the same formula weights, read through the torchvision checkpoint layout, on the same 800x1216
//! image, our RPN proposals and detections are torchvision's (boxes within 0.01 px, scores within 1e-4, same
//! labels and order), so are the losses of one batch (RetinaNet, Faster R-CNN, Mask R-CNN with its mask loss),
//! and Mask R-CNN's pasted masks cover torchvision's (IoU >= 0.99 per detection).
//!
//! Fixtures: `python3 detectors/scripts/torchvision_parity.py detectors/tests/fixtures/torchvision` (its
//! docstring gives the weight and image formulas, which [`formula_tensors`] and [`image`] recompute).

use std::path::{Path, PathBuf};

use attndet_backbones::Backbone;
use attndet_coco::mask::{Rle, iou as mask_iou};
use attndet_detectors::config::{ExperimentConfig, load_typed};
use attndet_detectors::data::BatchItem;
use attndet_detectors::data::transforms::normalize_into;
use attndet_detectors::models::foreign::load_tensors;
use attndet_detectors::models::{AnyDetector, Detector};
use attndet_detectors::structures::{GroundTruth, ImageMeta, RleMask};
use burn::backend::Flex;
use burn::module::ParamId;
use burn::prelude::*;
use burn_store::TensorSnapshot;
use serde_json::Value;

type B = Flex;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> Value {
    let path = root().join("detectors/tests/fixtures/torchvision").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The script's `formula_values`: element `i` of tensor `t` is `(offset_q + amp_q * u) / q` with
/// `u = ((i * 2654435761 + t * 40503 + 12345) mod 2^32) / 2^32 - 0.5`, every step exact in f64.
fn formula_tensors(fx: &Value) -> Vec<(String, TensorSnapshot)> {
    let q = fx["q"].as_f64().unwrap();
    fx["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let key = k["key"].as_str().unwrap().to_string();
            let t = k["index"].as_u64().unwrap();
            let shape: Vec<usize> = k["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let (amp, offset) = (k["amp_q"].as_f64().unwrap(), k["offset_q"].as_f64().unwrap());
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n as u64)
                .map(|i| {
                    let r = (i * 2_654_435_761 + t * 40_503 + 12_345) % (1 << 32);
                    let u = r as f64 / (1u64 << 32) as f64 - 0.5;
                    ((offset + amp * u) / q) as f32
                })
                .collect();
            let snapshot = TensorSnapshot::from_data(
                TensorData::new(values, shape),
                key.split('.').map(str::to_string).collect(),
                Vec::new(),
                ParamId::new(),
            );
            (key, snapshot)
        })
        .collect()
}

/// The script's `image_pixel`, normalised by our pipeline (`[1, 3, H, W]`, no resize or padding needed).
fn image(cfg: &ExperimentConfig, h: usize, w: usize) -> Tensor<B, 4> {
    let rects = [
        (100, 120, 300, 360),
        (620, 200, 780, 330),
        (900, 500, 1150, 760),
        (400, 600, 520, 700),
    ];
    let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        image::Rgb(std::array::from_fn(|c| {
            let mut v = (x * 3 + y * 5 + c * 71 + (x * y) / 97) % 256;
            for (k, &(x0, y0, x1, y1)) in rects.iter().enumerate() {
                if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                    v = (40 + 60 * k + 90 * c) % 256;
                }
            }
            v as u8
        }))
    });
    let p = &cfg.data.pipeline;
    let mut buf = vec![0.0f32; 3 * h * w];
    normalize_into(&img, p.mean, p.std, &mut buf, h, w);
    Tensor::from_data(TensorData::new(buf, [1, 3, h, w]), &Default::default())
}

/// The config, its model with the fixture's weights, the image and its meta.
fn setup(
    config: &str,
    fx: &Value,
    overrides: &[&str],
) -> (ExperimentConfig, AnyDetector<B>, Tensor<B, 4>, ImageMeta) {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let (cfg, _): (ExperimentConfig, _) =
        load_typed(&root().join("configs/torchvision").join(config), &overrides).unwrap();
    let mut model = AnyDetector::<B>::from_config(&cfg.model, &Default::default()).unwrap();
    let summary = load_tensors(&mut model, &cfg.model, formula_tensors(fx), Path::new("formula")).unwrap();
    assert_eq!(
        summary.applied, summary.in_file,
        "every formula tensor is a model tensor"
    );
    let (h, w) = (
        fx["height"].as_u64().unwrap() as usize,
        fx["width"].as_u64().unwrap() as usize,
    );
    let meta = ImageMeta::unscaled(1, (w as u32, h as u32));
    (cfg.clone(), model, image(&cfg, h, w), meta)
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn rows(v: &Value) -> Vec<[f32; 4]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let b = floats(b);
            [b[0], b[1], b[2], b[3]]
        })
        .collect()
}

fn close(a: &[f32; 4], b: &[f32; 4]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 0.01)
}

/// Scores closer than this are a tie to within float rounding: computed through 50 layers in another order
/// of operations, our scores differ from torchvision's by about 2e-6, so two of them closer than that may
/// come out in either order (a ranked list of a thousand scores in [0.5, 0.7] always has such neighbours).
const TIE: f32 = 2e-5;

/// A ranked list against torchvision's: at every rank our box is torchvision's box of that rank (within
/// 0.01 px), except that neighbours whose scores tie (within [`TIE`]) may be swapped. Returns the position
/// in torchvision's list of each of ours.
fn assert_ranked(ours: &[[f32; 4]], scores: &[f32], theirs: &[[f32; 4]], what: &str) -> Vec<usize> {
    assert_eq!(ours.len(), theirs.len(), "{what}: count");
    let mut used = vec![false; theirs.len()];
    let mut position = Vec::with_capacity(ours.len());
    for (i, o) in ours.iter().enumerate() {
        let j = (i.saturating_sub(4)..(i + 5).min(theirs.len()))
            .filter(|&j| !used[j] && close(o, &theirs[j]))
            .min_by_key(|&j| j.abs_diff(i))
            .unwrap_or_else(|| panic!("{what} {i}: ours {o:?}, torchvision {:?}", theirs[i]));
        if j != i {
            // torchvision's rank j holds our rank i: our scores at i and j are a tie
            assert!(
                (scores[i] - scores[j]).abs() < TIE,
                "{what} {i}: ours {o:?} is torchvision's {j} but the scores {} and {} do not tie",
                scores[i],
                scores[j]
            );
        }
        used[j] = true;
        position.push(j);
    }
    position
}

/// Detections against the fixture's: boxes within 0.01 px, scores within 1e-4, the same labels, in order
/// (but for ties, see [`assert_ranked`]). `label_offset`: our class index plus it is torchvision's label (the
/// config's `class_ids` offset).
fn assert_detections(
    d: &attndet_detectors::models::Detections,
    fx: &Value,
    label_offset: usize,
    what: &str,
) -> Vec<usize> {
    let want = &fx["detections"];
    let position = assert_ranked(&d.boxes, &d.scores, &rows(&want["boxes"]), what);
    let scores = floats(&want["scores"]);
    let labels: Vec<usize> = want["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as usize)
        .collect();
    for (i, &j) in position.iter().enumerate() {
        let (o, t) = (d.scores[i], scores[j]);
        assert!(
            (o - t).abs() < 1e-4,
            "{what} score {i}: ours {o}, torchvision {t}"
        );
        assert_eq!(d.labels[i] + label_offset, labels[j], "{what} {i}: label");
    }
    let swapped = position.iter().enumerate().filter(|(i, j)| i != *j).count();
    eprintln!(
        "{what}: {} agree, {swapped} of them swapped with a tie",
        position.len()
    );
    position
}

fn gt(fx: &Value, label_offset: usize) -> GroundTruth {
    GroundTruth {
        boxes: rows(&fx["gt_boxes"]),
        labels: fx["gt_labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap() as usize - label_offset)
            .collect(),
        ..Default::default()
    }
}

/// Our two-stage loss terms and torchvision's names of them.
const TWO_STAGE_LOSSES: [(&str, &str); 4] = [
    ("loss_rpn_cls", "loss_objectness"),
    ("loss_rpn_bbox", "loss_rpn_box_reg"),
    ("loss_cls", "loss_classifier"),
    ("loss_bbox", "loss_box_reg"),
];

fn assert_losses(ours: &[(&str, f32)], theirs: &Value, names: &[(&str, &str)]) {
    let mut bad = Vec::new();
    for (o, t) in names {
        let got = ours.iter().find(|(n, _)| n == o).unwrap().1;
        let want = theirs[*t].as_f64().unwrap() as f32;
        eprintln!("{o}: ours {got}, torchvision {t} {want}");
        if (got - want).abs() > 1e-4 * want.abs().max(1e-3) {
            bad.push(format!("{o}: ours {got}, torchvision {t} {want}"));
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

fn losses(
    model: &AnyDetector<B>,
    images: Tensor<B, 4>,
    meta: ImageMeta,
    gt: GroundTruth,
) -> Vec<(&'static str, f32)> {
    let item = BatchItem { meta, gt, seed: 0 };
    let l = model.losses(images, &[item]).unwrap();
    l.terms
        .iter()
        .map(|t| (t.name, t.value.clone().into_scalar()))
        .collect()
}

#[test]
fn fasterrcnn_proposals_detections_and_losses_are_torchvisions() {
    let fx = fixture("fasterrcnn.json");
    // the samplers' quotas above every count, as the script's: all positives and negatives train
    let (_, model, images, meta) = setup(
        "fasterrcnn_resnet50_fpn.json",
        &fx,
        &[
            "model.train_cfg.rpn.sampler.num=1000000",
            "model.train_cfg.rcnn.sampler.num=1000000",
        ],
    );
    let AnyDetector::TwoStage(m) = &model else {
        panic!("a Faster R-CNN is two-stage")
    };
    let feats = m.backbone.forward_features(images.clone());
    let pyramid = m.neck.forward(feats).unwrap();
    let sizes: Vec<[usize; 2]> = pyramid.iter().map(|p| [p.dims()[2], p.dims()[3]]).collect();
    let proposals = m
        .rpn_head
        .proposals(m.rpn_head.forward(&pyramid), &sizes, &[&meta], false)
        .unwrap();
    let position = assert_ranked(
        &proposals[0].boxes,
        &proposals[0].scores,
        &rows(&fx["proposals"]),
        "proposal",
    );
    let swapped = position.iter().enumerate().filter(|(i, j)| i != *j).count();
    eprintln!(
        "proposals: {} agree, {swapped} of them swapped with a tie",
        position.len()
    );
    let dets = model
        .predict(images.clone(), std::slice::from_ref(&meta))
        .unwrap();
    // torchvision's label is the COCO category id: ours + 1 (`class_ids.offset`)
    assert_detections(&dets[0], &fx, 1, "detection");
    let l = losses(&model, images, meta, gt(&fx, 1));
    assert_losses(&l, &fx["losses"], &TWO_STAGE_LOSSES);
}

#[test]
fn retinanet_detections_and_losses_are_torchvisions() {
    let fx = fixture("retinanet.json");
    let (_, model, images, meta) = setup("retinanet_resnet50_fpn.json", &fx, &[]);
    let dets = model
        .predict(images.clone(), std::slice::from_ref(&meta))
        .unwrap();
    // 91 classes as torchvision's: the label is the category id (`class_ids.offset` 0)
    assert_detections(&dets[0], &fx, 0, "detection");
    let l = losses(&model, images, meta, gt(&fx, 0));
    assert_losses(
        &l,
        &fx["losses"],
        &[("loss_cls", "classification"), ("loss_bbox", "bbox_regression")],
    );
}

/// Mask R-CNN at test time: the 100 detections as Faster R-CNN's, and the masks of the first few (the
/// fixture's `masks`, torchvision's `paste_masks_in_image` binarised `> 0.5`, uncompressed COCO RLE) against
/// ours pasted by `mask_head.paste: "torchvision"`: IoU >= 0.99 each. Pixels whose probability lies within
/// float rounding (~1e-5) of 0.5 may fall either side, hence not an exact equality.
#[test]
fn maskrcnn_detections_and_masks_are_torchvisions() {
    let fx = fixture("maskrcnn.json");
    // the samplers' quotas above every count, as the script's (for the losses below)
    let (_, model, images, meta) = setup(
        "maskrcnn_resnet50_fpn.json",
        &fx,
        &[
            "model.train_cfg.rpn.sampler.num=1000000",
            "model.train_cfg.rcnn.sampler.num=1000000",
        ],
    );
    let dets = model
        .predict(images.clone(), std::slice::from_ref(&meta))
        .unwrap();
    let position = assert_detections(&dets[0], &fx, 1, "detection");
    let masks = dets[0].masks.as_ref().expect("a Mask R-CNN gives masks");
    assert_eq!(masks.len(), dets[0].boxes.len());
    let (h, w) = (
        fx["height"].as_u64().unwrap() as u32,
        fx["width"].as_u64().unwrap() as u32,
    );
    let want = fx["masks"].as_array().unwrap();
    assert!(!want.is_empty());
    for (j, counts) in want.iter().enumerate() {
        let theirs = Rle {
            h,
            w,
            counts: counts
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap() as u32)
                .collect(),
        };
        assert_eq!(
            theirs.counts_sum(),
            u64::from(h) * u64::from(w),
            "mask {j}: RLE size"
        );
        let i = position
            .iter()
            .position(|&p| p == j)
            .unwrap_or_else(|| panic!("torchvision's detection {j} is not ours"));
        let ours = &masks[i];
        let iou = if ours.area() == 0 && theirs.area() == 0 {
            1.0
        } else {
            mask_iou(
                std::slice::from_ref(ours),
                std::slice::from_ref(&theirs),
                &[false],
            )[0]
        };
        eprintln!(
            "mask {j}: ours {} px, torchvision {} px, IoU {iou:.5}",
            ours.area(),
            theirs.area()
        );
        assert!(
            iou >= 0.99,
            "mask {j}: IoU {iou} (ours {} px, torchvision {} px)",
            ours.area(),
            theirs.area()
        );
    }
    // one batch's losses with the script's GT masks: torchvision's soft targets (`mask_head.targets`)
    let mut truth = gt(&fx, 1);
    truth.masks = Some(
        truth
            .boxes
            .iter()
            .map(|b| ellipse_mask(*b, h as usize, w as usize))
            .collect(),
    );
    let l = losses(&model, images, meta, truth);
    let names: Vec<_> = TWO_STAGE_LOSSES
        .into_iter()
        .chain([("loss_mask", "loss_mask")])
        .collect();
    assert_losses(&l, &fx["losses"], &names);
}

/// The script's GT mask of a box (`gt_masks`): the inscribed ellipse, in exact integers. Pixel (y, x) is
/// inside when `(2x + 1 - (x0 + x1))^2 (y1 - y0)^2 + (2y + 1 - (y0 + y1))^2 (x1 - x0)^2 <= (x1 - x0)^2
/// (y1 - y0)^2`, i.e. its centre lies in the ellipse of the box's centre and half-sides.
fn ellipse_mask(b: [f32; 4], h: usize, w: usize) -> RleMask {
    let [x0, y0, x1, y1] = b.map(|v| v as i64);
    let (rx2, ry2) = (x1 - x0, y1 - y0);
    let bitmap: Vec<bool> = (0..h as i64)
        .flat_map(|y| (0..w as i64).map(move |x| (y, x)))
        .map(|(y, x)| {
            let dx = 2 * x + 1 - (x0 + x1);
            let dy = 2 * y + 1 - (y0 + y1);
            dx * dx * ry2 * ry2 + dy * dy * rx2 * rx2 <= rx2 * rx2 * ry2 * ry2
        })
        .collect();
    RleMask::encode(&bitmap, [h, w])
}
