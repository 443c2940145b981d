//! The reference table (`../shared/reference/backbones.md`): exact parameter counts and FLOPs within 1% of
//! DCANet's `flops_counter.py` at 224x224, 1000 classes. Building a model only records its init closures, so
//! the counts are cheap; only the FLOPs tally materialises weights.

use attndet_backbones::mobile_layers::parameter_count;
use attndet_backbones::mobilenet_v2::{MobileAttention, MobileNetV2Config};
use burn::backend::Flex;

type B = Flex;

/// (attention, parameters, ptflops FLOPs) copied from the reference table / `backbone_flops.json`.
const MOBILENET_V2: [(MobileAttention, usize, u64); 6] = [
    (MobileAttention::None, 3_504_872, 320_236_288),
    (MobileAttention::Se, 3_563_492, 320_865_724),
    (MobileAttention::DcaSe, 3_645_086, 320_946_788),
    (MobileAttention::Ge, 3_504_872, 320_808_608),
    (MobileAttention::DcaGe, 3_586_483, 320_891_160),
    (MobileAttention::Eca, 3_504_903, 320_808_608),
];

#[test]
fn mobilenet_v2_parameters_and_flops_match_the_reference_table() {
    let device = Default::default();
    for (attention, params, flops) in MOBILENET_V2 {
        let config = MobileNetV2Config {
            attention,
            num_classes: 1000,
        };
        let model = config.init::<B>(&device);
        assert_eq!(parameter_count(&model), params, "{}", config.name());
        let ours = model.flops([224, 224]);
        let rel = (ours as f64 - flops as f64).abs() / flops as f64;
        assert!(
            rel < 0.01,
            "{}: {ours} FLOPs vs reference {flops} ({:.3}%)",
            config.name(),
            rel * 100.0
        );
    }
}

#[test]
fn sda_parameters_and_flops_match_the_reference_table() {
    use attndet_backbones::sda::{SdaConfig, SdaVariant};
    let device = Default::default();
    for (variant, params, flops) in [
        (SdaVariant::ResNet, 27_219_880, 3_922_097_856u64),
        (SdaVariant::SeResNet, 49_130_808, 6_768_198_992),
    ] {
        let config = SdaConfig::depth86(variant, 1000);
        let model = config.init::<B>(&device);
        assert_eq!(parameter_count(&model), params, "{}", config.name());
        let ours = model.flops([224, 224]);
        let rel = (ours as f64 - flops as f64).abs() / flops as f64;
        assert!(
            rel < 0.01,
            "{}: {ours} FLOPs vs reference {flops} ({:.3}%)",
            config.name(),
            rel * 100.0
        );
    }
}
