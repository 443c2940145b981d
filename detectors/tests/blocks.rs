//! Building blocks against reference values from torchvision / mmdetection formulas
//! (`python3 detectors/scripts/make_fixtures.py`), plus empty-input cases.

mod common;

use attndet_backbones::FeatureSpec;
use attndet_detectors::anchors::{AnchorGeneratorConfig, anchor_inside_flags};
use attndet_detectors::assigners::{MaxIouAssignerConfig, NegIouThr};
use attndet_detectors::coders::DeltaXywhCoderConfig;
use attndet_detectors::necks::{ExtraConvs, FpnConfig};
use attndet_detectors::ops::{OverlapMode, batched_nms, batched_nms_host, pairwise_giou, pairwise_overlaps};
use attndet_detectors::structures::{BlocksError, Boxes, RleMask};
use burn::module::Param;
use burn::prelude::*;
use common::*;

// ------------------------------------------------------------------------------------------- structures
#[test]
fn boxes_area_clip_flip_scale_nonempty() {
    let b = Boxes::<Cpu>::from_rows(
        &[
            [1.0, 2.0, 5.0, 4.0],
            [-3.0, 8.0, 12.0, 20.0],
            [2.0, 2.0, 2.0, 9.0],
        ],
        &DEV,
    );
    // areas: 4*2=8, 15*12=180, 0*7=0
    assert_eq!(vecf(b.area()), vec![8.0, 180.0, 0.0]);
    assert_eq!(vecb(b.nonempty(0.0)), vec![true, true, false]);
    // clip into 10 (h) x 11 (w): x in [0, 11], y in [0, 10]
    assert_eq!(b.clone().clip([10, 11]).to_rows()[1], [0.0, 8.0, 11.0, 10.0]);
    // flip in a 20-wide image: x1' = 20 - x2, x2' = 20 - x1
    assert_eq!(b.clone().flip_horizontal(20).to_rows()[0], [15.0, 2.0, 19.0, 4.0]);
    assert_eq!(b.clone().flip_vertical(10).to_rows()[0], [1.0, 6.0, 5.0, 8.0]);
    assert_eq!(b.scale(2.0, 0.5).to_rows()[0], [2.0, 1.0, 10.0, 2.0]);
    assert!(matches!(
        Boxes::<Cpu>::new(Tensor::zeros([2, 3], &DEV)),
        Err(BlocksError::Shape { .. })
    ));
}

#[test]
fn boxes_empty() {
    let b = Boxes::<Cpu>::empty(&DEV);
    assert!(b.is_empty());
    assert_eq!(b.area().dims(), [0]);
    assert_eq!(b.clone().clip([5, 5]).len(), 0);
    assert_eq!(b.clone().flip_horizontal(5).len(), 0);
    assert_eq!(b.nonempty(0.0).dims(), [0]);
}

#[test]
fn rle_round_trip() {
    // 2x3 bitmap, row-major: [[0,1,1],[0,1,0]]; column-major sequence 0,0,1,1,1,0 -> runs [2,3,1]
    let bitmap = [false, true, true, false, true, false];
    let rle = RleMask::encode(&bitmap, [2, 3]);
    assert_eq!(rle.counts, vec![2, 3, 1]);
    assert_eq!(rle.area(), 3);
    assert_eq!(rle.decode(), bitmap.to_vec());
    let empty = RleMask::encode(&[], [0, 0]);
    assert_eq!(empty.area(), 0);
    assert!(empty.decode().is_empty());
}

// ------------------------------------------------------------------------------------------- overlaps
#[test]
fn overlaps_match_reference() {
    let f = fixture("overlaps");
    let mut rng = Lcg::new(1);
    let a = tensor2::<Cpu>(&rng.boxes(7, 50.0), &DEV);
    let b = tensor2::<Cpu>(&rng.boxes(5, 50.0), &DEV);
    let iou = pairwise_overlaps(a.clone(), b.clone(), OverlapMode::Iou).unwrap();
    assert_eq!(iou.dims(), [7, 5]);
    assert_close(&vecf(iou), &floats(&f["iou"]), 1e-6);
    assert_close(
        &vecf(pairwise_overlaps(a.clone(), b.clone(), OverlapMode::Iof).unwrap()),
        &floats(&f["iof"]),
        1e-6,
    );
    assert_close(&vecf(pairwise_giou(a, b).unwrap()), &floats(&f["giou"]), 1e-6);
}

