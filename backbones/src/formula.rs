//! Deterministic, formula-defined weights, shared with `scripts/resnet_parity.py`.
//!
//! Parity tests cannot ship real checkpoints (hundreds of MB) and CI has no Python: both sides instead fill
//! every tensor of a model from [`value`], a function of the tensor's reference key and the element's
//! row-major index (PyTorch layout), and compare outputs. [`checkpoint_bytes`] writes such a checkpoint as a
//! PyTorch-named safetensors file, which imports through a family's key map exactly like a real one.

use safetensors::tensor::{Dtype, TensorView};

/// FNV-1a (32-bit) of `s`.
pub fn fnv1a32(s: &str) -> u32 {
    s.bytes()
        .fold(0x811c_9dc5, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// A hash of `(h, i)` mapped to `[-1, 1)`: integer mixing (exact in every language).
pub fn unit(h: u32, i: usize) -> f64 {
    let mut x = h ^ (i as u32).wrapping_mul(0x9e37_79b1);
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^= x >> 16;
    f64::from(x) / 2_147_483_648.0 - 1.0
}

/// Element `i` of tensor `key` of shape `shape` (PyTorch layout), `offset + scale * unit(fnv1a32(key), i)`:
/// BatchNorm means in [-0.1, 0.1] and variances in [0.2, 1.0], biases in [-0.05, 0.05], weights with fan-in > 1
/// of variance `1 / fan_in`, everything else (norm scales, mixing weights) in [0.8, 1.2].
pub fn value(key: &str, shape: &[usize], i: usize) -> f64 {
    let fan_in: usize = shape.iter().skip(1).product();
    let (offset, scale) = if key.ends_with("running_mean") {
        (0.0, 0.1)
    } else if key.ends_with("running_var") {
        (0.6, 0.4)
    } else if key.ends_with("bias") {
        (0.0, 0.05)
    } else if shape.len() >= 2 && fan_in > 1 {
        (0.0, (3.0 / fan_in as f64).sqrt())
    } else {
        (1.0, 0.2)
    };
    offset + scale * unit(fnv1a32(key), i)
}

/// A safetensors file holding `keys` (reference names and PyTorch shapes) filled by [`value`]
/// (`num_batches_tracked` counters as int64 zeros).
pub fn checkpoint_bytes(keys: &[(String, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = keys
        .iter()
        .map(|(k, shape)| {
            if k.ends_with("num_batches_tracked") {
                return (k.clone(), shape.clone(), 0i64.to_le_bytes().to_vec(), Dtype::I64);
            }
            let n: usize = shape.iter().product();
            let bytes = (0..n)
                .flat_map(|i| (value(k, shape, i) as f32).to_le_bytes())
                .collect();
            (k.clone(), shape.clone(), bytes, Dtype::F32)
        })
        .collect();
    let views = data.iter().filter_map(|(k, shape, bytes, dtype)| {
        TensorView::new(*dtype, shape.clone(), bytes)
            .ok()
            .map(|v| (k.clone(), v))
    });
    // Serialising in-memory views of consistent sizes cannot fail.
    safetensors::serialize(views, None).unwrap_or_default()
}

/// The formula input image batch: element `i` (row-major) is `sin(0.37 i + 0.1)`.
pub fn input_values(len: usize) -> Vec<f32> {
    (0..len).map(|i| (0.37 * i as f64 + 0.1).sin() as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_by_hand() {
        // FNV-1a of "" is the offset basis; of "a": (0x811c9dc5 ^ 0x61) * 0x01000193 mod 2^32 = 0xe40c292c.
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        // unit(0, 0): x = 0 stays 0 through the mixing -> 0 / 2^31 - 1 = -1.
        assert_eq!(unit(0, 0), -1.0);
        // unit(1, 0): x = 1; x ^= 0; x *= 0x85ebca6b; x ^= x >> 13 ... computed by the Python script's `unit`
        // as -0.3648022753186524 (printed with repr).
        assert!((unit(1, 0) + 0.3648022753186524).abs() < 1e-15, "{}", unit(1, 0));
        assert!((0.2..=1.0).contains(&value("bn1.running_var", &[64], 5)));
        // A 3x3 conv of 64 inputs: fan-in 576 -> |w| <= sqrt(3 / 576).
        assert!(value("conv.weight", &[64, 64, 3, 3], 7).abs() <= (3.0f64 / 576.0).sqrt());
    }

    #[test]
    fn empty_checkpoint_is_a_valid_file() {
        let bytes = checkpoint_bytes(&[]);
        assert!(bytes.len() >= 8);
        assert!(
            safetensors::SafeTensors::deserialize(&bytes)
                .unwrap()
                .names()
                .is_empty()
        );
    }
}
