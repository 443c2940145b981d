//! RoIAlign against torchvision (`python3 detectors/scripts/make_fixtures.py`): forward, input gradient through
//! `Autodiff` (custom backward on Flex, composed backward of the generic formulation), finite differences, the
//! multi-level mapping, and empty inputs.

mod common;

use attndet_detectors::ops::{
    LevelMapping, RoiAlignOptions, RoiExtractorConfig, roi_align, roi_align_gather, roi_align_scatter,
};
use burn::backend::Autodiff;
use burn::prelude::*;
use common::*;

type Ad = Autodiff<Cpu>;

struct Inputs {
    x: Vec<f32>,
    rois: Vec<f32>,
    weights: Vec<f32>,
}

/// The inputs of `fixture_roi_align` in the script.
fn inputs() -> Inputs {
    let mut rng = Lcg::new(7);
    let x: Vec<f32> = rng
        .uniform(2 * 3 * 9 * 11)
        .into_iter()
        .map(|u| u * 2.0 - 1.0)
        .collect();
    let mut boxes = rng.boxes(5, 20.0);
    boxes[3] = [4.0, 4.0, 4.2, 4.1];
    let batch = [0.0, 1.0, 1.0, 0.0, 1.0];
    let rois = boxes
        .iter()
        .zip(batch)
        .flat_map(|(b, i)| [i, b[0], b[1], b[2], b[3]])
        .collect();
    let weights = (0..5 * 3 * 3 * 2)
        .map(|i| ((i as f32) * 0.37 + 9.0).sin() * 0.2)
        .collect();
    Inputs { x, rois, weights }
}

const CASES: [(&str, usize, bool); 3] = [
    ("aligned_sr2", 2, true),
    ("unaligned_adaptive", 0, false),
    ("aligned_adaptive", 0, true),
];

fn options(sampling_ratio: usize, aligned: bool) -> RoiAlignOptions {
    RoiAlignOptions {
        output_size: [3, 2],
        spatial_scale: 0.5,
        sampling_ratio,
        aligned,
    }
}

fn x_tensor<B: Backend<Device = burn::backend::flex::FlexDevice>>(v: Vec<f32>) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v, [2, 3, 9, 11]), &DEV)
}

fn rois_tensor<B: Backend<Device = burn::backend::flex::FlexDevice>>(v: &[f32]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len() / 5, 5]), &DEV)
}

#[test]
fn forward_and_gradient_match_torchvision() {
    let f = fixture("roi_align");
    let inp = inputs();
    for (name, sr, aligned) in CASES {
        let o = options(sr, aligned);
        // native Flex kernel with the custom backward
        let x = x_tensor::<Ad>(inp.x.clone()).require_grad();
        let y = roi_align(x.clone(), rois_tensor(&inp.rois), o).unwrap();
        assert_eq!(y.dims(), [5, 3, 3, 2]);
        assert_close(&vecf(y.clone()), &floats(&f[name]["out"]), 1e-5);
        let w = Tensor::<Ad, 4>::from_data(TensorData::new(inp.weights.clone(), [5, 3, 3, 2]), &DEV);
        let g = x.grad(&(y * w.clone()).sum().backward()).unwrap();
        assert_close(&vecf(g), &floats(&f[name]["grad"]), 1e-5);
        // the generic formulation (any backend), differentiated through select
        let x = x_tensor::<Ad>(inp.x.clone()).require_grad();
        let y = roi_align_gather(x.clone(), rois_tensor(&inp.rois), o);
        assert_close(&vecf(y.clone()), &floats(&f[name]["out"]), 1e-5);
        let g = x.grad(&(y * w).sum().backward()).unwrap();
        assert_close(&vecf(g), &floats(&f[name]["grad"]), 1e-5);
    }
}

