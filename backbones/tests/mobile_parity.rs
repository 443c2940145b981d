//! Numerical parity of MobileNetV2 (all attention variants) with the authors' PyTorch code.
//!
//! Fixtures: `python3 backbones/scripts/mobile_parity.py --dcanet <DCANet checkout> --ecanet <ECANet checkout>`
//! (the script sets every reference tensor from a formula; `mobile_common` computes the same values here).

mod mobile_common;

use attndet_backbones::Backbone;
use attndet_backbones::mobilenet_v2::{MobileAttention, MobileNetV2Config};
use mobile_common::*;

const TOLERANCE: f64 = 1e-3;

fn check(attention: MobileAttention) {
    let config = MobileNetV2Config {
        attention,
        num_classes: 10,
    };
    let fixture = read_fixture(&format!("mobile_parity_{}.json", config.name()));
    assert_eq!(fixture.model, config.name());
    let mut model = config.init::<B>(&Default::default());
    load_formula(&mut model, &fixture, config.static_key_map());
    let x = input(fixture.input_shape);
    let logits: Vec<f32> = model.forward(x.clone()).into_data().to_vec().unwrap();
    let err = relative_error(&logits, &fixture.logits);
    println!("{}: logits max relative error {err:.2e}", fixture.model);
    assert!(
        err < TOLERANCE,
        "{}: logits relative error {err:.2e}",
        fixture.model
    );
    for (i, (level, reference)) in model
        .forward_features(x)
        .into_iter()
        .zip(&fixture.levels)
        .enumerate()
    {
        check_level(
            &format!("{} level {i}", fixture.model),
            level,
            reference,
            TOLERANCE,
        );
    }
}

#[test]
fn mobilenet_v2_matches_reference() {
    check(MobileAttention::None);
}

#[test]
fn se_mobilenet_v2_matches_reference() {
    check(MobileAttention::Se);
}

#[test]
fn dca_se_mobilenet_v2_matches_reference() {
    check(MobileAttention::DcaSe);
}

#[test]
fn ge_mobilenet_v2_matches_reference() {
    check(MobileAttention::Ge);
}

#[test]
fn dca_ge_mobilenet_v2_matches_reference() {
    check(MobileAttention::DcaGe);
}

#[test]
fn eca_mobilenet_v2_matches_reference() {
    check(MobileAttention::Eca);
}

#[test]
fn sk_mobilenet_v2_matches_reference() {
    check(MobileAttention::Sk);
}

#[test]
fn dca_sk_mobilenet_v2_matches_reference() {
    check(MobileAttention::DcaSk);
}

#[test]
fn cbam_mobilenet_v2_matches_reference() {
    check(MobileAttention::Cbam);
}

#[test]
fn dca_cbam_mobilenet_v2_matches_reference() {
    check(MobileAttention::DcaCbam);
}

/// MnasNet variants, built through the zoo by name.
fn check_mnasnet(name: &str) {
    use attndet_backbones::mnasnet::MnasNetConfig;
    let config = match MnasNetConfig::parse(name) {
        Some(Ok(c)) => MnasNetConfig { num_classes: 10, ..c },
        other => panic!("{name}: {other:?}"),
    };
    let fixture = read_fixture(&format!("mobile_parity_{name}.json"));
    let mut model = config.init::<B>(&Default::default());
    load_formula(&mut model, &fixture, config.static_key_map());
    let x = input(fixture.input_shape);
    let logits: Vec<f32> = model.forward(x.clone()).into_data().to_vec().unwrap();
    let err = relative_error(&logits, &fixture.logits);
    println!("{name}: logits max relative error {err:.2e}");
    assert!(err < TOLERANCE, "{name}: logits relative error {err:.2e}");
    for (i, (level, reference)) in model
        .forward_features(x)
        .into_iter()
        .zip(&fixture.levels)
        .enumerate()
    {
        check_level(&format!("{name} level {i}"), level, reference, TOLERANCE);
    }
}

#[test]
fn mnasnet1_0_matches_reference() {
    check_mnasnet("mnasnet1_0");
}

#[test]
fn se_mnasnet1_0_matches_reference() {
    check_mnasnet("se_mnasnet1_0");
}

#[test]
fn dca_se_mnasnet1_0_matches_reference() {
    check_mnasnet("dca_se_mnasnet1_0");
}

#[test]
fn ge_mnasnet1_0_matches_reference() {
    check_mnasnet("ge_mnasnet1_0");
}

#[test]
fn dca_ge_mnasnet0_5_matches_reference() {
    check_mnasnet("dca_ge_mnasnet0_5");
}

#[test]
fn cbam_mnasnet1_0_matches_reference() {
    check_mnasnet("cbam_mnasnet1_0");
}

#[test]
fn dca_cbam_mnasnet1_0_matches_reference() {
    check_mnasnet("dca_cbam_mnasnet1_0");
}
