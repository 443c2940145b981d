//! Shared by the mobile and SDA parity tests: the deterministic weight formula of
//! `backbones/scripts/mobile_parity.py`, fixture reading, and loading formula weights through a key map.
#![allow(dead_code)]

use attndet_backbones::checkpoint::{KeyMap, load_torch_safetensors_bytes};
use burn::backend::Flex;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use serde::Deserialize;

pub type B = Flex;

/// One fixture written by `mobile_parity.py`.
#[derive(Debug, Deserialize)]
pub struct Fixture {
    pub model: String,
    pub input_shape: [usize; 4],
    pub num_classes: usize,
    /// The reference model's state_dict keys and shapes, in order.
    pub state_dict: Vec<(String, Vec<usize>)>,
    pub logits: Vec<f64>,
    pub levels: Vec<LevelSummary>,
}

/// Summary of one feature level.
#[derive(Debug, Deserialize)]
pub struct LevelSummary {
    pub shape: Vec<usize>,
    pub mean: f64,
    pub mean_abs: f64,
}

pub fn read_fixture(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Seed of a key: sum of byte * (position + 1), mod 9973.
fn key_seed(key: &str) -> u64 {
    key.bytes()
        .enumerate()
        .map(|(j, b)| b as u64 * (j as u64 + 1))
        .sum::<u64>()
        % 9973
}

/// `n` values in [-1, 1) from a 32-bit integer hash of (index, seed).
pub fn hash_uniform(n: usize, seed: u64) -> Vec<f64> {
    const MASK: u64 = (1 << 32) - 1;
    (0..n as u64)
        .map(|i| {
            let mut h = (i.wrapping_mul(2_654_435_761) + seed * 97_531) & MASK;
            h ^= h >> 15;
            h = (h * 2_246_822_519) & MASK;
            h ^= h >> 13;
            h as f64 / 4_294_967_296.0 * 2.0 - 1.0
        })
        .collect()
}

/// The value of tensor `key` (PyTorch layout), as the Python script computes it.
pub fn formula_value(key: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let u = hash_uniform(n, key_seed(key));
    let name = key.rsplit('.').next().unwrap_or("");
    let fan_in = if shape.len() >= 2 { n / shape[0] } else { 1 };
    u.into_iter()
        .map(|u| {
            (match name {
                "running_var" => 1.0 + 0.3 * u,
                "running_mean" => 0.1 * u,
                "weight" | "p1" | "p2" if shape.len() <= 1 => 1.0 + 0.2 * u,
                _ if shape.len() <= 1 => 0.1 * u,
                _ => u * (3.0 / fan_in as f64).sqrt(),
            }) as f32
        })
        .collect()
}

/// The fixture's input.
pub fn input(shape: [usize; 4]) -> Tensor<B, 4> {
    let n = shape.iter().product();
    let data: Vec<f32> = hash_uniform(n, 12345).into_iter().map(|v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// A safetensors file (in memory) holding every float tensor of the reference state_dict, formula-valued.
pub fn formula_safetensors(keys: &[(String, Vec<usize>)]) -> Vec<u8> {
    named_formula_safetensors(
        keys.iter()
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .map(|(k, s)| (k.clone(), k.clone(), s.clone())),
    )
}

/// A safetensors file (in memory) of F32 tensors `(name in the file, key whose formula values it holds, shape)`.
pub fn named_formula_safetensors(tensors: impl Iterator<Item = (String, String, Vec<usize>)>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, key, shape) in tensors {
        let start = data.len();
        for v in formula_value(&key, &shape) {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name,
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    bytes
}

/// Every level of `model` on a `batch x 3 x hw x hw` input has the shape its spec says (every strided layer pads
/// "same": `hw / stride` exactly for these sizes), at strides 4/8/16/32 named c2..c5.
pub fn check_levels<M: attndet_backbones::Backbone<B>>(model: &M, batch: usize, hw: usize) {
    let x = Tensor::<B, 4>::zeros([batch, 3, hw, hw], &Default::default());
    let levels = model.forward_features(x);
    let specs = model.feature_specs();
    assert_eq!(levels.len(), specs.len());
    for (level, spec) in levels.iter().zip(&specs) {
        assert_eq!(
            level.dims(),
            [batch, spec.channels, hw / spec.stride, hw / spec.stride],
            "{}",
            spec.name
        );
    }
    let strides: Vec<usize> = specs.iter().map(|s| s.stride).collect();
    assert_eq!(strides, [4, 8, 16, 32]);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["c2", "c3", "c4", "c5"]);
}

/// Load formula weights into `model` through the zoo's strict loader and `key_map`: every tensor of the model
/// must be found with its shape and every reference tensor used.
pub fn load_formula<M: ModuleSnapshot<B>>(model: &mut M, fixture: &Fixture, key_map: KeyMap) {
    let bytes = formula_safetensors(&fixture.state_dict);
    let origin = std::path::Path::new("formula.safetensors");
    let summary = load_torch_safetensors_bytes(model, bytes, origin, key_map, &fixture.model)
        .unwrap_or_else(|e| panic!("{}: {e}", fixture.model));
    let reference_tensors = fixture
        .state_dict
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .count();
    assert_eq!(summary.applied, reference_tensors, "{}", fixture.model);
}

/// Largest absolute difference relative to the largest reference magnitude.
pub fn relative_error(ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    diff / scale
}

/// Compare one feature level with its summary: shape exact, mean and mean |x| to `tol` relative to mean |x|.
pub fn check_level(name: &str, level: Tensor<B, 4>, reference: &LevelSummary, tol: f64) {
    assert_eq!(level.dims().to_vec(), reference.shape, "{name}: level shape");
    let values: Vec<f32> = level.into_data().to_vec().unwrap();
    let n = values.len() as f64;
    let mean = values.iter().map(|v| *v as f64).sum::<f64>() / n;
    let mean_abs = values.iter().map(|v| v.abs() as f64).sum::<f64>() / n;
    let scale = reference.mean_abs;
    assert!(
        (mean - reference.mean).abs() / scale < tol,
        "{name}: mean {mean} vs {}",
        reference.mean
    );
    assert!(
        (mean_abs - reference.mean_abs).abs() / scale < tol,
        "{name}: mean|x| {mean_abs} vs {}",
        reference.mean_abs
    );
}
