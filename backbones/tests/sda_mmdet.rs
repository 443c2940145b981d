//! Importing SDA-xNet's mmdetection detection backbones (`mmdetection/mmdet/models/backbones/sda*.py`, depth
//! 86): a whole detector checkpoint (`backbone.*` next to neck and head tensors) loads into the zoo's SDA
//! networks with no classifier head, and the C2..C5 features match the authors' detection code.
//!
//! Fixtures: `python3 backbones/scripts/sda_mmdet_fixtures.py --sda <SDA-xNet checkout>` (the authors' backbone
//! classes on stand-ins for the mmcv helpers they import; state_dict layout and feature summaries at 64x64).

#[path = "mobile_common/mod.rs"]
mod mobile_common;

use attndet_backbones::{AnyBackbone, Backbone, BackboneArch};
use mobile_common::*;

const TOLERANCE: f64 = 1e-3;

/// Tensors of a detector checkpoint besides its backbone (mmdetection names), small shapes.
const DETECTOR_PARTS: [(&str, [usize; 4]); 3] = [
    ("neck.lateral_convs.0.conv.weight", [4, 4, 1, 1]),
    ("neck.fpn_convs.0.conv.weight", [4, 4, 3, 3]),
    ("rpn_head.rpn_cls.weight", [3, 4, 1, 1]),
];

/// A safetensors checkpoint: every backbone tensor under `prefix` (valued by the formula of its backbone key, as
/// the script sets it), plus neck and head tensors when `detector`.
fn detector_checkpoint(fixture: &Fixture, prefix: &str, detector: bool) -> Vec<u8> {
    let backbone = fixture
        .state_dict
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, s)| (format!("{prefix}{k}"), k.clone(), s.clone()));
    let others = DETECTOR_PARTS
        .iter()
        .filter(|_| detector)
        .map(|(k, s)| (k.to_string(), k.to_string(), s.to_vec()));
    named_formula_safetensors(backbone.chain(others))
}

/// A checkpoint file in its own temp dir, removed when dropped.
struct TempFile {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(name: &str, bytes: &[u8]) -> TempFile {
    let dir = std::env::temp_dir().join(format!("attndet-sda-mmdet-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    TempFile { dir, path }
}

fn build(name: &str) -> (BackboneArch, AnyBackbone<B>) {
    let arch = BackboneArch::parse(name).unwrap();
    let model = arch.build_lazy::<B>(&Default::default()).unwrap();
    (arch, model)
}

fn check(name: &str) {
    let fixture = read_fixture(&format!("sda_mmdet_{name}.json"));
    let path = write(
        &format!("{name}_detector.safetensors"),
        &detector_checkpoint(&fixture, "backbone.", true),
    );
    let (arch, mut model) = build(name);
    let summary = model
        .load_backbone_weights(&arch, &path)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let backbone_tensors = fixture
        .state_dict
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .count();
    assert_eq!(summary.applied, backbone_tensors, "{name}");
    let levels = model.forward_features(input(fixture.input_shape));
    assert_eq!(levels.len(), 4);
    for (i, (level, reference)) in levels.into_iter().zip(&fixture.levels).enumerate() {
        check_level(&format!("{name} C{}", i + 2), level, reference, TOLERANCE);
    }
    // The classification loader stays strict: the head is missing.
    let (arch, mut model) = build(name);
    let message = model.load_weights(&arch, &path).unwrap_err().to_string();
    assert!(message.contains("fc.weight"), "{message}");
}

#[test]
fn sda_resnet86_detector_checkpoint_loads_and_matches() {
    check("sda_resnet86");
}

#[test]
fn sda_se_resnet86_detector_checkpoint_loads_and_matches() {
    check("sda_se_resnet86");
}

#[test]
fn sda_res2net86_detector_checkpoint_loads_and_matches() {
    check("sda_res2net86");
}

#[test]
fn a_bare_backbone_state_dict_loads_too_and_a_wrong_variant_is_refused_by_name() {
    let fixture = read_fixture("sda_mmdet_sda_resnet86.json");
    // The backbone's own state_dict (no `backbone.` prefix, nothing else): loads, the head left as built.
    let path = write(
        "sda_resnet86_backbone.safetensors",
        &detector_checkpoint(&fixture, "", false),
    );
    let (arch, mut model) = build("sda_resnet86");
    model.load_backbone_weights(&arch, &path).unwrap();
    // Extra tensors without the `backbone.` prefix are not recognised as a detector's: named.
    let path = write(
        "sda_resnet86_mixed.safetensors",
        &detector_checkpoint(&fixture, "", true),
    );
    let (arch, mut model) = build("sda_resnet86");
    let message = model.load_backbone_weights(&arch, &path).unwrap_err().to_string();
    assert!(message.contains("neck.lateral_convs.0.conv.weight"), "{message}");
    // SDA-ResNet's detection weights into SDA-Res2Net: the split convolutions are missing, by name.
    let path = write(
        "wrong_variant_detector.safetensors",
        &detector_checkpoint(&fixture, "backbone.", true),
    );
    let (arch, mut model) = build("sda_res2net86");
    let message = model.load_backbone_weights(&arch, &path).unwrap_err().to_string();
    assert!(
        message.contains("sda_res2net86") && message.contains("stages.0.layers.0.res2.convs.0.weight"),
        "{message}"
    );
    assert!(
        !message.contains("rpn_head"),
        "detector parts are not reported: {message}"
    );
}
