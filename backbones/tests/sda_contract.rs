//! The backbone contract for the SDA networks and their plain baselines (SDA-ResNet, SDA-SENet, SDA-Res2Net,
//! SDA-PyConv, Res2Net-50, PyConvResNet-50): levels follow their specs at strides 4/8/16/32 (empty batches
//! too), frozen stages get no gradient and keep their BatchNorm statistics, norm_eval equals the inference
//! forward, and a checkpoint of another variant is refused with the keys named.

#[path = "mobile_common/mod.rs"]
mod mobile_common;

use attndet_backbones::Backbone;
use attndet_backbones::NormMode;
use attndet_backbones::checkpoint::load_torch_safetensors_bytes;
use attndet_backbones::sda::{SdaConfig, SdaNet, SdaVariant};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use mobile_common::*;

type A = Autodiff<B>;

const VARIANTS: [SdaVariant; 4] = [
    SdaVariant::ResNet,
    SdaVariant::SeResNet,
    SdaVariant::Res2Net,
    SdaVariant::PyConv,
];

/// A small network of `variant`: one or two blocks per stage.
fn small(variant: SdaVariant, depth_attention: bool) -> SdaConfig {
    SdaConfig {
        variant,
        depths: [1, 2, 1, 1],
        num_classes: 10,
        depth_attention,
    }
}

#[test]
fn levels_follow_their_specs_including_empty_batches() {
    for variant in VARIANTS {
        for attention in [true, false] {
            let model = small(variant, attention).init::<B>(&Default::default());
            check_levels(&model, 1, 64);
            check_levels(&model, 0, 64);
            let logits = model.forward(Tensor::zeros([0, 3, 64, 64], &Default::default()));
            assert_eq!(logits.dims(), [0, 10]);
        }
    }
}

fn stem_mean(net: &SdaNet<A>, stage: usize) -> Vec<f32> {
    net.stages[stage].layers[0]
        .bn1
        .running_mean
        .value_sync()
        .into_data()
        .to_vec()
        .unwrap()
}

#[test]
fn frozen_stages_get_no_gradient_and_keep_statistics() {
    let device = Default::default();
    for variant in [SdaVariant::Res2Net, SdaVariant::PyConv] {
        let net = small(variant, true).init::<A>(&device).with_frozen_stages(1);
        let before = (stem_mean(&net, 0), stem_mean(&net, 1));
        let x = Tensor::<A, 4>::ones([2, 3, 32, 32], &device) * 0.5;
        let loss = net.forward_features(x)[3].clone().sum();
        let grads = loss.backward();
        assert!(
            net.conv1.weight.grad(&grads).is_none(),
            "{variant:?}: stem is frozen"
        );
        let first = &net.stages[0].layers[0];
        assert!(
            first.conv1.weight.grad(&grads).is_none(),
            "{variant:?}: stage 1 is frozen"
        );
        let second = &net.stages[1].layers[0];
        assert!(
            second.conv1.weight.grad(&grads).is_some(),
            "{variant:?}: stage 2 trains"
        );
        // A training-mode forward updates the running statistics of stage 2 only.
        let after = (stem_mean(&net, 0), stem_mean(&net, 1));
        assert_eq!(before.0, after.0, "{variant:?}: frozen statistics");
        assert_ne!(before.1, after.1, "{variant:?}: trained statistics");
    }
}

#[test]
fn norm_eval_equals_inference_forward() {
    let device = Default::default();
    for variant in VARIANTS {
        let net = small(variant, variant != SdaVariant::ResNet)
            .init::<A>(&device)
            .fork(&device);
        let x = Tensor::<A, 4>::ones([1, 3, 32, 32], &device) * 0.3;
        let frozen = net.clone().with_norm_mode(NormMode::Frozen).forward(x.clone());
        let inference = net.valid().forward(x.inner());
        frozen
            .inner()
            .into_data()
            .assert_approx_eq::<f32>(&inference.into_data(), Default::default());
    }
}

#[test]
fn a_checkpoint_of_another_variant_is_refused_naming_the_keys() {
    // SDA-PyConv weights into SDA-Res2Net: the split convolutions are missing, the pyramid levels unexpected.
    let fixture = read_fixture("sda_parity_sda_pyconvresnet86.json");
    let config = SdaConfig::depth86(SdaVariant::Res2Net, 10);
    let mut model = config.init::<B>(&Default::default());
    let bytes = formula_safetensors(&fixture.state_dict);
    let origin = std::path::Path::new("sda_pyconvresnet86.safetensors");
    let message =
        load_torch_safetensors_bytes(&mut model, bytes, origin, config.static_key_map(), &config.name())
            .expect_err("another variant must be refused")
            .to_string();
    for expected in [
        "sda_pyconvresnet86.safetensors",
        "sda_res2net86",
        "stages.0.layers.0.res2.convs.0.weight",
        "layers.0.conv2.conv2_1.weight",
    ] {
        assert!(message.contains(expected), "{expected} not in: {message}");
    }
}