/// RoIAlign's input gradient by the Flex kernel and by the generic backward (device scatter-adds, the default
/// of `RoiAlignBackend`), for `rois` `[K, 5]` and the output gradient `go` `[K, C, oh, ow]` on an input `shape`.
fn kernel_and_generic_backward(
    shape: [usize; 4],
    rois: &[f32],
    go: &[f32],
    o: RoiAlignOptions,
) -> (Vec<f32>, Vec<f32>) {
    use attndet_detectors::ops::RoiAlignBackend;
    use burn::tensor::TensorPrimitive;
    let k = rois.len() / 5;
    let go = || {
        let dims = [k, shape[1], o.output_size[0], o.output_size[1]];
        Tensor::<Cpu, 4>::from_data(TensorData::new(go.to_vec(), dims), &DEV)
    };
    let kernel = <Cpu as RoiAlignBackend>::roi_align_backward(
        shape,
        rois_tensor::<Cpu>(rois).into_primitive().tensor(),
        go().into_primitive().tensor(),
        o,
    );
    let kernel = vecf(Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(kernel)));
    let generic = vecf(roi_align_scatter(shape, rois_tensor::<Cpu>(rois), go(), o));
    (kernel, generic)
}

/// The generic backward (device scatter-adds, the default of `RoiAlignBackend`) equals the Flex kernel's.
#[test]
fn generic_backward_matches_kernel() {
    let inp = inputs();
    for (_, sr, aligned) in CASES {
        let (kernel, generic) =
            kernel_and_generic_backward([2, 3, 9, 11], &inp.rois, &inp.weights, options(sr, aligned));
        assert_close(&generic, &kernel, 1e-6);
    }
}

#[test]
fn finite_difference_gradient() {
    let inp = inputs();
    let o = options(0, true);
    let w = || Tensor::<Ad, 4>::from_data(TensorData::new(inp.weights.clone(), [5, 3, 3, 2]), &DEV);
    let loss = |v: Vec<f32>| -> f32 {
        (roi_align(x_tensor::<Ad>(v), rois_tensor(&inp.rois), o).unwrap() * w())
            .sum()
            .into_scalar()
    };
    let x = x_tensor::<Ad>(inp.x.clone()).require_grad();
    let g = vecf(
        x.grad(
            &(roi_align(x.clone(), rois_tensor(&inp.rois), o).unwrap() * w())
                .sum()
                .backward(),
        )
        .unwrap(),
    );
    // RoIAlign is linear in x: central differences are exact up to f32 rounding.
    for i in (0..inp.x.len()).step_by(7) {
        let (mut p, mut m) = (inp.x.clone(), inp.x.clone());
        p[i] += 0.05;
        m[i] -= 0.05;
        let num = (loss(p) - loss(m)) / 0.1;
        assert!(
            (num - g[i]).abs() < 2e-4,
            "x[{i}]: numeric {num}, analytic {}",
            g[i]
        );
    }
}

#[test]
fn level_mapping_matches_references() {
    let f = fixture("roi_align");
    let sizes = floats(&f["levels"]["sizes"]);
    let mm = RoiExtractorConfig {
        output_size: [7, 7],
        sampling_ratio: 0,
        aligned: true,
        featmap_strides: vec![4, 8, 16, 32],
        mapping: LevelMapping::Mmdet { finest_scale: 56.0 },
    }
    .init()
    .unwrap();
    let tv = RoiExtractorConfig {
        mapping: LevelMapping::Torchvision {
            canonical_scale: 224.0,
            canonical_level: 4.0,
        },
        ..mm.config().clone()
    }
    .init()
    .unwrap();
    let want_mm = ints(&f["levels"]["mmdet"]);
    let want_tv = ints(&f["levels"]["torchvision"]);
    for (i, &s) in sizes.iter().enumerate() {
        assert_eq!(mm.level_of(s, s * 0.7) as i64, want_mm[i], "mmdet, size {s}");
        assert_eq!(
            tv.level_of(s, s * 0.7) as i64,
            want_tv[i],
            "torchvision, size {s}"
        );
    }
}

