//! Numerical parity of the SDA networks with the authors' PyTorch code (`QingbeiGuo/SDA-xNet`).
//!
//! Fixtures: `python3 backbones/scripts/mobile_parity.py --dcanet <DCANet> --sda <SDA-xNet checkout>` (224x224
//! input: the reference classifier and the SE blocks pool with fixed 7/14/28/56 windows).

#[path = "mobile_common/mod.rs"]
mod mobile_common;

use attndet_backbones::sda::{SdaConfig, SdaVariant};
use mobile_common::*;

const TOLERANCE: f64 = 1e-3;

fn check(variant: SdaVariant) {
    let config = SdaConfig::depth86(variant, 10);
    let fixture = read_fixture(&format!("sda_parity_{}.json", config.name()));
    assert_eq!(fixture.model, config.name());
    let mut model = config.init::<B>(&Default::default());
    load_formula(&mut model, &fixture, config.static_key_map());
    let (levels, weights) = model.forward_explained(input(fixture.input_shape));
    // The classifier from the last level (same computation as `forward`, without running the trunk twice).
    let logits: Vec<f32> = {
        let last = levels[3].clone();
        let [n, c, _, _] = last.dims();
        let pooled = last.mean_dim(3).mean_dim(2);
        let pooled = model.bn2.forward(pooled).reshape([n, c]);
        model.fc.forward(pooled).into_data().to_vec().unwrap()
    };
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
    check(SdaVariant::ResNet);
}

#[test]
fn sda_se_resnet86_matches_reference() {
    check(SdaVariant::SeResNet);
}
