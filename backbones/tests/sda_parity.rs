//! Numerical parity of the SDA networks with the authors' PyTorch code (`QingbeiGuo/SDA-xNet`).
//!
//! Fixtures: `python3 backbones/scripts/mobile_parity.py --dcanet <DCANet> --sda <SDA-xNet checkout>` (224x224
//! input for SDA-ResNet/SENet: their classifier and SE blocks pool with fixed 7/14/28/56 windows; 64x64 for the
//! Res2Net and PyConv networks, which pool adaptively).

#[path = "mobile_common/mod.rs"]
mod mobile_common;

use attndet_backbones::sda::{SdaConfig, SdaVariant};
use mobile_common::*;

const TOLERANCE: f64 = 1e-3;

fn check(config: SdaConfig) {
    let fixture = read_fixture(&format!("sda_parity_{}.json", config.name()));
    assert_eq!(fixture.model, config.name());
    let mut model = config.init::<B>(&Default::default());
    load_formula(&mut model, &fixture, config.static_key_map());
    let (levels, weights) = model.forward_explained(input(fixture.input_shape));
    // The classifier from the last level (same computation as `forward`, without running the trunk twice).
    let logits: Vec<f32> = model.head(levels[3].clone()).into_data().to_vec().unwrap();
    let err = relative_error(&logits, &fixture.logits);
    println!("{}: logits max relative error {err:.2e}", fixture.model);
    assert!(
        err < TOLERANCE,
        "{}: logits relative error {err:.2e}",
        fixture.model
    );
    for (i, (level, reference)) in levels.into_iter().zip(&fixture.levels).enumerate() {
        check_level(
            &format!("{} stage {}", fixture.model, i + 1),
            level,
            reference,
            TOLERANCE,
        );
    }
    // Depth attention is a softmax over blocks: every channel's weights sum to one.
    assert_eq!(weights.len(), if config.depth_attention { 4 } else { 0 });
    for (stage, w) in weights.into_iter().enumerate() {
        let sums: Vec<f32> = w.sum_dim(1).into_data().to_vec().unwrap();
        assert!(
            sums.iter().all(|s| (s - 1.0).abs() < 1e-5),
            "stage {stage}: {:?}",
            &sums[..4]
        );
    }
}

#[test]
fn sda_resnet86_matches_reference() {
    check(SdaConfig::depth86(SdaVariant::ResNet, 10));
}

#[test]
fn sda_se_resnet86_matches_reference() {
    check(SdaConfig::depth86(SdaVariant::SeResNet, 10));
}

#[test]
fn sda_res2net86_matches_reference() {
    check(SdaConfig::depth86(SdaVariant::Res2Net, 10));
}

#[test]
fn sda_pyconvresnet86_matches_reference() {
    check(SdaConfig::depth86(SdaVariant::PyConv, 10));
}

#[test]
fn res2net50_matches_reference() {
    check(SdaConfig::plain50(SdaVariant::Res2Net, 10));
}

#[test]
fn pyconvresnet50_matches_reference() {
    check(SdaConfig::plain50(SdaVariant::PyConv, 10));
}
