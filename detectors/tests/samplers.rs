//! RandomSampler: budget, positive fraction, negative cap, GT as proposals, empty inputs.

mod common;

use attndet_detectors::assigners::{MaxIouAssignerConfig, NegIouThr};
use attndet_detectors::samplers::RandomSamplerConfig;
use burn::prelude::*;
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn assigner() -> attndet_detectors::assigners::MaxIouAssigner {
    MaxIouAssignerConfig {
        pos_iou_thr: 0.5,
        neg_iou_thr: NegIouThr::Below(0.5),
        min_pos_iou: 0.5,
        gt_max_assign_all: true,
        ignore_iof_thr: -1.0,
        ignore_wrt_candidates: true,
        match_low_quality: false,
    }
    .init()
    .unwrap()
}

/// 40 proposals: 10 copies of each of two GT boxes shifted slightly (positives), 20 far away (negatives).
fn scene() -> (Vec<[f32; 4]>, Vec<[f32; 4]>) {
    let gts = vec![[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 60.0]];
    let mut props = Vec::new();
    for i in 0..10 {
        let d = i as f32 * 0.1;
        props.push([d, d, 10.0 + d, 10.0 + d]);
        props.push([50.0 + d, 50.0, 70.0 + d, 60.0]);
    }
    for i in 0..20 {
        let x = 100.0 + 5.0 * i as f32;
        props.push([x, 0.0, x + 4.0, 4.0]);
    }
    (gts, props)
}

#[test]
fn budget_fraction_and_gt_proposals() {
    let (gts, props) = scene();
    let a = assigner()
        .assign(
            tensor2::<Cpu>(&props, &DEV),
            tensor2(&gts, &DEV),
            Tensor::from_ints([4, 9], &DEV),
            None,
            None,
        )
        .unwrap();
    let sampler = RandomSamplerConfig {
        num: 16,
        pos_fraction: 0.25,
        neg_pos_ub: -1.0,
        add_gt_as_proposals: true,
    }
    .init()
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let r = sampler
        .sample(
            &a,
            tensor2(&props, &DEV),
            tensor2(&gts, &DEV),
            Tensor::from_ints([4, 9], &DEV),
            &mut rng,
        )
        .unwrap();
    // 2 GT + 20 positives available, 16 * 0.25 = 4 kept; 12 negatives of 20
    let pos = veci(r.pos_inds.clone());
    let neg = veci(r.neg_inds.clone());
    assert_eq!(pos.len(), 4);
    assert_eq!(neg.len(), 12);
    assert!(pos.windows(2).all(|w| w[0] < w[1]) && neg.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(r.priors.dims(), [42, 4]);
    // candidates 0, 1 are the GT boxes themselves; proposals follow, even ones match GT 0, odd ones GT 1
    let gt_of = veci(r.pos_gt_inds.clone());
    let labels = veci(r.pos_gt_labels.clone());
    let is_gt = vecb(r.pos_is_gt.clone());
    for (k, &i) in pos.iter().enumerate() {
        let expect_gt = if i < 2 {
            i
        } else if i < 22 {
            (i - 2) % 2
        } else {
            panic!("negative sampled as positive")
        };
        assert_eq!(gt_of[k], expect_gt);
        assert_eq!(labels[k], [4, 9][expect_gt as usize]);
        assert_eq!(is_gt[k], i < 2);
    }
    assert!(neg.iter().all(|&i| i >= 22));
    // the positive boxes are the priors at those indices
    assert_eq!(r.pos_priors().dims(), [4, 4]);
}

#[test]
fn negative_cap_and_all_positives_when_few() {
    let (gts, props) = scene();
    let a = assigner()
        .assign(
            tensor2::<Cpu>(&props, &DEV),
            tensor2(&gts, &DEV),
            Tensor::from_ints([4, 9], &DEV),
            None,
            None,
        )
        .unwrap();
    let sampler = RandomSamplerConfig {
        num: 512,
        pos_fraction: 0.5,
        neg_pos_ub: 0.5,
        add_gt_as_proposals: false,
    }
    .init()
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let r = sampler
        .sample(
            &a,
            tensor2(&props, &DEV),
            tensor2(&gts, &DEV),
            Tensor::from_ints([4, 9], &DEV),
            &mut rng,
        )
        .unwrap();
    // all 20 positives fit the budget (256); negatives capped at 0.5 * 20 = 10
    assert_eq!(veci(r.pos_inds.clone()), (0..20).collect::<Vec<i64>>());
    assert_eq!(veci(r.neg_inds).len(), 10);
    assert!(!vecb(r.pos_is_gt).iter().any(|&g| g));
}

#[test]
fn empty_gt_and_empty_priors() {
    let (_, props) = scene();
    let none = Tensor::<Cpu, 2>::zeros([0, 4], &DEV);
    let a = assigner()
        .assign(
            tensor2::<Cpu>(&props, &DEV),
            none.clone(),
            Tensor::zeros([0], &DEV),
            None,
            None,
        )
        .unwrap();
    let sampler = RandomSamplerConfig {
        num: 8,
        pos_fraction: 0.25,
        neg_pos_ub: -1.0,
        add_gt_as_proposals: true,
    }
    .init()
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let r = sampler
        .sample(
            &a,
            tensor2(&props, &DEV),
            none.clone(),
            Tensor::zeros([0], &DEV),
            &mut rng,
        )
        .unwrap();
    assert_eq!(r.pos_inds.dims(), [0]);
    assert_eq!(r.pos_gt_labels.dims(), [0]);
    assert_eq!(veci(r.neg_inds).len(), 8); // nothing positive: the whole budget goes to negatives
    assert_eq!(r.priors.dims(), [40, 4]); // no GT to add
    let a = assigner()
        .assign(none.clone(), none.clone(), Tensor::zeros([0], &DEV), None, None)
        .unwrap();
    let r = sampler
        .sample(&a, none.clone(), none.clone(), Tensor::zeros([0], &DEV), &mut rng)
        .unwrap();
    assert_eq!((r.pos_inds.dims(), r.neg_inds.dims()), ([0], [0]));
    // mismatched assignment
    assert!(
        sampler
            .sample(
                &a,
                tensor2(&props, &DEV),
                none.clone(),
                Tensor::zeros([0], &DEV),
                &mut rng
            )
            .is_err()
    );
    assert!(
        RandomSamplerConfig {
            num: 8,
            pos_fraction: 1.5,
            neg_pos_ub: -1.0,
            add_gt_as_proposals: true
        }
        .init()
        .is_err()
    );
}