#[test]
fn overlaps_empty_and_bad_shape() {
    let a = Tensor::<Cpu, 2>::zeros([0, 4], &DEV);
    let b = tensor2::<Cpu>(&[[0.0, 0.0, 1.0, 1.0]], &DEV);
    assert_eq!(
        pairwise_overlaps(a.clone(), b.clone(), OverlapMode::Iou)
            .unwrap()
            .dims(),
        [0, 1]
    );
    assert_eq!(pairwise_giou(b.clone(), a).unwrap().dims(), [1, 0]);
    let err = pairwise_overlaps(Tensor::<Cpu, 2>::zeros([3, 5], &DEV), b, OverlapMode::Iou).unwrap_err();
    assert!(err.to_string().contains("`a`"), "{err}");
}

// ------------------------------------------------------------------------------------------- NMS
fn nms_inputs(seed: u32, n: usize, ncls: usize) -> (Vec<[f32; 4]>, Vec<f32>, Vec<i64>) {
    let mut rng = Lcg::new(seed);
    let boxes = rng.boxes(n, 200.0);
    let scores = rng
        .uniform(n)
        .into_iter()
        .map(|u| (u * 16.0).floor() / 16.0)
        .collect();
    let classes = rng
        .uniform(n)
        .into_iter()
        .map(|u| (u * ncls as f32) as i64)
        .collect();
    (boxes, scores, classes)
}

#[test]
fn batched_nms_matches_torchvision_with_ties() {
    let f = fixture("nms");
    for (name, seed, n, ncls) in [("small", 2, 300, 7), ("large", 3, 4500, 80)] {
        let (b, s, c) = nms_inputs(seed, n, ncls);
        let want: Vec<usize> = ints(&f[name]).into_iter().map(|i| i as usize).collect();
        assert_eq!(batched_nms_host(&b, &s, &c, 0.5), want, "{name}");
    }
    // the device wrapper
    let (b, s, c) = nms_inputs(2, 300, 7);
    let keep = batched_nms(
        tensor2::<Cpu>(&b, &DEV),
        Tensor::from_floats(s.as_slice(), &DEV),
        Tensor::from_data(
            TensorData::new(c.iter().map(|&x| x as i32).collect::<Vec<_>>(), [300]),
            &DEV,
        ),
        0.5,
    )
    .unwrap();
    assert_eq!(veci(keep), ints(&f["small"]));
}

#[test]
fn batched_nms_empty_and_bad_shape() {
    let keep = batched_nms(
        Tensor::<Cpu, 2>::zeros([0, 4], &DEV),
        Tensor::zeros([0], &DEV),
        Tensor::zeros([0], &DEV),
        0.5,
    )
    .unwrap();
    assert_eq!(keep.dims(), [0]);
    let err = batched_nms(
        Tensor::<Cpu, 2>::zeros([2, 4], &DEV),
        Tensor::zeros([3], &DEV),
        Tensor::zeros([2], &DEV),
        0.5,
    );
    assert!(err.unwrap_err().to_string().contains("scores"));
}

