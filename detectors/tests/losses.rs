//! Losses against mmdetection's formulas (`python3 detectors/scripts/make_fixtures.py`), the empty-target
//! convention, and finite-difference gradient checks.

mod common;

use attndet_detectors::losses::{
    BinaryCrossEntropyLossConfig, CrossEntropyLossConfig, FocalLossConfig, GiouLossConfig, L1LossConfig,
    Reduction, SmoothL1LossConfig, mask_cross_entropy,
};
use burn::backend::Autodiff;
use burn::prelude::*;
use common::*;

type Ad = Autodiff<Cpu>;

fn mat<B: Backend<Device = burn::backend::flex::FlexDevice>>(v: Vec<f32>, dims: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v, dims), &DEV)
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_scalar().elem::<f32>()
}

/// Central differences of `f` at `x0` (f64 accumulation of an f32 function, step `eps`).
fn numeric_grad(x0: &[f32], eps: f32, f: impl Fn(Vec<f32>) -> f32) -> Vec<f32> {
    (0..x0.len())
        .map(|i| {
            let mut p = x0.to_vec();
            p[i] += eps;
            let mut m = x0.to_vec();
            m[i] -= eps;
            (f(p) - f(m)) / (2.0 * eps)
        })
        .collect()
}

struct LossInputs {
    logits: Vec<f32>,
    labels: [i32; 6],
    weight: [f32; 6],
    pred: Vec<f32>,
    target: Vec<f32>,
    box_weight: Vec<f32>,
    ce_logits: Vec<f32>,
    bce_logits: Vec<f32>,
    bce_targets: Vec<f32>,
    mask_logits: Vec<f32>,
    mask_targets: Vec<f32>,
    giou_pred: Vec<[f32; 4]>,
    giou_target: Vec<[f32; 4]>,
}

/// The inputs of `fixture_losses` in the script, drawn in the same order.
fn inputs() -> LossInputs {
    let mut rng = Lcg::new(6);
    let logits = rng.uniform(24).into_iter().map(|u| u * 8.0 - 4.0).collect();
    let pred = rng.uniform(24).into_iter().map(|u| u * 4.0 - 2.0).collect();
    let target = rng.uniform(24).into_iter().map(|u| u * 4.0 - 2.0).collect();
    let box_weight = rng
        .uniform(24)
        .into_iter()
        .map(|u| if u > 0.3 { 1.0 } else { 0.0 })
        .collect();
    let ce_logits = rng.uniform(30).into_iter().map(|u| u * 6.0 - 3.0).collect();
    let bce_logits = rng.uniform(18).into_iter().map(|u| u * 6.0 - 3.0).collect();
    let bce_targets = rng
        .uniform(18)
        .into_iter()
        .map(|u| if u > 0.5 { 1.0 } else { 0.0 })
        .collect();
    let mask_logits = rng.uniform(96).into_iter().map(|u| u * 6.0 - 3.0).collect();
    let mask_targets = rng
        .uniform(48)
        .into_iter()
        .map(|u| if u > 0.5 { 1.0 } else { 0.0 })
        .collect();
    let giou_pred = rng.boxes(6, 30.0);
    let giou_target = rng.boxes(6, 30.0);
    LossInputs {
        logits,
        labels: [0, 3, 4, 2, 4, 1],
        weight: [1.0, 1.0, 0.0, 1.0, 1.0, 0.5],
        pred,
        target,
        box_weight,
        ce_logits,
        bce_logits,
        bce_targets,
        mask_logits,
        mask_targets,
        giou_pred,
        giou_target,
    }
}

