//! The reference table (`../shared/reference/backbones.md`) for the mobile and SDA networks, through the zoo:
//! exact parameter counts (PyTorch's `model.parameters()`) and FLOPs within 1% of DCANet's `flops_counter.py`
//! at 224x224, 1000 classes. Figures copied from `backbone_flops.json`.

use attndet_backbones::BackboneArch;
use attndet_backbones::cost::parameter_count;
use burn::backend::Flex;

type B = Flex;

/// (zoo name, parameters, ptflops FLOPs). The plain `res2net50` and `pyconvresnet50` have no row in the table:
/// their figures are printed by `python3 backbones/scripts/mobile_parity.py --dcanet <DCANet> --sda <SDA-xNet>`
/// (the reference models counted with DCANet's `flops_counter.py`).
const TABLE: [(&str, usize, u64); 16] = [
    ("mobilenet_v2", 3_504_872, 320_236_288),
    ("se_mobilenet_v2", 3_563_492, 320_865_724),
    ("dca_se_mobilenet_v2", 3_645_086, 320_946_788),
    ("ge_mobilenet_v2", 3_504_872, 320_808_608),
    ("dca_ge_mobilenet_v2", 3_586_483, 320_891_160),
    ("eca_mobilenet_v2", 3_504_903, 320_808_608),
    ("sk_mobilenet_v2", 5_277_248, 354_155_704),
    ("dca_sk_mobilenet_v2", 5_911_786, 354_807_844),
    ("cbam_mobilenet_v2", 3_565_192, 323_768_760),
    ("dca_cbam_mobilenet_v2", 3_646_176, 342_413_368),
    ("sda_resnet86", 27_219_880, 3_922_097_856),
    ("sda_se_resnet86", 49_130_808, 6_768_198_992),
    ("sda_res2net86", 45_254_544, 6_997_972_112),
    ("sda_pyconvresnet86", 43_331_176, 6_266_922_688),
    ("res2net50", 25_699_120, 4_292_753_776),
    ("pyconvresnet50", 24_847_720, 3_856_392_704),
];

#[test]
fn parameters_exact_and_flops_within_one_percent() {
    let device = Default::default();
    for (name, params, flops) in TABLE {
        let arch = BackboneArch::parse(name).unwrap();
        assert_eq!(arch.name(), name);
        let model = arch.build::<B>(&device).unwrap();
        let cost = model.cost(224, 224);
        assert_eq!(parameter_count(&model), params, "{name}");
        assert_eq!(
            cost.params, params,
            "{name}: cost rows must add up to the parameter count"
        );
        let rel = (cost.flops as f64 - flops as f64).abs() / flops as f64;
        eprintln!(
            "{name}: {} FLOPs vs {flops} ({:+.3}%)",
            cost.flops,
            (cost.flops as f64 / flops as f64 - 1.0) * 100.0
        );
        assert!(
            rel < 0.01,
            "{name}: {} FLOPs vs reference {flops} ({:.3}%)",
            cost.flops,
            rel * 100.0
        );
    }
}

#[test]
fn names_outside_the_built_variants_are_refused_with_a_reason() {
    for name in ["xx_mobilenet_v2", "sk_mnasnet1_0"] {
        let err = BackboneArch::parse(name).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("prefixes"), "{err}");
    }
    for name in ["sda_res2net50", "res2net101", "pyconvresnet86"] {
        let err = BackboneArch::parse(name).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("sda_pyconvresnet86"), "{err}");
    }
}

/// MnasNet parameter counts at every width, from `backbone_state_dicts.json` (reference models built with 1000
/// classes), and the FLOPs of the 1.0 models from `backbone_flops.json`.
#[test]
fn mnasnet_parameters_exact_at_every_width_and_flops_within_one_percent() {
    let params: [(&str, [usize; 4]); 7] = [
        ("", [2_220_824, 3_170_656, 4_383_312, 6_279_432]),
        ("se_", [2_230_860, 3_192_840, 4_421_688, 6_342_431]),
        ("dca_se_", [2_237_694, 3_206_145, 4_443_074, 6_376_171]),
        ("ge_", [2_220_824, 3_170_656, 4_383_312, 6_279_432]),
        ("dca_ge_", [2_246_968, 3_227_808, 4_481_136, 6_443_264]),
        ("cbam_", [2_242_006, 3_215_741, 4_460_342, 6_407_744]),
        ("dca_cbam_", [2_258_316, 3_251_096, 4_520_440, 6_506_959]),
    ];
    let flops_1_0 = [
        330_127_232u64,
        330_621_752,
        330_644_757,
        330_585_088,
        330_684_280,
        332_488_880,
        348_016_602,
    ];
    let device = Default::default();
    for ((prefix, counts), flops) in params.into_iter().zip(flops_1_0) {
        for (width, count) in ["0_5", "0_75", "1_0", "1_3"].into_iter().zip(counts) {
            let name = format!("{prefix}mnasnet{width}");
            let arch = BackboneArch::parse(&name).unwrap();
            assert_eq!(arch.name(), name);
            let model = arch.build::<B>(&device).unwrap();
            assert_eq!(parameter_count(&model), count, "{name}");
            let cost = model.cost(224, 224);
            assert_eq!(cost.params, count, "{name}: rows");
            if width == "1_0" {
                let rel = (cost.flops as f64 - flops as f64).abs() / flops as f64;
                eprintln!(
                    "{name}: {} FLOPs vs {flops} ({:+.3}%)",
                    cost.flops,
                    (cost.flops as f64 / flops as f64 - 1.0) * 100.0
                );
                assert!(rel < 0.01, "{name}: {} FLOPs vs {flops}", cost.flops);
            }
        }
    }
}