// ------------------------------------------------------------------------------------------- anchors
#[test]
fn anchors_match_mmdetection_and_torchvision() {
    let f = fixture("anchors");
    let mut cfg = AnchorGeneratorConfig::retinanet();
    cfg.strides = vec![8, 16];
    let generator = cfg.init().unwrap();
    assert_eq!(generator.num_base_anchors(), vec![9, 9]);
    let sizes = [[3, 5], [2, 3]];
    let anchors = generator.grid_anchors::<Cpu>(&sizes, &DEV).unwrap();
    for l in 0..2 {
        assert_eq!(anchors[l].dims(), [sizes[l][0] * sizes[l][1] * 9, 4]);
        assert_close(&vecf(anchors[l].clone()), &floats(&f["retina"][l]), 1e-6);
    }
    let valid = generator.valid_flags::<Cpu>(&sizes, [20, 33], &DEV).unwrap();
    for l in 0..2 {
        let want: Vec<bool> = ints(&f["valid"][l]).into_iter().map(|v| v != 0).collect();
        assert_eq!(vecb(valid[l].clone()), want);
    }
    // explicit scales, centre offset 0.5, scale-minor order
    let rpn: AnchorGeneratorConfig = serde_json::from_str(
        r#"{"strides": [16], "ratios": [0.5, 1.0, 2.0], "scales": [4.0, 8.0], "center_offset": 0.5, "scale_major": false}"#,
    )
    .unwrap();
    let base: Vec<f32> = rpn
        .init()
        .unwrap()
        .base_anchors(0)
        .iter()
        .flatten()
        .copied()
        .collect();
    assert_close(&base, &floats(&f["rpn_base"]), 1e-6);
    // torchvision: sizes (32, 64) = base size 8 x scales (4, 8), rounded, on a 3x4 grid of stride 8
    let tv: AnchorGeneratorConfig = serde_json::from_str(
        r#"{"strides": [8], "ratios": [0.5, 1.0, 2.0], "scales": [4.0, 8.0], "round_base_anchors": true}"#,
    )
    .unwrap();
    let a = tv.init().unwrap().grid_anchors::<Cpu>(&[[3, 4]], &DEV).unwrap();
    assert_eq!(vecf(a[0].clone()), floats(&f["torchvision"]));
}