#[test]
fn focal_loss_value_and_gradient() {
    let f = fixture("losses");
    let inp = inputs();
    let loss = FocalLossConfig::default().init().unwrap();
    let run = |logits: Tensor<Ad, 2>| {
        loss.forward(
            logits,
            Tensor::from_ints(inp.labels, &DEV),
            Some(Tensor::from_floats(inp.weight, &DEV)),
            Some(Tensor::from_floats([3.0], &DEV)),
        )
        .unwrap()
    };
    let x = mat::<Ad>(inp.logits.clone(), [6, 4]).require_grad();
    let l = run(x.clone());
    assert_close(&[scalar(l.clone())], &floats(&f["focal"]["loss"]), 1e-5);
    let g = x.grad(&l.backward()).unwrap();
    assert_close(&vecf(g.clone()), &floats(&f["focal"]["grad"]), 1e-5);
    // finite differences of our own loss (f32, step 1e-2; the loss is smooth)
    let num = numeric_grad(&inp.logits, 1e-2, |v| scalar(run(mat::<Ad>(v, [6, 4]))));
    assert_close(&vecf(g), &num, 2e-3);
    // other gamma/alpha, plain mean over all elements
    let other = FocalLossConfig {
        gamma: 1.5,
        alpha: 0.6,
        ..Default::default()
    }
    .init()
    .unwrap();
    let l = other.forward(
        mat::<Cpu>(inp.logits.clone(), [6, 4]),
        Tensor::from_ints(inp.labels, &DEV),
        None,
        None,
    );
    assert_close(&[scalar(l.unwrap())], &floats(&f["focal_mean"]["loss"]), 1e-5);
}

#[test]
fn l1_and_smooth_l1_values_and_gradients() {
    let f = fixture("losses");
    let inp = inputs();
    let l1 = L1LossConfig::default().init();
    let w = || Some(mat::<Ad>(inp.box_weight.clone(), [6, 4]));
    let run = |p: Tensor<Ad, 2>| {
        l1.forward(
            p,
            mat(inp.target.clone(), [6, 4]),
            w(),
            Some(Tensor::from_floats([5.0], &DEV)),
        )
        .unwrap()
    };
    let x = mat::<Ad>(inp.pred.clone(), [6, 4]).require_grad();
    let l = run(x.clone());
    assert_close(&[scalar(l.clone())], &floats(&f["l1"]["loss"]), 1e-5);
    let g = vecf(x.grad(&l.backward()).unwrap());
    // d|p - t|/dp = sign(p - t) * w / (5 + eps)
    let want: Vec<f32> = (0..24)
        .map(|i| (inp.pred[i] - inp.target[i]).signum() * inp.box_weight[i] / (5.0 + f32::EPSILON))
        .collect();
    assert_close(&g, &want, 1e-6);
    let sum = L1LossConfig {
        reduction: Reduction::Sum,
        ..Default::default()
    }
    .init();
    let l = sum
        .forward(
            mat::<Cpu>(inp.pred.clone(), [6, 4]),
            mat(inp.target.clone(), [6, 4]),
            None,
            None,
        )
        .unwrap();
    assert_close(&[scalar(l)], &floats(&f["l1"]["sum"]), 1e-5);

    let sl1 = SmoothL1LossConfig {
        beta: 0.5,
        ..Default::default()
    }
    .init()
    .unwrap();
    let run = |p: Tensor<Ad, 2>| {
        sl1.forward(p, mat(inp.target.clone(), [6, 4]), w(), None)
            .unwrap()
    };
    let x = mat::<Ad>(inp.pred.clone(), [6, 4]).require_grad();
    let l = run(x.clone());
    assert_close(&[scalar(l.clone())], &floats(&f["smooth_l1"]["loss"]), 1e-5);
    let g = vecf(x.grad(&l.backward()).unwrap());
    let num = numeric_grad(&inp.pred, 1e-3, |v| scalar(run(mat::<Ad>(v, [6, 4]))));
    assert_close(&g, &num, 2e-3);
    assert!(
        SmoothL1LossConfig {
            beta: 0.0,
            ..Default::default()
        }
        .init()
        .is_err()
    );
}

