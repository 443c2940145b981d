//! Behaviour of the ResNet family as a detection backbone: feature shapes, frozen stages, norm_eval, empty
//! input, weights round trip and strict import errors.

use attndet_backbones::{Backbone, BackboneArch, BackboneError, Classifier, NormMode};
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;

type B = Flex;
type A = Autodiff<Flex>;

fn input<BB: Backend>(n: usize, h: usize, w: usize) -> Tensor<BB, 4> {
    Tensor::random([n, 3, h, w], Distribution::Normal(0.0, 1.0), &Default::default())
}

#[test]
fn features_have_the_documented_shapes() {
    let arch = BackboneArch::parse("resnet18").unwrap();
    let model = arch.build::<B>(&Default::default()).unwrap();
    let specs = model.feature_specs();
    let chans: Vec<_> = specs
        .iter()
        .map(|s| (s.name.as_str(), s.channels, s.stride))
        .collect();
    assert_eq!(
        chans,
        [("c2", 64, 4), ("c3", 128, 8), ("c4", 256, 16), ("c5", 512, 32)]
    );
    // 70x90: stem 35x45, pool 18x23, then 9x12, 5x6, 3x3 (PyTorch's floor((x + 2 - 3) / 2) + 1 rule).
    let feats = model.forward_features(input(2, 70, 90));
    let dims: Vec<_> = feats.iter().map(|f| f.dims()).collect();
    assert_eq!(
        dims,
        [[2, 64, 18, 23], [2, 128, 9, 12], [2, 256, 5, 6], [2, 512, 3, 3]]
    );
    assert_eq!(model.forward_logits(input(2, 64, 64)).dims(), [2, 1000]);
}

#[test]
fn bottleneck_features_and_specs() {
    let model = BackboneArch::parse("resnet50")
        .unwrap()
        .build::<B>(&Default::default())
        .unwrap();
    let chans: Vec<_> = model.feature_specs().iter().map(|s| s.channels).collect();
    assert_eq!(chans, [256, 512, 1024, 2048]);
    let dims: Vec<_> = model
        .forward_features(input(1, 64, 64))
        .iter()
        .map(|f| f.dims())
        .collect();
    assert_eq!(
        dims,
        [[1, 256, 16, 16], [1, 512, 8, 8], [1, 1024, 4, 4], [1, 2048, 2, 2]]
    );
}

#[test]
fn empty_batch_gives_empty_features() {
    let model = BackboneArch::parse("resnet18")
        .unwrap()
        .build::<B>(&Default::default())
        .unwrap();
    let feats = model.forward_features(input(0, 32, 32));
    assert_eq!(feats[3].dims(), [0, 512, 1, 1]);
    assert_eq!(model.forward_logits(input(0, 32, 32)).dims(), [0, 1000]);
}

#[test]
fn frozen_stages_get_no_gradient_and_keep_statistics() {
    let device = Default::default();
    let model = BackboneArch::parse("resnet18")
        .unwrap()
        .build::<A>(&device)
        .unwrap()
        .with_frozen_stages(1);
    let attndet_backbones::AnyBackbone::ResNet(net) = &model else {
        panic!("a ResNet")
    };
    let mean_before = net.layer1[0].clone();
    let loss = model.forward_features(input(2, 32, 32))[3].clone().sum();
    let grads = loss.backward();
    let attndet_backbones::AnyBackbone::ResNet(net) = &model else {
        panic!("a ResNet")
    };
    assert!(net.conv1.weight.grad(&grads).is_none(), "stem is frozen");
    let attndet_backbones::resnet::block::Block::Basic(b1) = &net.layer1[0] else {
        panic!("basic block")
    };
    assert!(b1.conv1.weight.grad(&grads).is_none(), "layer1 is frozen");
    let attndet_backbones::resnet::block::Block::Basic(b2) = &net.layer2[0] else {
        panic!("basic block")
    };
    assert!(b2.conv1.weight.grad(&grads).is_some(), "layer2 trains");
    // Frozen stage: running statistics untouched by a training-mode forward; trained stage: updated.
    let attndet_backbones::resnet::block::Block::Basic(before) = &mean_before else {
        panic!()
    };
    let m0: Vec<f32> = before.bn1.running_mean.value_sync().into_data().to_vec().unwrap();
    let m1: Vec<f32> = b1.bn1.running_mean.value_sync().into_data().to_vec().unwrap();
    assert_eq!(m0, m1);
    let m2: Vec<f32> = b2.bn1.running_mean.value_sync().into_data().to_vec().unwrap();
    assert!(
        m2.iter().any(|v| *v != 0.0),
        "layer2 BN statistics move in training mode"
    );
}