#[test]
fn anchors_empty_and_errors() {
    let generator = AnchorGeneratorConfig::retinanet().init().unwrap();
    let sizes = [[0, 0], [0, 4], [1, 1], [1, 1], [1, 1]];
    let a = generator.grid_anchors::<Cpu>(&sizes, &DEV).unwrap();
    assert_eq!(a[0].dims(), [0, 4]);
    assert_eq!(a[1].dims(), [0, 4]);
    assert_eq!(
        generator.valid_flags::<Cpu>(&sizes, [0, 0], &DEV).unwrap()[0].dims(),
        [0]
    );
    // a zero padded size: nothing is valid
    assert!(
        !vecb(generator.valid_flags::<Cpu>(&sizes, [0, 0], &DEV).unwrap()[2].clone())
            .iter()
            .any(|&v| v)
    );
    assert!(generator.grid_anchors::<Cpu>(&sizes[..2], &DEV).is_err());
    let bad: Result<AnchorGeneratorConfig, _> =
        serde_json::from_str(r#"{"strides": [8], "ratios": [1.0], "scales": [1.0], "typo": 1}"#);
    assert!(bad.unwrap_err().to_string().contains("typo"));
    let both: AnchorGeneratorConfig = serde_json::from_str(
        r#"{"strides": [8], "ratios": [1.0], "scales": [1.0], "octave_base_scale": 4, "scales_per_octave": 3}"#,
    )
    .unwrap();
    assert!(matches!(both.init(), Err(BlocksError::Config { .. })));
}

#[test]
fn anchor_inside_flags_with_border() {
    let anchors = tensor2::<Cpu>(
        &[
            [-1.0, 0.0, 5.0, 5.0],
            [0.0, 0.0, 10.0, 8.0],
            [2.0, 2.0, 11.0, 4.0],
        ],
        &DEV,
    );
    let valid = Tensor::<Cpu, 1, Int>::from_ints([1, 1, 0], &DEV).equal_elem(1);
    // image 8 high, 10 wide, border 0: x1 >= 0, y1 >= 0, x2 < 10, y2 < 8
    assert_eq!(
        vecb(anchor_inside_flags(anchors.clone(), valid.clone(), [8, 10], 0.0)),
        vec![false, false, false]
    );
    // border 1: x1 >= -1, x2 < 11, y2 < 9
    assert_eq!(
        vecb(anchor_inside_flags(anchors.clone(), valid.clone(), [8, 10], 1.0)),
        vec![true, true, false]
    );
    assert_eq!(
        vecb(anchor_inside_flags(anchors, valid, [8, 10], -1.0)),
        vec![true, true, false]
    );
}

// ------------------------------------------------------------------------------------------- coder
#[test]
fn delta_coder_matches_mmdetection() {
    let f = fixture("coder");
    let mut rng = Lcg::new(4);
    let p = tensor2::<Cpu>(&rng.boxes(6, 40.0), &DEV);
    let g = tensor2::<Cpu>(&rng.boxes(6, 40.0), &DEV);
    let deltas: Vec<f32> = rng.uniform(48).into_iter().map(|u| u * 6.0 - 3.0).collect();
    let deltas = Tensor::<Cpu, 2>::from_data(TensorData::new(deltas, [6, 8]), &DEV);
    let coder = DeltaXywhCoderConfig {
        target_means: [0.1, -0.1, 0.05, 0.0],
        target_stds: [0.1, 0.1, 0.2, 0.2],
        ..Default::default()
    }
    .init()
    .unwrap();
    assert_close(
        &vecf(coder.encode(p.clone(), g.clone()).unwrap()),
        &floats(&f["encode"]),
        2e-5,
    );
    assert_close(
        &vecf(coder.decode(p.clone(), deltas.clone(), Some([30, 35])).unwrap()),
        &floats(&f["decode"]),
        2e-5,
    );
    // round trip: decode(encode(g)) = g
    let back = coder
        .decode(p.clone(), coder.encode(p.clone(), g.clone()).unwrap(), None)
        .unwrap();
    assert_close(&vecf(back), &vecf(g), 1e-4);
    let plain = DeltaXywhCoderConfig {
        wh_ratio_clip: 0.1,
        ..Default::default()
    }
    .init()
    .unwrap();
    assert_close(
        &vecf(plain.decode(p.clone(), deltas.clone(), None).unwrap()),
        &floats(&f["decode_noclip"]),
        2e-5,
    );
    let ctr = DeltaXywhCoderConfig {
        add_ctr_clamp: true,
        ctr_clamp: 2.0,
        ..Default::default()
    }
    .init()
    .unwrap();
    assert_close(
        &vecf(ctr.decode(p, deltas, Some([30, 35])).unwrap()),
        &floats(&f["decode_ctr_clamp"]),
        2e-5,
    );
}

#[test]
fn delta_coder_empty_and_errors() {
    let coder = DeltaXywhCoderConfig::default().init().unwrap();
    let e = Tensor::<Cpu, 2>::zeros([0, 4], &DEV);
    assert_eq!(coder.encode(e.clone(), e.clone()).unwrap().dims(), [0, 4]);
    assert_eq!(
        coder
            .decode(e.clone(), Tensor::zeros([0, 8], &DEV), Some([4, 4]))
            .unwrap()
            .dims(),
        [0, 8]
    );
    assert!(
        coder
            .decode(
                tensor2::<Cpu>(&[[0.0, 0.0, 1.0, 1.0]], &DEV),
                Tensor::zeros([1, 3], &DEV),
                None
            )
            .is_err()
    );
    assert!(
        DeltaXywhCoderConfig {
            target_stds: [1.0, 0.0, 1.0, 1.0],
            ..Default::default()
        }
        .init()
        .is_err()
    );
}

// ------------------------------------------------------------------------------------------- assigner
fn assigner_inputs() -> (
    Tensor<Cpu, 2>,
    Tensor<Cpu, 2>,
    Tensor<Cpu, 1, Int>,
    Tensor<Cpu, 2>,
) {
    let mut rng = Lcg::new(5);
    let mut priors = rng.boxes(60, 60.0);
    let mut gts = rng.boxes(4, 60.0);
    gts.push(gts[1]);
    priors.push(gts[0]);
    priors.push(gts[0]);
    let ignore = rng.boxes(2, 60.0);
    (
        tensor2(&priors, &DEV),
        tensor2(&gts, &DEV),
        Tensor::from_ints([3, 1, 4, 1, 5], &DEV),
        tensor2(&ignore, &DEV),
    )
}

#[test]
fn max_iou_assigner_matches_mmdetection() {
    let f = fixture("assigner");
    let (priors, gts, labels, ignore) = assigner_inputs();
    let base = MaxIouAssignerConfig {
        pos_iou_thr: 0.5,
        neg_iou_thr: NegIouThr::Below(0.4),
        min_pos_iou: 0.0,
        gt_max_assign_all: true,
        ignore_iof_thr: -1.0,
        ignore_wrt_candidates: true,
        match_low_quality: true,
    };
    let cases = [
        ("retina", base.clone()),
        (
            "rpn",
            MaxIouAssignerConfig {
                pos_iou_thr: 0.7,
                neg_iou_thr: NegIouThr::Below(0.3),
                min_pos_iou: 0.3,
                ..base.clone()
            },
        ),
        (
            "range",
            MaxIouAssignerConfig {
                neg_iou_thr: NegIouThr::Range([0.1, 0.5]),
                match_low_quality: false,
                ..base.clone()
            },
        ),
        (
            "first_only",
            MaxIouAssignerConfig {
                min_pos_iou: 0.1,
                gt_max_assign_all: false,
                ..base.clone()
            },
        ),
        (
            "crowd",
            MaxIouAssignerConfig {
                ignore_iof_thr: 0.5,
                ..base.clone()
            },
        ),
        (
            "crowd_wrt_gt",
            MaxIouAssignerConfig {
                ignore_iof_thr: 0.2,
                ignore_wrt_candidates: false,
                ..base.clone()
            },
        ),
    ];
    for (name, cfg) in cases {
        let r = cfg
            .init()
            .unwrap()
            .assign(
                priors.clone(),
                gts.clone(),
                labels.clone(),
                Some(ignore.clone()),
                None,
            )
            .unwrap();
        assert_eq!(veci(r.gt_inds), ints(&f[name]["gt_inds"]), "{name}");
        assert_eq!(veci(r.labels), ints(&f[name]["labels"]), "{name}");
        assert_close(&vecf(r.max_overlaps), &floats(&f[name]["max_overlaps"]), 1e-6);
    }
    // the JSON form of the range threshold
    let cfg: MaxIouAssignerConfig = serde_json::from_str(
        r#"{"pos_iou_thr": 0.5, "neg_iou_thr": [0.1, 0.5], "match_low_quality": false}"#,
    )
    .unwrap();
    assert_eq!(cfg.neg_iou_thr, NegIouThr::Range([0.1, 0.5]));
}

#[test]
fn max_iou_assigner_empty_gt_and_invalid_anchors() {
    let f = fixture("assigner");
    let (priors, _, _, _) = assigner_inputs();
    let cfg = MaxIouAssignerConfig {
        pos_iou_thr: 0.5,
        neg_iou_thr: NegIouThr::Below(0.4),
        min_pos_iou: 0.0,
        gt_max_assign_all: true,
        ignore_iof_thr: -1.0,
        ignore_wrt_candidates: true,
        match_low_quality: true,
    };
    let a = cfg.init().unwrap();
    let r = a
        .assign(
            priors.clone(),
            Tensor::zeros([0, 4], &DEV),
            Tensor::zeros([0], &DEV),
            None,
            None,
        )
        .unwrap();
    assert_eq!(veci(r.gt_inds), ints(&f["empty_gt"]["gt_inds"]));
    assert_eq!(veci(r.labels), ints(&f["empty_gt"]["labels"]));
    // no boxes at all
    let r = a
        .assign(
            Tensor::<Cpu, 2>::zeros([0, 4], &DEV),
            tensor2(&[[0.0, 0.0, 4.0, 4.0]], &DEV),
            Tensor::from_ints([0], &DEV),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.gt_inds.dims(), [0]);
    // invalid anchors are ignored (-1), as if removed before assignment: the GT's best valid anchor wins
    let anchors = tensor2::<Cpu>(
        &[
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 9.0, 9.0],
            [50.0, 50.0, 60.0, 60.0],
        ],
        &DEV,
    );
    let valid = Tensor::<Cpu, 1, Int>::from_ints([0, 1, 1], &DEV).equal_elem(1);
    let r = a
        .assign(
            anchors,
            tensor2(&[[0.0, 0.0, 10.0, 10.0]], &DEV),
            Tensor::from_ints([7], &DEV),
            None,
            Some(valid),
        )
        .unwrap();
    // IoU(anchor 1, gt) = 81/100 -> positive; anchor 2 -> 0 -> negative
    assert_eq!(veci(r.gt_inds), vec![-1, 1, 0]);
    assert_eq!(veci(r.labels), vec![-1, 7, -1]);
}

