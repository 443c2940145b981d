//! Where the CPU time of Faster R-CNN R50-FPN goes (`configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json`,
//! random weights, random images):
//!
//! ```sh
//! cargo run --release -p attndet-detectors --example faster_rcnn_breakdown   # [ITERS]
//! ```
//!
//! Inference on one 800x1216 image, part by part in the order `TwoStage::predict` runs them: backbone + FPN,
//! the RPN's convs, proposals (host decoding, top-k and NMS), RoIAlign of the proposals, the fc head, and
//! post-processing (softmax, decoding, per-class NMS). Training on 2 x 512x512: the whole `losses` forward and
//! its backward, then the second stage's pieces alone at the same sizes (assignment + sampling of 1000
//! proposals per image, RoIAlign forward + backward of the 1024 sampled RoIs, the fc head forward + backward).
//! Medians of ITERS runs (default 3) after one warm-up; `RAYON_NUM_THREADS` / the backend's threads as set.

use std::time::Instant;

use attndet_backbones::Backbone;
use attndet_detectors::config::{ExperimentConfig, RoiHeadConfig, load_typed};
use attndet_detectors::data::BatchItem;
use attndet_detectors::heads::dense::rows_tensor;
use attndet_detectors::models::{AnyDetector, Detector};
use attndet_detectors::roi_heads::AnyRoiHead;
use attndet_detectors::roi_heads::bbox_head::rois_tensor;
use attndet_detectors::structures::{GroundTruth, ImageMeta};
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use rand::SeedableRng;

type I = Flex;
type A = Autodiff<Flex>;