#[test]
fn cross_entropy_with_ignore_and_class_weights() {
    let f = fixture("losses");
    let inp = inputs();
    let cfg = CrossEntropyLossConfig {
        class_weight: Some(vec![1.0, 2.0, 0.5, 1.0, 3.0]),
        ..Default::default()
    };
    let ce = cfg.clone().init();
    let labels = || Tensor::<Ad, 1, Int>::from_ints([0, 3, -100, 2, 4, 1], &DEV);
    let run = |x: Tensor<Ad, 2>| ce.forward(x, labels(), None, None).unwrap();
    let x = mat::<Ad>(inp.ce_logits.clone(), [6, 5]).require_grad();
    let l = run(x.clone());
    assert_close(&[scalar(l.clone())], &floats(&f["ce"]["loss"]), 1e-5);
    let g = vecf(x.grad(&l.backward()).unwrap());
    assert_close(&g, &floats(&f["ce"]["grad"]), 1e-5);
    let num = numeric_grad(&inp.ce_logits, 1e-2, |v| scalar(run(mat::<Ad>(v, [6, 5]))));
    assert_close(&g, &num, 2e-3);
    let non_ignore = CrossEntropyLossConfig {
        avg_non_ignore: true,
        ..cfg
    }
    .init();
    let l = non_ignore.forward(
        mat::<Cpu>(inp.ce_logits.clone(), [6, 5]),
        Tensor::from_ints([0, 3, -100, 2, 4, 1], &DEV),
        None,
        None,
    );
    assert_close(&[scalar(l.unwrap())], &floats(&f["ce"]["avg_non_ignore"]), 1e-5);
}

#[test]
fn binary_and_mask_cross_entropy() {
    let f = fixture("losses");
    let inp = inputs();
    let bce = BinaryCrossEntropyLossConfig {
        class_weight: Some(vec![1.0, 2.0, 0.5]),
        ..Default::default()
    }
    .init();
    let l = bce.forward(
        mat::<Cpu>(inp.bce_logits.clone(), [6, 3]),
        mat(inp.bce_targets.clone(), [6, 3]),
        None,
        None,
    );
    assert_close(&[scalar(l.unwrap())], &floats(&f["bce"]["loss"]), 1e-5);
    let run = |x: Tensor<Ad, 4>| {
        mask_cross_entropy(
            x,
            Tensor::from_data(TensorData::new(inp.mask_targets.clone(), [3, 4, 4]), &DEV),
            Tensor::from_ints([1, 0, 1], &DEV),
        )
        .unwrap()
    };
    let x = Tensor::<Ad, 4>::from_data(TensorData::new(inp.mask_logits.clone(), [3, 2, 4, 4]), &DEV)
        .require_grad();
    let l = run(x.clone());
    assert_close(&[scalar(l.clone())], &floats(&f["mask_ce"]["loss"]), 1e-5);
    let g = vecf(x.grad(&l.backward()).unwrap());
    let num = numeric_grad(&inp.mask_logits, 1e-2, |v| {
        scalar(run(Tensor::from_data(TensorData::new(v, [3, 2, 4, 4]), &DEV)))
    });
    assert_close(&g, &num, 2e-3);
}

#[test]
fn giou_loss_value_and_gradient() {
    let f = fixture("losses");
    let inp = inputs();
    let loss = GiouLossConfig::default().init();
    let w = [1.0f32, 0.0, 1.0, 1.0, 2.0, 1.0];
    let run = |p: Tensor<Ad, 2>| {
        loss.forward(
            p,
            tensor2(&inp.giou_target, &DEV),
            Some(Tensor::<Ad, 1>::from_floats(w, &DEV).reshape([6, 1])),
            Some(Tensor::from_floats([4.0], &DEV)),
        )
        .unwrap()
    };
    let flat: Vec<f32> = inp.giou_pred.iter().flatten().copied().collect();
    let x = mat::<Ad>(flat.clone(), [6, 4]).require_grad();
    let l = run(x.clone());
    assert_close(&[scalar(l.clone())], &floats(&f["giou"]["loss"]), 1e-5);
    let g = vecf(x.grad(&l.backward()).unwrap());
    let num = numeric_grad(&flat, 1e-2, |v| scalar(run(mat::<Ad>(v, [6, 4]))));
    assert_close(&g, &num, 2e-3);
}