// ------------------------------------------------------------------------------------------- FPN
fn det_weights(shape: &[usize], salt: f32) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n).map(|i| ((i as f32) * 0.37 + salt).sin() * 0.2).collect()
}

fn set_conv(conv: &mut burn::nn::conv::Conv2d<Cpu>, salt_w: f32, salt_b: f32) {
    let dims = conv.weight.dims();
    let w = Tensor::from_data(TensorData::new(det_weights(&dims, salt_w), dims), &DEV);
    conv.weight = Param::from_tensor(w);
    let c = dims[0];
    conv.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(det_weights(&[c], salt_b), [c]),
        &DEV,
    )));
}

#[test]
fn fpn_matches_mmdetection_and_torchvision() {
    let f = fixture("fpn");
    let chans = [3usize, 4, 6];
    let sizes = [[9usize, 11], [5, 6], [3, 3]];
    let specs: Vec<FeatureSpec> = chans
        .iter()
        .zip([4, 8, 16])
        .map(|(&c, s)| FeatureSpec::level(c, s))
        .collect();
    let feats: Vec<Tensor<Cpu, 4>> = (0..3)
        .map(|i| {
            let dims = [1, chans[i], sizes[i][0], sizes[i][1]];
            Tensor::from_data(TensorData::new(det_weights(&dims, 10.0 + i as f32), dims), &DEV)
        })
        .collect();
    let cases = [
        ("maxpool", 0, ExtraConvs::None, false, 4),
        ("on_input", 1, ExtraConvs::OnInput, true, 4),
        ("on_lateral", 0, ExtraConvs::OnLateral, false, 5),
        ("on_output", 1, ExtraConvs::OnOutput, true, 3),
    ];
    for (name, start, extra, relu, num_outs) in cases {
        let cfg = FpnConfig {
            out_channels: 5,
            num_outs,
            start_level: start,
            end_level: None,
            add_extra_convs: extra,
            relu_before_extra_convs: relu,
        };
        let mut fpn = cfg.init::<Cpu>(&specs, &DEV).unwrap();
        let used = 3 - start;
        for i in 0..used {
            set_conv(&mut fpn.lateral_convs[i], 1.0 + i as f32, 2.0 + i as f32);
            set_conv(&mut fpn.fpn_convs[i], 3.0 + i as f32, 4.0 + i as f32);
        }
        for i in used..fpn.fpn_convs.len() {
            set_conv(
                &mut fpn.fpn_convs[i],
                5.0 + (i - used) as f32,
                6.0 + (i - used) as f32,
            );
        }
        let outs = fpn.forward(feats.clone()).unwrap();
        assert_eq!(outs.len(), num_outs, "{name}");
        let specs_out = fpn.output_specs();
        assert_eq!(specs_out.len(), num_outs);
        for (l, o) in outs.into_iter().enumerate() {
            assert_eq!(specs_out[l].stride, 4 << (start + l), "{name}");
            assert_close(&vecf(o), &floats(&f[name][l]), 1e-5);
        }
    }
}

