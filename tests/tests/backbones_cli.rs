//! End-to-end tests of `attndet flops`, `attndet convert` and `attndet classify`.

use std::path::Path;

use attndet_backbones::checkpoint::reference_keys;
use attndet_backbones::resnet::renames;
use attndet_backbones::{BackboneArch, formula};
use attndet_tests::{TempDir, run, workspace_root};
use burn::backend::Flex;
use serde_json::Value;

fn stdout_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

/// A resnet18 checkpoint with PyTorch naming (safetensors), filled by the parity formula.
fn formula_resnet18(path: &Path) {
    let arch = BackboneArch::parse("resnet18").unwrap();
    let BackboneArch::ResNet(cfg) = &arch else {
        unreachable!()
    };
    let model = arch.build_lazy::<Flex>(&Default::default()).unwrap();
    let bytes = formula::checkpoint_bytes(&reference_keys(&model, &renames(cfg)));
    std::fs::write(path, bytes).unwrap();
}

/// The 48x40 pattern image of the classify fixture: pixel (x, y, c) = (7x + 13y + 50c) mod 256.
fn pattern_png(path: &Path) {
    let img = image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([0, 1, 2].map(|c| ((x * 7 + y * 13 + c * 50) % 256) as u8))
    });
    img.save(path).unwrap();
}

#[test]
fn flops_json_matches_the_reference_table() {
    // backbones.md: resnet50 25,557,032 parameters, 4,121,924,096 MACs at 224x224 (DCANet flops_counter.py).
    let doc = stdout_json(&run(&["flops", "--model", "resnet50", "--json"]));
    assert_eq!(doc["params"], 25_557_032);
    assert_eq!(doc["flops"], 4_121_924_096u64);
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers[0]["name"], "conv1");
    let sum: u64 = layers.iter().map(|l| l["flops"].as_u64().unwrap()).sum();
    assert_eq!(sum, 4_121_924_096);
    // dca_cbam_resnet50: 30,900,376 parameters.
    let doc = stdout_json(&run(&[
        "flops",
        "--model",
        "dca_cbam_resnet50",
        "--input-size",
        "800",
        "1216",
        "--json",
    ]));
    assert_eq!(doc["params"], 30_900_376);
    assert_eq!(doc["input"], serde_json::json!([3, 800, 1216]));
}

#[test]
fn flops_table_and_bad_input() {
    let out = run(&["flops", "--model", "eca_resnet50_k3557"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // ECANet eca_resnet50(k_size=[3,5,5,7]): 25,557,112 parameters.
    assert!(text.contains("layer4.2") && text.contains("25557112"), "{text}");
    let out = run(&["flops", "--model", "resnet51"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resnet51"));
    let out = run(&["flops", "--model", "resnet18", "--input-size", "0", "32"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn convert_then_classify_matches_pytorch() {
    let dir = TempDir::new("backbones-cli");
    let torch_named = dir.path().join("resnet18_torch.safetensors");
    let ours = dir.path().join("resnet18.safetensors");
    let img = dir.path().join("pattern.png");
    formula_resnet18(&torch_named);
    pattern_png(&img);
    let out = run(&[
        "convert",
        "--model",
        "resnet18",
        "--from",
        torch_named.to_str().unwrap(),
        "--out",
        ours.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ours.is_file());

    let doc = stdout_json(&run(&[
        "classify",
        "--model",
        "resnet18",
        "--checkpoint",
        ours.to_str().unwrap(),
        "--no-resize",
        "--topk",
        "3",
        "--json",
        img.to_str().unwrap(),
    ]));
    // fixtures/resnet_parity/classify_resnet18.json: the authors' resnet18 with the same formula weights on
    // the same image, ImageNet-normalised in PyTorch (scripts/resnet_parity.py).
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root().join("backbones/tests/fixtures/resnet_parity/classify_resnet18.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let logits = doc["logits"].as_array().unwrap();
    assert_eq!(logits.len(), 1000);
    let scale = fixture["max_abs"].as_f64().unwrap();
    for (got, want) in logits.iter().zip(fixture["first_logits"].as_array().unwrap()) {
        let (got, want) = (got.as_f64().unwrap(), want.as_f64().unwrap());
        assert!((got - want).abs() <= 1e-3 * scale, "{got} vs {want}");
    }
    let top = doc["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["index"], fixture["argmax"]);
    assert!(top[0]["logit"].as_f64() >= top[1]["logit"].as_f64());
    assert_eq!(top[0]["label"], format!("class_{}", fixture["argmax"]));

    // Two images: a list; the default preprocessing (resize 256, crop 224) also runs.
    let doc = stdout_json(&run(&[
        "classify",
        "--model",
        "resnet18",
        "--checkpoint",
        ours.to_str().unwrap(),
        "--json",
        img.to_str().unwrap(),
        img.to_str().unwrap(),
    ]));
    assert_eq!(doc.as_array().unwrap().len(), 2);
    assert_eq!(doc[1]["top"].as_array().unwrap().len(), 5);

    // Table view.
    let out = run(&[
        "classify",
        "--model",
        "resnet18",
        "--checkpoint",
        ours.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("class_"));

    // Wrong architecture: exit 2 with the keys named.
    let out = run(&[
        "classify",
        "--model",
        "resnet34",
        "--checkpoint",
        ours.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer1.2.conv1.weight") && err.contains("missing"),
        "{err}"
    );
    let out = run(&[
        "convert",
        "--model",
        "se_resnet18",
        "--from",
        torch_named.to_str().unwrap(),
        "--out",
        dir.path().join("x.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("attn.fc1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("x.safetensors").exists());

    // Missing image: exit 2, named.
    let out = run(&[
        "classify",
        "--model",
        "resnet18",
        "--checkpoint",
        ours.to_str().unwrap(),
        "nope.png",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.png"));
}

#[test]
fn convert_missing_input_exits_2() {
    let out = run(&[
        "convert",
        "--model",
        "resnet18",
        "--from",
        "/nonexistent.pth",
        "--out",
        "/tmp/never.safetensors",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.pth"));
}
