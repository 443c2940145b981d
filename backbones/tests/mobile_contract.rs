//! The backbone contract for the mobile and SDA networks: levels match their specs (channels, strides), empty
//! batches give empty levels, and a checkpoint of another architecture is refused with the keys named.

#[path = "mobile_common/mod.rs"]
mod mobile_common;

use attndet_backbones::Backbone;
use attndet_backbones::checkpoint::load_torch_safetensors_bytes;
use attndet_backbones::mobilenet_v2::{MobileAttention, MobileNetV2Config};
use attndet_backbones::sda::{SdaConfig, SdaVariant};
use burn::prelude::*;
use mobile_common::*;

#[test]
fn mobilenet_v2_levels_follow_their_specs_including_empty_batches() {
    for attention in MobileAttention::ALL {
        let model = MobileNetV2Config {
            attention,
            num_classes: 10,
        }
        .init::<B>(&Default::default());
        let strides: Vec<usize> = model.feature_specs().iter().map(|s| s.stride).collect();
        assert_eq!(strides, [4, 8, 16, 32]);
        check_levels(&model, 1, 64);
        check_levels(&model, 0, 64);
        let logits = model.forward(Tensor::zeros([0, 3, 32, 32], &Default::default()));
        assert_eq!(logits.dims(), [0, 10], "{attention:?}");
    }
}

#[test]
fn mnasnet_levels_follow_their_specs_including_empty_batches() {
    use attndet_backbones::mnasnet::{MnasAttention, MnasNetConfig};
    for attention in MnasAttention::ALL {
        let model = MnasNetConfig {
            attention,
            width_percent: 50,
            num_classes: 10,
        }
        .init::<B>(&Default::default());
        check_levels(&model, 1, 64);
        check_levels(&model, 0, 64);
        let logits = model.forward(Tensor::zeros([0, 3, 32, 32], &Default::default()));
        assert_eq!(logits.dims(), [0, 10], "{attention:?}");
    }
}

#[test]
fn sda_levels_follow_their_specs_including_empty_batches() {
    let model = SdaConfig {
        variant: SdaVariant::ResNet,
        depths: [1, 1, 1, 1],
        num_classes: 10,
        depth_attention: true,
    }
    .init::<B>(&Default::default());
    check_levels(&model, 1, 64);
    check_levels(&model, 0, 64);
}

#[test]
fn a_checkpoint_of_another_variant_is_refused_naming_the_keys() {
    // Plain MobileNetV2 weights into DCA-SE MobileNetV2: the attention tensors are missing.
    let fixture = read_fixture("mobile_parity_mobilenet_v2.json");
    let config = MobileNetV2Config {
        attention: MobileAttention::DcaSe,
        num_classes: 10,
    };
    let mut model = config.init::<B>(&Default::default());
    let bytes = formula_safetensors(&fixture.state_dict);
    let origin = std::path::Path::new("mobilenet_v2.safetensors");
    let err =
        load_torch_safetensors_bytes(&mut model, bytes, origin, config.static_key_map(), &config.name())
            .expect_err("missing attention weights must be refused");
    let message = err.to_string();
    assert!(
        message.contains("mobilenet_v2.safetensors") && message.contains("dca_se_mobilenet_v2"),
        "{message}"
    );
    assert!(message.contains("blocks.1.attention.fc1.weight"), "{message}");
    // And the other way: DCA-SE weights into the plain network leave unexpected keys, named in reference form.
    let fixture = read_fixture("mobile_parity_dca_se_mobilenet_v2.json");
    let config = MobileNetV2Config {
        attention: MobileAttention::None,
        num_classes: 10,
    };
    let mut model = config.init::<B>(&Default::default());
    let bytes = formula_safetensors(&fixture.state_dict);
    let message =
        load_torch_safetensors_bytes(&mut model, bytes, origin, config.static_key_map(), &config.name())
            .expect_err("unexpected attention weights must be refused")
            .to_string();
    assert!(
        message.contains("unexpected") && message.contains("se.fc"),
        "{message}"
    );
    // CBAM weights into DCA-CBAM: the connection tensors are missing, by name.
    let fixture = read_fixture("mobile_parity_cbam_mobilenet_v2.json");
    let config = MobileNetV2Config {
        attention: MobileAttention::DcaCbam,
        num_classes: 10,
    };
    let mut model = config.init::<B>(&Default::default());
    let bytes = formula_safetensors(&fixture.state_dict);
    let message =
        load_torch_safetensors_bytes(&mut model, bytes, origin, config.static_key_map(), &config.name())
            .expect_err("missing DCA-CBAM connections must be refused")
            .to_string();
    for key in ["blocks.1.attention.alpha.weight", "blocks.1.attention.p2"] {
        assert!(message.contains(key), "{key} not in: {message}");
    }
}