#[test]
fn fpn_errors_and_small_inputs() {
    let specs = vec![FeatureSpec::level(3, 8), FeatureSpec::level(4, 16)];
    let cfg = FpnConfig {
        out_channels: 2,
        num_outs: 1,
        start_level: 0,
        end_level: None,
        add_extra_convs: ExtraConvs::None,
        relu_before_extra_convs: false,
    };
    assert!(matches!(
        cfg.init::<Cpu>(&specs, &DEV),
        Err(BlocksError::Config { .. })
    ));
    assert!(
        FpnConfig {
            start_level: 2,
            num_outs: 3,
            ..cfg.clone()
        }
        .init::<Cpu>(&specs, &DEV)
        .is_err()
    );
    assert!(
        FpnConfig {
            num_outs: 2,
            ..cfg.clone()
        }
        .init::<Cpu>(&[], &DEV)
        .is_err()
    );
    let fpn = FpnConfig { num_outs: 3, ..cfg }
        .init::<Cpu>(&specs, &DEV)
        .unwrap();
    // wrong number of levels / channels
    assert!(fpn.forward(vec![Tensor::zeros([1, 3, 4, 4], &DEV)]).is_err());
    let err = fpn
        .forward(vec![
            Tensor::zeros([1, 3, 4, 4], &DEV),
            Tensor::zeros([1, 5, 2, 2], &DEV),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("features[1]"), "{err}");
    // an empty batch and 1x1 maps
    let outs = fpn
        .forward(vec![
            Tensor::zeros([0, 3, 2, 2], &DEV),
            Tensor::zeros([0, 4, 1, 1], &DEV),
        ])
        .unwrap();
    assert_eq!(
        outs.iter().map(|o| o.dims()).collect::<Vec<_>>(),
        vec![[0, 2, 2, 2], [0, 2, 1, 1], [0, 2, 1, 1]]
    );
}

#[test]
fn batched_assignment_equals_per_image() {
    use attndet_detectors::structures::Instances;
    let mut rng = Lcg::new(21);
    let anchors = tensor2::<Cpu>(&rng.boxes(80, 60.0), &DEV);
    let images: Vec<(Vec<[f32; 4]>, Vec<i32>)> = vec![
        (rng.boxes(4, 60.0), vec![3, 1, 4, 1]),
        (vec![], vec![]),
        (rng.boxes(2, 60.0), vec![7, 2]),
    ];
    let crowd: Vec<Tensor<Cpu, 2>> = vec![
        tensor2(&rng.boxes(2, 60.0), &DEV),
        Tensor::zeros([0, 4], &DEV),
        tensor2(&rng.boxes(1, 60.0), &DEV),
    ];
    let valid_host: Vec<bool> = rng.uniform(3 * 80).into_iter().map(|u| u > 0.2).collect();
    let valid = Tensor::<Cpu, 2, Bool>::from_data(TensorData::new(valid_host.clone(), [3, 80]), &DEV);
    let gts: Vec<Instances<Cpu>> = images
        .iter()
        .map(|(b, l)| {
            let boxes = Boxes::new(Tensor::from_data(
                TensorData::new(b.iter().flatten().copied().collect::<Vec<_>>(), [b.len(), 4]),
                &DEV,
            ))
            .unwrap();
            Instances::new(
                boxes,
                Tensor::from_data(TensorData::new(l.clone(), [l.len()]), &DEV),
            )
        })
        .collect();
    let base = MaxIouAssignerConfig {
        pos_iou_thr: 0.5,
        neg_iou_thr: NegIouThr::Below(0.4),
        min_pos_iou: 0.0,
        gt_max_assign_all: true,
        ignore_iof_thr: -1.0,
        ignore_wrt_candidates: true,
        match_low_quality: true,
    };
    for cfg in [
        base.clone(),
        MaxIouAssignerConfig {
            min_pos_iou: 0.2,
            gt_max_assign_all: false,
            ..base.clone()
        },
        MaxIouAssignerConfig {
            neg_iou_thr: NegIouThr::Range([0.1, 0.5]),
            match_low_quality: false,
            ..base.clone()
        },
        MaxIouAssignerConfig {
            ignore_iof_thr: 0.3,
            ..base.clone()
        },
    ] {
        let a = cfg.init().unwrap();
        let batch = a
            .assign_batch(anchors.clone(), &gts, Some(&crowd), Some(valid.clone()))
            .unwrap();
        assert_eq!(batch.gt_inds.dims(), [3, 80]);
        for (i, g) in gts.iter().enumerate() {
            let v = Tensor::<Cpu, 2, Bool>::from_data(
                TensorData::new(valid_host[i * 80..(i + 1) * 80].to_vec(), [1, 80]),
                &DEV,
            )
            .reshape([80]);
            let one = a
                .assign(
                    anchors.clone(),
                    g.boxes.tensor().clone(),
                    g.labels.clone(),
                    Some(crowd[i].clone()),
                    Some(v),
                )
                .unwrap();
            let row = |t: Tensor<Cpu, 2, Int>| veci(t.slice(s![i..i + 1, ..]));
            assert_eq!(row(batch.gt_inds.clone()), veci(one.gt_inds), "{cfg:?} image {i}");
            assert_eq!(row(batch.labels.clone()), veci(one.labels), "{cfg:?} image {i}");
            assert_close(
                &vecf(batch.max_overlaps.clone().slice(s![i..i + 1, ..])),
                &vecf(one.max_overlaps),
                1e-6,
            );
        }
    }
    // all images without GT, and no image at all
    let empty = vec![Instances::<Cpu>::empty(&DEV), Instances::empty(&DEV)];
    let r = base
        .init()
        .unwrap()
        .assign_batch(anchors.clone(), &empty, None, None)
        .unwrap();
    assert!(veci(r.gt_inds).iter().all(|&v| v == 0));
    let r = base
        .init()
        .unwrap()
        .assign_batch(anchors, &[], None, None)
        .unwrap();
    assert_eq!(r.gt_inds.dims(), [0, 80]);
}

#[test]
fn flat_anchors_and_batch_valid_flags() {
    use attndet_detectors::structures::ImageMeta;
    let f = fixture("anchors");
    let mut cfg = AnchorGeneratorConfig::retinanet();
    cfg.strides = vec![8, 16];
    let generator = cfg.init().unwrap();
    let sizes = [[3, 5], [2, 3]];
    let flat = generator.flat_anchors::<Cpu>(&sizes, &DEV).unwrap();
    assert_eq!(flat.dims(), [(15 + 6) * 9, 4]);
    let mut want = floats(&f["retina"][0]);
    want.extend(floats(&f["retina"][1]));
    assert_close(&vecf(flat), &want, 1e-6);
    let metas = [
        ImageMeta {
            ori_size: (66, 40),
            img_size: (33, 20),
            scale: (0.5, 0.5),
            pad_size: (33, 20),
            ..ImageMeta::unscaled(1, (66, 40))
        },
        ImageMeta::unscaled(2, (40, 24)),
    ];
    let v = generator.batch_valid_flags::<Cpu>(&sizes, &metas, &DEV).unwrap();
    assert_eq!(v.dims(), [2, 189]);
    let got = vecb(v);
    let mut first: Vec<bool> = ints(&f["valid"][0]).into_iter().map(|x| x != 0).collect();
    first.extend(ints(&f["valid"][1]).into_iter().map(|x| x != 0));
    assert_eq!(&got[..189], first.as_slice());
    // 24 x 40 covers every location of both levels (ceil(24/8)=3 >= 3, ceil(40/8)=5 >= 5, ...)
    assert!(got[189..].iter().all(|&x| x));
    assert_eq!(
        generator
            .batch_valid_flags::<Cpu>(&sizes, &[], &DEV)
            .unwrap()
            .dims(),
        [0, 189]
    );
}