#[test]
fn norm_eval_equals_inference_forward() {
    let device = Default::default();
    let model = BackboneArch::parse("resnet18")
        .unwrap()
        .build::<A>(&device)
        .unwrap();
    let x = input::<A>(1, 32, 32);
    let frozen = model
        .clone()
        .with_norm_mode(NormMode::Frozen)
        .forward_logits(x.clone());
    use burn::module::AutodiffModule;
    let inference = model.valid().forward_logits(x.inner());
    frozen
        .inner()
        .into_data()
        .assert_approx_eq::<f32>(&inference.into_data(), Default::default());
}

#[test]
fn safetensors_round_trip_and_wrong_architecture() {
    let device = Default::default();
    let dir = std::env::temp_dir().join(format!("attndet-resnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r18.safetensors");
    let arch = BackboneArch::parse("resnet18").unwrap();
    let model = arch.build::<B>(&device).unwrap();
    model.save_weights(&path).unwrap();
    let mut back = arch.build::<B>(&device).unwrap();
    back.load_weights(&arch, &path).unwrap();
    let x = input::<B>(1, 32, 32);
    let a: Vec<f32> = model.forward_logits(x.clone()).into_data().to_vec().unwrap();
    let b: Vec<f32> = back.forward_logits(x).into_data().to_vec().unwrap();
    assert_eq!(a, b);

    // resnet18 weights into resnet34: the extra blocks are missing, by name.
    let arch34 = BackboneArch::parse("resnet34").unwrap();
    let mut r34 = arch34.build::<B>(&device).unwrap();
    let err = r34.load_weights(&arch34, &path).unwrap_err();
    let BackboneError::CheckpointMismatch { mismatch, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        mismatch.missing.iter().any(|k| k == "layer1.2.conv1.weight"),
        "{err}"
    );
    assert!(
        mismatch.unexpected.is_empty() && mismatch.shape_mismatch.is_empty(),
        "{err}"
    );
    // resnet18 weights into resnet50: shapes differ and keys are unexpected.
    let arch50 = BackboneArch::parse("resnet50").unwrap();
    let mut r50 = arch50.build::<B>(&device).unwrap();
    let err = r50.load_weights(&arch50, &path).unwrap_err();
    let BackboneError::CheckpointMismatch { mismatch, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        mismatch.missing.iter().any(|k| k == "layer1.0.conv3.weight"),
        "{err}"
    );
    assert!(
        mismatch.shape_mismatch.iter().any(|(k, _, _)| k == "fc.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("r18.safetensors"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_is_a_read_error() {
    let arch = BackboneArch::parse("resnet18").unwrap();
    let mut m = arch.build::<B>(&Default::default()).unwrap();
    let err = m
        .load_weights(&arch, std::path::Path::new("/nonexistent/x.pth"))
        .unwrap_err();
    assert!(matches!(err, BackboneError::CheckpointRead { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/x.pth"));
}

#[test]
fn wrong_pytorch_checkpoint_lists_the_keys_at_fault() {
    // fixtures/wrong_arch.pth.tar (scripts/make_wrong_checkpoint.py): {"state_dict": {"module.conv1.weight"
    // [64, 3, 3, 3], "module.bn1.*", "module.attention.extra.weight"}, "epoch": 3}.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wrong_arch.pth.tar");
    let arch = BackboneArch::parse("resnet18").unwrap();
    let mut model = arch.build_lazy::<B>(&Default::default()).unwrap();
    let err = model.load_weights(&arch, &path).unwrap_err();
    let BackboneError::CheckpointMismatch { mismatch, .. } = &err else {
        panic!("{err}")
    };
    // The nested state_dict was found and the `module.` prefix stripped: conv1 is a shape mismatch, not unknown.
    assert_eq!(
        mismatch.shape_mismatch,
        [("conv1.weight".to_string(), vec![64, 3, 7, 7], vec![64, 3, 3, 3])]
    );
    assert_eq!(mismatch.unexpected, ["attention.extra.weight"]);
    assert!(
        mismatch.missing.iter().any(|k| k == "layer4.1.bn2.running_var"),
        "{err}"
    );
    assert!(
        !mismatch.missing.iter().any(|k| k.starts_with("bn1.")),
        "bn1 was in the file: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("wrong_arch.pth.tar") && text.contains("conv1.weight") && text.contains("resnet18")
    );
}
