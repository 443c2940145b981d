//! The torchvision options of the building blocks against values recorded from torchvision 0.29
//! (`AnchorGenerator(((32, 40, 50),), ((0.5, 1.0, 2.0),))` on an 800x1216 batch with a 13x19 level) or derived
//! by hand, plus empty inputs.

mod common;

use attndet_detectors::anchors::AnchorGeneratorConfig;
use attndet_detectors::coders::DeltaXywhCoderConfig;
use burn::prelude::*;
use common::*;

fn retina_level0(strides_from_batch: bool) -> AnchorGeneratorConfig {
    AnchorGeneratorConfig {
        strides: vec![64],
        ratios: vec![0.5, 1.0, 2.0],
        scales: None,
        octave_base_scale: None,
        scales_per_octave: None,
        base_sizes: None,
        scale_major: true,
        center_offset: 0.0,
        round_base_anchors: true,
        sizes: Some(vec![vec![32.0, 40.0, 50.0]]),
        strides_from_batch,
    }
}

#[test]
fn per_level_sizes_give_torchvisions_rounded_cell_anchors() {
    let g = retina_level0(false).init().unwrap();
    // torchvision's cell_anchors[0]: ratio-major, w = size / sqrt(r), h = size * sqrt(r), halves rounded
    let want: [[f32; 4]; 9] = [
        [-23.0, -11.0, 23.0, 11.0],
        [-28.0, -14.0, 28.0, 14.0],
        [-35.0, -18.0, 35.0, 18.0],
        [-16.0, -16.0, 16.0, 16.0],
        [-20.0, -20.0, 20.0, 20.0],
        [-25.0, -25.0, 25.0, 25.0],
        [-11.0, -23.0, 11.0, 23.0],
        [-14.0, -28.0, 14.0, 28.0],
        [-18.0, -35.0, 18.0, 35.0],
    ];
    assert_eq!(g.base_anchors(0), &want);
    // sizes exclude the other ways of giving scales
    let mut bad = retina_level0(false);
    bad.scales = Some(vec![8.0]);
    assert!(bad.init().unwrap_err().to_string().contains("sizes"));
    let mut bad = retina_level0(false);
    bad.sizes = Some(vec![vec![32.0], vec![64.0]]);
    assert!(bad.init().unwrap_err().to_string().contains("sizes"));
}

#[test]
fn strides_from_batch_shift_by_batch_size_over_feature_size() {
    // 800 // 13 = 61 rows, 1216 // 19 = 64 columns: torchvision's anchor 9 * 20 (y 1, x 1) is [41, 50, 87, 72]
    let g = retina_level0(true).init().unwrap();
    let a = g
        .grid_anchors_in::<Cpu>(&[[13, 19]], Some([800, 1216]), &DEV)
        .unwrap();
    let rows = vecf(a[0].clone());
    assert_eq!(&rows[9 * 20 * 4..9 * 20 * 4 + 4], &[41.0, 50.0, 87.0, 72.0]);
    assert_eq!(&rows[..4], &[-23.0, -11.0, 23.0, 11.0]);
    // the nominal stride without the option, or without a batch size
    for a in [
        retina_level0(false)
            .init()
            .unwrap()
            .grid_anchors_in::<Cpu>(&[[13, 19]], Some([800, 1216]), &DEV),
        g.grid_anchors::<Cpu>(&[[13, 19]], &DEV),
    ] {
        let rows = vecf(a.unwrap()[0].clone());
        assert_eq!(&rows[9 * 20 * 4..9 * 20 * 4 + 4], &[41.0, 53.0, 87.0, 75.0]);
    }
    // an empty level
    let a = g
        .grid_anchors_in::<Cpu>(&[[0, 19]], Some([800, 1216]), &DEV)
        .unwrap();
    assert_eq!(a[0].dims(), [0, 4]);
}

#[test]
fn one_sided_clamp_leaves_shrinking_deltas_alone() {
    let boxes = Tensor::<Cpu, 2>::from_floats([[0.0, 0.0, 100.0, 100.0]], &DEV);
    let deltas = Tensor::<Cpu, 2>::from_floats([[0.0, 0.0, -6.0, 5.0]], &DEV);
    let decode = |above_only| {
        let coder = DeltaXywhCoderConfig {
            clamp_wh_above_only: above_only,
            ..Default::default()
        }
        .init()
        .unwrap();
        vecf(coder.decode(boxes.clone(), deltas.clone(), None).unwrap())
    };
    // clamp bound ln(1000 / 16) = 4.1352: dh 5 -> 4.1352 either way, h = 100 e^4.1352 = 6250
    // torchvision: dw -6 stays, w = 100 e^-6 = 0.24788; mmdetection: -4.1352, w = 1.6
    let tv = decode(true);
    assert!((tv[2] - tv[0] - 0.247_875).abs() < 1e-4, "{tv:?}");
    assert!((tv[3] - tv[1] - 6250.0).abs() < 0.1, "{tv:?}");
    let mm = decode(false);
    assert!((mm[2] - mm[0] - 1.6).abs() < 1e-4, "{mm:?}");
    assert!((mm[3] - mm[1] - 6250.0).abs() < 0.1, "{mm:?}");
}

#[test]
fn frozen_batch_norm_fixes_eps_and_affine() {
    use attndet_backbones::AnyBackbone;
    use attndet_backbones::resnet::block::Block;
    use attndet_detectors::config::BackboneConfig;
    use attndet_detectors::models::build_backbone;
    type A = burn::backend::Autodiff<Cpu>;
    let mut cfg = BackboneConfig {
        name: "resnet18".into(),
        frozen_stages: -1,
        norm_eval: true,
        init_checkpoint: None,
        norm_eps: Some(0.0),
        norm_requires_grad: false,
    };
    let AnyBackbone::ResNet(r) = build_backbone::<A>(&cfg, &DEV).unwrap() else {
        panic!("a ResNet")
    };
    let Block::Basic(b) = &r.layer4[0] else {
        panic!("ResNet-18 blocks are basic")
    };
    let bn = &b.downsample.as_ref().unwrap().bn;
    assert_eq!((r.bn1.epsilon, bn.epsilon), (0.0, 0.0));
    assert!(!r.bn1.gamma.is_require_grad() && !bn.beta.is_require_grad());
    // the conv weights still train
    assert!(b.conv1.weight.is_require_grad());
    // the defaults: eps 1e-5, affine trained
    cfg.norm_eps = None;
    cfg.norm_requires_grad = true;
    let AnyBackbone::ResNet(r) = build_backbone::<A>(&cfg, &DEV).unwrap() else {
        panic!("a ResNet")
    };
    assert_eq!(r.bn1.epsilon, 1e-5);
    assert!(r.bn1.gamma.is_require_grad());
    // not offered for other families
    cfg.name = "mobilenet_v2".into();
    cfg.norm_eps = Some(0.0);
    let err = build_backbone::<A>(&cfg, &DEV).unwrap_err().to_string();
    assert!(err.contains("model.backbone.norm_eps"), "{err}");
}