#[test]
fn explain_reports_depth_attention_and_dca_connections() {
    use attndet_backbones::sda::explain::explain;
    use attndet_backbones::{AnyBackbone, BackboneArch};
    let device = Default::default();
    let sda = SdaConfig {
        variant: SdaVariant::ResNet,
        depths: [2, 1, 3, 1],
        num_classes: 10,
        depth_attention: true,
    }
    .init::<B>(&device);
    let report = explain(&AnyBackbone::Sda(sda), Tensor::ones([1, 3, 32, 32], &device)).unwrap();
    let stages = report["depth_attention"].as_array().unwrap();
    let lengths: Vec<usize> = stages.iter().map(|s| s.as_array().unwrap().len()).collect();
    assert_eq!(lengths, [2, 1, 3, 1]);
    for s in stages {
        let sum: f64 = s.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "softmax over blocks sums to one: {sum}");
    }
    // DCA: one connection per block after the first, beta / (alpha + beta) from the mixing conv's weights.
    let model = BackboneArch::parse("dca_se_mobilenet_v2")
        .unwrap()
        .build::<B>(&device)
        .unwrap();
    let report = explain(&model, Tensor::ones([1, 3, 32, 32], &device)).unwrap();
    let rows = report["dca_connections"].as_array().unwrap();
    assert_eq!(rows.len(), 16);
    let row = &rows[0];
    let (a, b) = (row["alpha"].as_f64().unwrap(), row["beta"].as_f64().unwrap());
    assert!((row["beta_ratio"].as_f64().unwrap() - b / (a + b)).abs() < 1e-6);
    // DCA-SK and DCA-CBAM report theirs too (SK: the first branch's merge; CBAM: the channel gate's): one per
    // block after the first (MobileNetV2: 17 blocks, MnasNet: 3 + 3 + 3 + 2 + 4 + 1).
    for (name, connections) in [
        ("dca_sk_mobilenet_v2", 16),
        ("dca_cbam_mobilenet_v2", 16),
        ("dca_cbam_mnasnet0_5", 15),
    ] {
        let model = BackboneArch::parse(name).unwrap().build::<B>(&device).unwrap();
        let report = explain(&model, Tensor::ones([1, 3, 32, 32], &device)).unwrap();
        let rows = report["dca_connections"].as_array().unwrap();
        assert_eq!(rows.len(), connections, "{name}");
    }
    // Plain networks have nothing to explain.
    let plain = BackboneArch::parse("mobilenet_v2")
        .unwrap()
        .build::<B>(&device)
        .unwrap();
    assert!(explain(&plain, Tensor::ones([1, 3, 32, 32], &device)).is_none());
}

/// Every attention variant of both families, by zoo name (MnasNet at width 0.5 to keep it quick).
fn mobile_names() -> Vec<String> {
    use attndet_backbones::mnasnet::MnasAttention;
    MobileAttention::ALL
        .iter()
        .map(|a| format!("{}mobilenet_v2", a.prefix()))
        .chain(
            MnasAttention::ALL
                .iter()
                .map(|a| format!("{}mnasnet0_5", a.prefix())),
        )
        .collect()
}

#[test]
fn norm_eval_equals_inference_forward_for_every_variant() {
    use attndet_backbones::{BackboneArch, Classifier, NormMode};
    use burn::module::AutodiffModule;
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    for name in mobile_names() {
        let model = BackboneArch::parse(&name).unwrap().build::<A>(&device).unwrap();
        let x = Tensor::<A, 4>::ones([1, 3, 32, 32], &device) * 0.3;
        let frozen = model
            .clone()
            .with_norm_mode(NormMode::Frozen)
            .forward_logits(x.clone());
        let inference = model.valid().forward_logits(x.inner());
        frozen
            .inner()
            .into_data()
            .assert_approx_eq::<f32>(&inference.into_data(), Default::default());
    }
}

#[test]
fn frozen_stages_get_no_gradient_for_every_variant() {
    use attndet_backbones::{AnyBackbone, BackboneArch};
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    for name in mobile_names() {
        let model = BackboneArch::parse(&name)
            .unwrap()
            .build::<A>(&device)
            .unwrap()
            .with_frozen_stages(1);
        let x = Tensor::<A, 4>::ones([2, 3, 32, 32], &device) * 0.5;
        let grads = model.forward_features(x)[3].clone().sum().backward();
        // Stage 1 ends at C2: MobileNetV2 blocks 0..=2, MnasNet stack 0; the next unit trains.
        let (frozen, trained) = match &model {
            AnyBackbone::MobileNetV2(net) => (
                net.blocks[2].project.conv.weight.grad(&grads),
                net.blocks[3].project.conv.weight.grad(&grads),
            ),
            AnyBackbone::MnasNet(net) => (
                net.stacks[0][0].project.conv.weight.grad(&grads),
                net.stacks[1][0].project.conv.weight.grad(&grads),
            ),
            _ => unreachable!(),
        };
        assert!(frozen.is_none(), "{name}: stage 1 is frozen");
        assert!(trained.is_some(), "{name}: stage 2 trains");
    }
}
