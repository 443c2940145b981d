//! Timings of the hot building blocks on CPU (Flex), run by `bench/detectors/bench_blocks.py`, which times
//! torchvision on the same workloads in the same script. Ignored in normal test runs (it takes seconds and is
//! meant for an optimised build); run it through the script, or directly:
//! `RAYON_NUM_THREADS=2 cargo test -p attndet-detectors --test bench_blocks --config
//! 'profile.dev.package.attndet-detectors.opt-level=3' -- --ignored --nocapture`.
//!
//! Inputs follow the formulas of the Python script (`bench_inputs` there), so both sides do the same work; the
//! output line `BENCH {json}` carries the timings and checksums.

mod common;

use std::time::Instant;

use attndet_detectors::assigners::{MaxIouAssignerConfig, NegIouThr};
use attndet_detectors::ops::{RoiAlignBackend, RoiAlignOptions, batched_nms};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use common::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = f(); // warm-up
    let mut t = Vec::new();
    for _ in 0..reps {
        let s = Instant::now();
        out = f();
        t.push(s.elapsed().as_secs_f64());
    }
    (median(t), out)
}

/// `n` boxes in a `width x height` image: corners from the LCG, sizes 8..`max_size`.
fn bench_boxes(rng: &mut Lcg, n: usize, width: f32, height: f32, max_size: f32) -> Vec<[f32; 4]> {
    let u = rng.uniform(4 * n);
    u.chunks(4)
        .map(|c| {
            let (w, h) = (8.0 + c[2] * (max_size - 8.0), 8.0 + c[3] * (max_size - 8.0));
            let (x1, y1) = (c[0] * (width - w), c[1] * (height - h));
            [x1, y1, x1 + w, y1 + h]
        })
        .collect()
}

#[test]
#[ignore = "benchmark: run through bench/detectors/bench_blocks.py"]
fn bench_blocks() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // ---- RoIAlign: 1000 RoIs x 256 ch x 7x7, sampling ratio 2, aligned, from 2x256x200x304 (stride 4)
    let (n, c, h, w) = (2usize, 256usize, 200usize, 304usize);
    let xv: Vec<f32> = (0..n * c * h * w)
        .map(|i| ((i % 10007) as f32 * 0.001).sin())
        .collect();
    let mut rng = Lcg::new(11);
    let boxes = bench_boxes(&mut rng, 1000, 1216.0, 800.0, 400.0);
    let rois = rois_alternating(&boxes);
    let o = RoiAlignOptions {
        output_size: [7, 7],
        spatial_scale: 0.25,
        sampling_ratio: 2,
        aligned: true,
    };
    let x = Tensor::<Cpu, 4>::from_data(TensorData::new(xv, [n, c, h, w]), &DEV);
    let r = Tensor::<Cpu, 2>::from_data(TensorData::new(rois, [1000, 5]), &DEV);
    let (fwd, y) = time(reps, || {
        <Cpu as RoiAlignBackend>::roi_align(
            x.clone().into_primitive().tensor(),
            r.clone().into_primitive().tensor(),
            o,
        )
    });
    let y = Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(y));
    let fwd_sum: f32 = y.clone().sum().into_scalar();
    let g = Tensor::<Cpu, 4>::ones(y.dims(), &DEV);
    let (bwd, gx) = time(reps, || {
        <Cpu as RoiAlignBackend>::roi_align_backward(
            [n, c, h, w],
            r.clone().into_primitive().tensor(),
            g.clone().into_primitive().tensor(),
            o,
        )
    });
    let bwd_sum: f32 = Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(gx))
        .sum()
        .into_scalar();

    // ---- batched NMS: 20,000 boxes over 80 classes
    let mut rng = Lcg::new(12);
    let nb = 20_000;
    let nms_boxes = bench_boxes(&mut rng, nb, 1333.0, 800.0, 200.0);
    let scores = rng.uniform(nb);
    let classes: Vec<i32> = rng.uniform(nb).into_iter().map(|u| (u * 80.0) as i32).collect();
    let bt = tensor2::<Cpu>(&nms_boxes, &DEV);
    let st = Tensor::<Cpu, 1>::from_floats(scores.as_slice(), &DEV);
    let ct = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(classes, [nb]), &DEV);
    let (nms, keep) = time(reps.max(20), || {
        batched_nms(bt.clone(), st.clone(), ct.clone(), 0.5).unwrap()
    });
    let keep = veci(keep);

    // ---- assignment: ~200k anchors (RetinaNet on 800x1216: 9 anchors over P3..P7) to 50 GT
    let mut rng = Lcg::new(13);
    let na = 200_000;
    let anchors = bench_boxes(&mut rng, na, 1216.0, 800.0, 300.0);
    let gts = bench_boxes(&mut rng, 50, 1216.0, 800.0, 300.0);
    let labels: Vec<i32> = (0..50).map(|i| i % 80).collect();
    let at = tensor2::<Cpu>(&anchors, &DEV);
    let gt = tensor2::<Cpu>(&gts, &DEV);
    let lt = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(labels, [50]), &DEV);
    let assigner = MaxIouAssignerConfig {
        pos_iou_thr: 0.5,
        neg_iou_thr: NegIouThr::Below(0.4),
        min_pos_iou: 0.0,
        gt_max_assign_all: true,
        ignore_iof_thr: -1.0,
        ignore_wrt_candidates: true,
        match_low_quality: true,
    }
    .init()
    .unwrap();
    let (assign, num_pos) = time(reps, || {
        let r = assigner
            .assign(at.clone(), gt.clone(), lt.clone(), None, None)
            .unwrap();
        // reading the count back forces the whole computation
        r.positive().int().sum().into_scalar().elem::<i64>()
    });

    println!(
        "BENCH {{\"threads\": {}, \"roi_align_fwd_s\": {fwd:.5}, \"roi_align_bwd_s\": {bwd:.5}, \"roi_align_fwd_sum\": {fwd_sum}, \
         \"roi_align_bwd_sum\": {bwd_sum}, \"nms_s\": {nms:.6}, \"nms_kept\": {}, \"nms_first\": {:?}, \"assign_s\": {assign:.5}, \
         \"assign_num_pos\": {num_pos}}}",
        rayon::current_num_threads(),
        keep.len(),
        &keep[..10.min(keep.len())],
    );
}
