//! Reading a backbone out of a whole detector's PyTorch checkpoint (mmdetection's `{"meta", "state_dict"}` file
//! with `backbone.*`, `neck.*`, `rpn_head.*` keys), with the classifier head optional; strict loading refuses
//! the same file by key name.
//!
//! Fixture: `python3 backbones/scripts/make_detector_checkpoint.py backbones/tests/fixtures/tiny_detector.pth`.

use attndet_backbones::checkpoint::{Fit, load_pytorch};
use burn::backend::Flex;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;

type B = Flex;

/// A toy backbone named like the checkpoint's: conv1, bn1, and a classifier head `fc`.
#[derive(Module, Debug)]
struct Toy<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    fc: Linear<B>,
}

fn toy(conv_out: usize) -> Toy<B> {
    let device = Default::default();
    Toy {
        conv1: Conv2dConfig::new([3, conv_out], [3, 3])
            .with_bias(false)
            .init(&device),
        bn1: BatchNormConfig::new(conv_out).init(&device),
        fc: LinearConfig::new(conv_out, 10).init(&device),
    }
}

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_detector.pth")
}

/// The script's values: element `i` of tensor `key` is `(i + 1) / 100 + len(key)`.
fn expected(key: &str, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (i + 1) as f32 / 100.0 + key.len() as f32)
        .collect()
}

#[test]
fn a_detector_checkpoint_gives_its_backbone_and_the_head_may_be_absent() {
    let mut model = toy(4);
    let fc_before: Vec<f32> = model.fc.weight.val().into_data().to_vec().unwrap();
    let summary = load_pytorch(&mut model, &fixture(), &[], "toy", &Fit::backbone(&["fc."])).unwrap();
    // conv1.weight and bn1's weight, bias, running mean and variance.
    assert_eq!(summary.applied, 5);
    let conv: Vec<f32> = model.conv1.weight.val().into_data().to_vec().unwrap();
    assert_eq!(conv, expected("backbone.conv1.weight", 4 * 3 * 3 * 3));
    let gamma: Vec<f32> = model.bn1.gamma.val().into_data().to_vec().unwrap();
    assert_eq!(gamma, expected("backbone.bn1.weight", 4));
    let var: Vec<f32> = model.bn1.running_var.value_sync().into_data().to_vec().unwrap();
    assert_eq!(var, expected("backbone.bn1.running_var", 4));
    // The head keeps its own weights.
    let fc_after: Vec<f32> = model.fc.weight.val().into_data().to_vec().unwrap();
    assert_eq!(fc_before, fc_after);
}

#[test]
fn strict_loading_and_a_wrong_backbone_are_refused_by_key_name() {
    let mut model = toy(4);
    let message = load_pytorch(&mut model, &fixture(), &[], "toy", &Fit::STRICT)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("tiny_detector.pth")
            && message.contains("fc.weight")
            && message.contains("backbone.conv1.weight"),
        "{message}"
    );
    // A backbone of other widths: the shapes are named, the detector's other parts are not.
    let mut model = toy(8);
    let message = load_pytorch(&mut model, &fixture(), &[], "toy", &Fit::backbone(&["fc."]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("conv1.weight") && message.contains("[8, 3, 3, 3]"),
        "{message}"
    );
    assert!(
        !message.contains("neck") && !message.contains("rpn_head"),
        "{message}"
    );
}

/// A `.pth` whose tensor declares a shape that does not fit its data (`conv.weight` as the fuzzer mutated it:
/// shape `[0, 3, 3, 3]`, one element of data) is an error naming the file and the tensor. burn asserts on it
/// and burn-store turns the panic into a load error, but the panic hook had already printed a panic report
/// (and libFuzzer's hook aborts on any panic, which is how the `torch_checkpoint` target found it); reads of
/// checkpoints now run with the hook silenced (`checkpoint::guarded`). The fixture is the crash input
/// without the target's kind byte.
#[test]
fn a_tensor_that_does_not_fit_its_data_is_a_read_error_not_a_panic() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corrupt_tensor_size.pth");
    let device = Default::default();
    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        conv: Conv2d<B>,
        bn: BatchNorm<B>,
        fc: Linear<B>,
    }
    let mut model = Tiny::<B> {
        conv: Conv2dConfig::new([3, 4], [3, 3]).init(&device),
        bn: BatchNormConfig::new(4).init(&device),
        fc: LinearConfig::new(4, 2).init(&device),
    };
    let e = load_pytorch(&mut model, &path, &[], "tiny", &Fit::STRICT)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("corrupt_tensor_size.pth") && e.contains("conv.weight"),
        "{e}"
    );
}
