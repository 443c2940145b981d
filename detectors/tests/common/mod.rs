//! Shared test helpers: the LCG of `detectors/scripts/make_fixtures.py` and fixture loading.
#![allow(dead_code)]

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::prelude::*;

pub type Cpu = Flex;
pub const DEV: FlexDevice = FlexDevice;

/// `x <- (1664525 x + 1013904223) mod 2^32`, `uniform = x / 2^32` (same as the Python script).
pub struct Lcg(u32);

impl Lcg {
    pub fn new(seed: u32) -> Self {
        Self(seed)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1664525).wrapping_add(1013904223);
        self.0
    }
    pub fn uniform(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next_u32() as f64 / 4294967296.0) as f32)
            .collect()
    }
    /// `n` boxes in `[0, size)`: `x1 = u size`, `w = 1 + v size / 3` (as the script's `boxes`).
    pub fn boxes(&mut self, n: usize, size: f32) -> Vec<[f32; 4]> {
        let u = self.uniform(4 * n);
        let third = (size as f64 / 3.0) as f32;
        u.chunks(4)
            .map(|c| {
                let (x1, y1) = (c[0] * size, c[1] * size);
                let (w, h) = (1.0 + c[2] * third, 1.0 + c[3] * third);
                [x1, y1, x1 + w, y1 + h]
            })
            .collect()
    }
}

/// RoIs `[batch, x1, y1, x2, y2]` from `boxes`, alternating between batch images 0 and 1.
pub fn rois_alternating(boxes: &[[f32; 4]]) -> Vec<f32> {
    boxes
        .iter()
        .enumerate()
        .flat_map(|(i, b)| [(i % 2) as f32, b[0], b[1], b[2], b[3]])
        .collect()
}

pub fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect("fixture json")
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

pub fn ints(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect()
}

pub fn tensor2<B: Backend>(rows: &[[f32; 4]], device: &B::Device) -> Tensor<B, 2> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), 4]), device)
}

pub fn vecf<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

pub fn veci<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

pub fn vecb<B: Backend, const D: usize>(t: Tensor<B, D, Bool>) -> Vec<bool> {
    t.into_data().iter::<bool>().collect()
}

#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w} (tol {tol})"
        );
    }
}