#[test]
fn extractor_pools_each_roi_from_its_level() {
    let inp = inputs();
    // two levels: the same map at stride 2 and a half-size copy at stride 4
    let x = x_tensor::<Cpu>(inp.x.clone());
    let coarse = burn::tensor::module::avg_pool2d(x.clone(), [2, 2], [2, 2], [0, 0], true, false);
    let ex = RoiExtractorConfig {
        output_size: [3, 2],
        sampling_ratio: 2,
        aligned: true,
        featmap_strides: vec![2, 4],
        mapping: LevelMapping::Mmdet { finest_scale: 8.0 },
    }
    .init()
    .unwrap();
    let rois = rois_tensor::<Cpu>(&inp.rois);
    let out = ex.forward(&[x.clone(), coarse.clone()], rois.clone()).unwrap();
    assert_eq!(out.dims(), [5, 3, 3, 2]);
    let rows: Vec<f32> = inp.rois.clone();
    for (i, r) in rows.chunks(5).enumerate() {
        let level = ex.level_of(r[3] - r[1], r[4] - r[2]);
        let (map, scale) = if level == 0 {
            (x.clone(), 0.5)
        } else {
            (coarse.clone(), 0.25)
        };
        let o = RoiAlignOptions {
            output_size: [3, 2],
            spatial_scale: scale,
            sampling_ratio: 2,
            aligned: true,
        };
        let single = roi_align(map, rois_tensor::<Cpu>(r), o).unwrap();
        assert_close(&vecf(out.clone().slice(s![i..i + 1])), &vecf(single), 1e-6);
    }
}

#[test]
fn empty_inputs_and_errors() {
    let x = Tensor::<Cpu, 4>::ones([1, 4, 5, 5], &DEV);
    let o = options(2, true);
    let none = Tensor::<Cpu, 2>::zeros([0, 5], &DEV);
    assert_eq!(
        roi_align(x.clone(), none.clone(), o).unwrap().dims(),
        [0, 4, 3, 2]
    );
    assert_eq!(roi_align_gather(x.clone(), none.clone(), o).dims(), [0, 4, 3, 2]);
    // an empty feature map gives zeros
    let empty_map = Tensor::<Cpu, 4>::zeros([1, 4, 0, 0], &DEV);
    let r = rois_tensor::<Cpu>(&[0.0, 0.0, 0.0, 4.0, 4.0]);
    assert!(
        vecf(roi_align(empty_map, r.clone(), o).unwrap())
            .iter()
            .all(|&v| v == 0.0)
    );
    assert!(
        roi_align(x.clone(), Tensor::<Cpu, 2>::zeros([2, 4], &DEV), o)
            .unwrap_err()
            .to_string()
            .contains("rois")
    );
    let ex = RoiExtractorConfig {
        output_size: [3, 2],
        sampling_ratio: 0,
        aligned: true,
        featmap_strides: vec![4],
        mapping: LevelMapping::default(),
    }
    .init()
    .unwrap();
    assert_eq!(
        ex.forward(std::slice::from_ref(&x), none).unwrap().dims(),
        [0, 4, 3, 2]
    );
    assert!(ex.forward(&[x.clone(), x], r).is_err());
    let bad: Result<RoiExtractorConfig, _> = serde_json::from_str(
        r#"{"output_size": [7, 7], "featmap_strides": [4], "mapping": {"type": "mmdet", "finest": 56}}"#,
    );
    assert!(bad.is_err());
}

/// The generic backward at a two-stage detector's scale: 512 RoIs on a 16 x 16 map of 16 channels (a 64 x 64
/// image's P2), adaptive sampling, so many taps of different RoIs land on the same feature pixels.
#[test]
fn generic_backward_matches_kernel_at_detector_scale() {
    let mut rng = Lcg::new(11);
    let rois = rois_alternating(&rng.boxes(512, 64.0));
    let o = RoiAlignOptions {
        output_size: [7, 7],
        spatial_scale: 0.25,
        sampling_ratio: 0,
        aligned: true,
    };
    let go: Vec<f32> = rng.uniform(512 * 16 * 49).into_iter().map(|u| u - 0.5).collect();
    let (kernel, generic) = kernel_and_generic_backward([2, 16, 16, 16], &rois, &go, o);
    let worst = kernel
        .iter()
        .zip(&generic)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = kernel.iter().map(|a| a.abs()).fold(0f32, f32::max);
    eprintln!("max |generic - kernel| {worst:e} of {scale:e}");
    assert!(scale > 0.1, "a non-trivial gradient");
    assert!(worst <= 1e-5 * scale, "max |generic - kernel| {worst} of {scale}");
}