/// mmdetection's head-level convention on the loss functions: without targets the box losses are 0 (and still
/// differentiable), while the classification loss over all-background anchors is positive.
#[test]
fn empty_targets_zero_box_loss_nonzero_classification_loss() {
    let empty = || Tensor::<Ad, 2>::zeros([0, 4], &DEV).require_grad();
    let z = || Tensor::<Ad, 2>::zeros([0, 4], &DEV);
    let l1 = L1LossConfig::default()
        .init()
        .forward(empty(), z(), None, None)
        .unwrap();
    let sl1 = SmoothL1LossConfig::default()
        .init()
        .unwrap()
        .forward(empty(), z(), None, None)
        .unwrap();
    let giou = GiouLossConfig::default()
        .init()
        .forward(empty(), z(), None, None)
        .unwrap();
    for l in [l1, sl1, giou] {
        assert_eq!(scalar(l.clone()), 0.0);
        let _ = l.backward();
    }
    // positives exist in the batch but every box weight is zero: still zero
    let x = Tensor::<Ad, 2>::ones([3, 4], &DEV).require_grad();
    let l = L1LossConfig::default()
        .init()
        .forward(
            x.clone(),
            Tensor::zeros([3, 4], &DEV),
            Some(Tensor::zeros([3, 4], &DEV)),
            Some(Tensor::from_floats([0.0], &DEV)),
        )
        .unwrap();
    assert_eq!(scalar(l), 0.0);
    // 5 anchors, 3 classes, all background (label 3): focal loss > 0 with avg_factor = max(num_pos, 1)
    let logits = Tensor::<Ad, 2>::from_floats([[-4.6, 0.1, -1.0]; 5], &DEV).require_grad();
    let fl = FocalLossConfig::default()
        .init()
        .unwrap()
        .forward(
            logits.clone(),
            Tensor::from_ints([3; 5], &DEV),
            None,
            Some(Tensor::from_floats([1.0], &DEV)),
        )
        .unwrap();
    assert!(scalar(fl.clone()) > 0.0);
    assert!(logits.grad(&fl.backward()).is_some());
    let ce = CrossEntropyLossConfig::default()
        .init()
        .forward(
            Tensor::<Cpu, 2>::from_floats([[0.3, -0.2, 1.0]; 4], &DEV),
            Tensor::from_ints([2; 4], &DEV),
            None,
            None,
        )
        .unwrap();
    assert!(scalar(ce) > 0.0);
}

#[test]
fn empty_inputs_and_errors() {
    let focal = FocalLossConfig::default().init().unwrap();
    let l = focal
        .forward(
            Tensor::<Cpu, 2>::zeros([0, 3], &DEV),
            Tensor::zeros([0], &DEV),
            None,
            None,
        )
        .unwrap();
    assert_eq!(scalar(l), 0.0);
    let ce = CrossEntropyLossConfig::default().init();
    assert_eq!(
        scalar(
            ce.forward(
                Tensor::<Cpu, 2>::zeros([0, 3], &DEV),
                Tensor::zeros([0], &DEV),
                None,
                None
            )
            .unwrap()
        ),
        0.0
    );
    let bce = BinaryCrossEntropyLossConfig::default().init();
    assert_eq!(
        scalar(
            bce.forward(
                Tensor::<Cpu, 2>::zeros([0, 3], &DEV),
                Tensor::zeros([0, 3], &DEV),
                None,
                None
            )
            .unwrap()
        ),
        0.0
    );
    let m = mask_cross_entropy(
        Tensor::<Cpu, 4>::zeros([0, 2, 4, 4], &DEV),
        Tensor::zeros([0, 4, 4], &DEV),
        Tensor::zeros([0], &DEV),
    );
    assert_eq!(scalar(m.unwrap()), 0.0);
    // avg_factor with sum is rejected; mismatched shapes name the tensor
    let sum = L1LossConfig {
        reduction: Reduction::Sum,
        ..Default::default()
    }
    .init();
    let err = sum.forward(
        Tensor::<Cpu, 2>::ones([2, 4], &DEV),
        Tensor::zeros([2, 4], &DEV),
        None,
        Some(Tensor::from_floats([1.0], &DEV)),
    );
    assert!(err.unwrap_err().to_string().contains("reduction"));
    let err = focal
        .forward(
            Tensor::<Cpu, 2>::zeros([2, 3], &DEV),
            Tensor::zeros([3], &DEV),
            None,
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("labels"));
    assert!(
        FocalLossConfig {
            alpha: 1.5,
            ..Default::default()
        }
        .init()
        .is_err()
    );
    let bad: Result<FocalLossConfig, _> = serde_json::from_str(r#"{"gama": 2.0}"#);
    assert!(bad.is_err());
}
