//! End-to-end test of `attndet classify --explain`: DCA connection weights and SDA depth-attention weights
//! through the binary, table and JSON views.

use attndet_backbones::{AnyBackbone, BackboneArch};
use attndet_tests::{TempDir, run};
use burn::backend::Flex;
use serde_json::Value;

/// A 32x32 test image.
fn image(path: &std::path::Path) {
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([0, 1, 2].map(|c| ((x * 11 + y * 5 + c * 70) % 256) as u8))
    });
    img.save(path).unwrap();
}

/// Build `name` with fresh weights, save them in our format, return the model.
fn saved(name: &str, path: &std::path::Path) -> AnyBackbone<Flex> {
    let arch = BackboneArch::parse(name).unwrap();
    let model = arch.build::<Flex>(&Default::default()).unwrap();
    model.save_weights(path).unwrap();
    model
}

fn classify(
    model: &str,
    checkpoint: &std::path::Path,
    img: &std::path::Path,
    json: bool,
) -> std::process::Output {
    let mut args = vec![
        "classify",
        "--model",
        model,
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--no-resize",
        "--explain",
        img.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    let out = run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn explain_prints_dca_connection_weights_and_sda_depth_attention() {
    let dir = TempDir::new("explain-cli");
    let img = dir.path().join("img.png");
    image(&img);

    // DCA-SE MobileNetV2: one row per block after the first, with the weights of the saved checkpoint.
    let weights = dir.path().join("dca_se_mobilenet_v2.safetensors");
    let AnyBackbone::MobileNetV2(net) = saved("dca_se_mobilenet_v2", &weights) else {
        unreachable!()
    };
    let expected: Vec<(f32, f32)> = net.dca_connections().into_iter().skip(1).flatten().collect();
    assert_eq!(expected.len(), 16);
    let out = classify("dca_se_mobilenet_v2", &weights, &img, true);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc["explain"]["dca_connections"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, (alpha, beta)) in rows.iter().zip(&expected) {
        let (a, b) = (row["alpha"].as_f64().unwrap(), row["beta"].as_f64().unwrap());
        assert!(
            (a - *alpha as f64).abs() < 1e-6 && (b - *beta as f64).abs() < 1e-6,
            "{row}"
        );
        // computed in f32 by the binary: relative tolerance, since alpha + beta of random weights can be near
        // zero (a ratio of -223 was seen)
        let (ratio, expected_ratio) = (row["beta_ratio"].as_f64().unwrap(), b / (a + b));
        assert!(
            (ratio - expected_ratio).abs() <= 1e-4 * expected_ratio.abs().max(1.0),
            "{row}"
        );
    }
    assert_eq!(rows[0]["block"], 1);
    // The table view prints the same report.
    let out = classify("dca_se_mobilenet_v2", &weights, &img, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("explain:") && text.contains("beta_ratio"), "{text}");

    // SDA-ResNet-86: per stage, one weight per block (mean over channels), a softmax over depth.
    let weights = dir.path().join("sda_resnet86.safetensors");
    saved("sda_resnet86", &weights);
    let out = classify("sda_resnet86", &weights, &img, true);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = doc["explain"]["depth_attention"].as_array().unwrap();
    let lengths: Vec<usize> = stages.iter().map(|s| s.as_array().unwrap().len()).collect();
    assert_eq!(lengths, [5, 6, 12, 5]);
    for stage in stages {
        let sum: f64 = stage
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4, "weights of a stage sum to one: {sum}");
    }

    // A network without SDA or DCA says so.
    let weights = dir.path().join("mobilenet_v2.safetensors");
    saved("mobilenet_v2", &weights);
    let out = classify("mobilenet_v2", &weights, &img, false);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("has no SDA or DCA attention"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
