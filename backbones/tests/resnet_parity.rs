//! Numerical parity with the authors' PyTorch code (ma-xu/DCANet, BangguWu/ECANet, torchvision): one model of
//! every attention type and every DCA type.
//!
//! `scripts/resnet_parity.py` built each reference model, set every tensor of its state_dict from a formula of
//! the key and element index (BatchNorm statistics included), and recorded the eval-mode logits of a fixed
//! 2x3x64x64 input in `fixtures/resnet_parity/*.json`. Here the same formula fills a PyTorch-named safetensors
//! file for our model's reference keys (the exported names, checked against the reference key lists by
//! `resnet_keys.rs`), which is imported through the architecture's key map, strictly, as a real checkpoint
//! would be. The logits must agree to 1e-3 relative (of the largest logit).

use std::path::Path;

use attndet_backbones::checkpoint::{load_torch_safetensors_bytes, reference_keys};
use attndet_backbones::formula;
use attndet_backbones::resnet::renames;
use attndet_backbones::{BackboneArch, Classifier};
use burn::backend::Flex;
use burn::prelude::*;

type B = Flex;

fn input(shape: [usize; 4]) -> Tensor<B, 4> {
    let data = formula::input_values(shape.iter().product());
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

fn check(fixture_name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/resnet_parity")
        .join(fixture_name);
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture present"))
            .expect("fixture parses");
    let name = fixture["model"].as_str().expect("model");
    let arch = BackboneArch::parse(name).expect("zoo name");
    let BackboneArch::ResNet(cfg) = &arch else {
        panic!("{name} is a ResNet")
    };
    let mut model = arch.build_lazy::<B>(&Default::default()).expect("builds");
    let keys = reference_keys(&model, &renames(cfg));
    let bytes = formula::checkpoint_bytes(&keys);
    load_torch_safetensors_bytes(&mut model, bytes, &path, arch.key_map(), name)
        .unwrap_or_else(|e| panic!("strict import of the formula checkpoint: {e}"));

    let dims: Vec<usize> = fixture["input"]
        .as_array()
        .expect("input")
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let logits = model.forward_logits(input([dims[0], dims[1], dims[2], dims[3]]));
    let [n, classes] = logits.dims();
    let ours: Vec<f64> = logits
        .into_data()
        .to_vec::<f32>()
        .expect("f32")
        .iter()
        .map(|v| f64::from(*v))
        .collect();
    let scale = fixture["max_abs"].as_f64().expect("max_abs");
    assert!(scale > 1e-3, "{name}: degenerate reference logits");
    let mut worst: f64 = 0.0;
    for b in 0..n {
        let row = &ours[b * classes..(b + 1) * classes];
        let want: Vec<f64> = fixture["first_logits"][b]
            .as_array()
            .expect("row")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (i, w) in want.iter().enumerate() {
            worst = worst.max((row[i] - w).abs() / scale);
        }
        let sum: f64 = row.iter().sum();
        let sum_abs: f64 = row.iter().map(|v| v.abs()).sum();
        let weighted: f64 = row
            .iter()
            .enumerate()
            .map(|(i, v)| v * (0.1 * i as f64).sin())
            .sum();
        // Checksums over all classes: errors of 1e-3 * scale per logit could add up over 1000 classes.
        for (got, key) in [(sum, "sum"), (sum_abs, "sum_abs"), (weighted, "weighted_sum")] {
            let want = fixture[key][b].as_f64().expect("checksum");
            let rel = (got - want).abs() / (scale * classes as f64);
            worst = worst.max(rel);
        }
    }
    eprintln!("{name}: max relative error {worst:.2e} (of max |logit| {scale:.3})");
    assert!(
        worst < 1e-3,
        "{name}: logits differ from the reference by {worst:.2e} relative"
    );
}

macro_rules! parity {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(#[test] fn $test() { check($file); })*
    };
}

parity! {
    plain_resnet18 => "resnet18.json",
    torchvision_resnet50 => "torchvision_resnet50.json",
    se_resnet18 => "se_resnet18.json",
    eca_resnet50_k3557 => "eca_resnet50_k3557.json",
    cbam_resnet18 => "cbam_resnet18.json",
    gc_resnet18 => "gc_resnet18.json",
    ge_resnet50 => "ge_resnet50.json",
    sk_resnet50 => "sk_resnet50.json",
    dca_se_resnet50 => "dca_se_resnet50.json",
    dca_ge_resnet50 => "dca_ge_resnet50.json",
    dca_gc_resnet50 => "dca_gc_resnet50.json",
    dca_cbam_resnet50 => "dca_cbam_resnet50.json",
    dca_sk_resnet50 => "dca_sk_resnet50.json",
}