fn sync<Bk: Backend, const D: usize>(t: &Tensor<Bk, D>) {
    // one element back to the host: every queued op before it has run
    let _ = t.clone().flatten::<1>(0, D - 1).slice(s![0..1]).into_data();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn main() {
    let iters: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (cfg, _): (ExperimentConfig, _) = load_typed(
        &root.join("configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json"),
        &[],
    )
    .unwrap();
    let attndet_detectors::config::ModelConfig::FasterRcnn(two) = &cfg.model else {
        panic!("a Faster R-CNN config")
    };
    let RoiHeadConfig::Standard(roi_cfg) = &two.roi_head else {
        panic!("a standard RoI head")
    };
    let extractor = roi_cfg.bbox_roi_extractor.init().unwrap();
    let device = Default::default();

    // ---------------------------------------------------------------- inference, 1 x 800 x 1216
    let model = AnyDetector::<I>::from_config(&cfg.model, &device).unwrap();
    let AnyDetector::TwoStage(m) = &model else {
        panic!("two-stage")
    };
    let AnyRoiHead::Standard(roi) = &m.roi_head else {
        panic!("a standard RoI head")
    };
    let meta = ImageMeta::unscaled(1, (1216, 800));
    let image = Tensor::<I, 4>::random([1, 3, 800, 1216], Distribution::Normal(0.0, 1.0), &device);
    let names = [
        "backbone + FPN",
        "RPN convs",
        "proposals (decode, top-k, NMS)",
        "RoIAlign",
        "fc head",
        "post-processing (NMS)",
        "total predict",
    ];
    let mut parts: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for it in 0..=iters {
        let (pyramid, t_feat) = timed(|| {
            let p = m
                .neck
                .forward(m.backbone.forward_features(image.clone()))
                .unwrap();
            p.iter().for_each(sync);
            p
        });
        let sizes: Vec<[usize; 2]> = pyramid.iter().map(|p| [p.dims()[2], p.dims()[3]]).collect();
        let (outs, t_rpn) = timed(|| {
            let o = m.rpn_head.forward(&pyramid);
            o.iter().for_each(|(c, r)| {
                sync(c);
                sync(r)
            });
            o
        });
        let (props, t_prop) = timed(|| m.rpn_head.proposals(outs, &sizes, &[&meta], false).unwrap());
        let boxes = rows_tensor::<I>(&props[0].boxes, &device);
        let rois = rois_tensor(std::slice::from_ref(&boxes), &device);
        let (pooled, t_align) = timed(|| {
            let p = extractor.forward(&pyramid[..4], rois).unwrap();
            sync(&p);
            p
        });
        let ((logits, deltas), t_fc) = timed(|| {
            let o = roi.bbox_head.forward(pooled);
            sync(&o.0);
            sync(&o.1);
            o
        });
        let (_, t_post) = timed(|| {
            let (probs, dec) = roi
                .bbox_head
                .decode(boxes, logits, deltas, meta.img_hw())
                .unwrap();
            let host = |t: TensorData| t.convert::<f32>().to_vec::<f32>().unwrap();
            let r = props[0].boxes.len();
            roi.bbox_head.post_process(
                &host(probs.into_data()),
                &host(dec.into_data()),
                r,
                &two.test_cfg.rcnn,
                &meta,
            )
        });
        let (_, t_total) = timed(|| model.predict(image.clone(), std::slice::from_ref(&meta)).unwrap());
        if it > 0 {
            for (p, t) in parts
                .iter_mut()
                .zip([t_feat, t_rpn, t_prop, t_align, t_fc, t_post, t_total])
            {
                p.push(t);
            }
        }
    }
    println!("inference 1 x 800x1216 (median of {iters}):");
    for (n, p) in names.iter().zip(&parts) {
        println!("  {n:<34} {:>8.3} s", median(p.clone()));
    }

    // ---------------------------------------------------------------- training, 2 x 512 x 512
    let model = AnyDetector::<A>::from_config(&cfg.model, &device).unwrap();
    let images = Tensor::<A, 4>::random([2, 3, 512, 512], Distribution::Normal(0.0, 1.0), &device);
    let item = |seed: u64| BatchItem {
        meta: ImageMeta::unscaled(seed, (512, 512)),
        gt: GroundTruth {
            boxes: vec![
                [40.0, 50.0, 200.0, 230.0],
                [260.0, 80.0, 480.0, 300.0],
                [100.0, 320.0, 220.0, 470.0],
                [300.0, 350.0, 360.0, 420.0],
            ],
            labels: vec![0, 5, 17, 42],
            ..Default::default()
        },
        seed,
    };
    let items = [item(1), item(2)];
    let AnyDetector::TwoStage(ma) = &model else {
        panic!("two-stage")
    };
    let AnyRoiHead::Standard(roi_a) = &ma.roi_head else {
        panic!("a standard RoI head")
    };
    let assigner = two.train_cfg.rcnn.assigner.init().unwrap();
    let sampler = two.train_cfg.rcnn.sampler.init().unwrap();
    let names = [
        "losses forward (whole)",
        "backward (whole)",
        "  RoI assign + sample (2 x 1000)",
        "  RoIAlign fwd + bwd (1024 RoIs)",
        "  fc head fwd + bwd (1024 RoIs)",
    ];
    let mut parts: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for it in 0..=iters {
        let (losses, t_fwd) = timed(|| {
            let l = model.losses(images.clone(), &items).unwrap();
            let total = l.total();
            sync(&total);
            total
        });
        let (_, t_bwd) = timed(|| losses.backward());
        // the second stage's pieces alone: 1000 proposals per image around the ground truth
        let pyramid = ma
            .neck
            .forward(ma.backbone.forward_features(images.clone()))
            .unwrap();
        let props: Vec<[f32; 4]> = (0..1000)
            .map(|i| {
                let (x, y) = ((i * 37 % 400) as f32, (i * 53 % 400) as f32);
                let s = 16.0 + (i % 13) as f32 * 12.0;
                [x, y, (x + s).min(512.0), (y + s).min(512.0)]
            })
            .collect();
        let (sampled, t_sample) = timed(|| {
            items
                .iter()
                .map(|it| {
                    let gt = rows_tensor::<A>(&it.gt.boxes, &device);
                    let labels = Tensor::<A, 1, Int>::from_data(
                        TensorData::new(it.gt.labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [4]),
                        &device,
                    );
                    let priors = rows_tensor::<A>(&props, &device);
                    let a = assigner
                        .assign(priors.clone(), gt.clone(), labels.clone(), None, None)
                        .unwrap();
                    let s = sampler.sample(&a, priors, gt, labels, &mut rng).unwrap();
                    let b = Tensor::cat(vec![s.pos_priors(), s.neg_priors()], 0);
                    sync(&b);
                    b
                })
                .collect::<Vec<_>>()
        });
        let rois = rois_tensor(&sampled, &device);
        let levels: Vec<Tensor<A, 4>> = pyramid[..4]
            .iter()
            .map(|p| p.clone().detach().require_grad())
            .collect();
        let (pooled, t_align) = timed(|| {
            let p = extractor.forward(&levels, rois).unwrap();
            let _ = p.clone().sum().backward();
            p
        });
        let (_, t_fc) = timed(|| {
            let (l, d) = roi_a.bbox_head.forward(pooled.detach());
            let _ = (l.sum() + d.sum()).backward();
        });
        if it > 0 {
            for (p, t) in parts.iter_mut().zip([t_fwd, t_bwd, t_sample, t_align, t_fc]) {
                p.push(t);
            }
        }
    }
    println!("training 2 x 512x512 (median of {iters}):");
    for (n, p) in names.iter().zip(&parts) {
        println!("  {n:<34} {:>8.3} s", median(p.clone()));
    }
}
