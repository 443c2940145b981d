//! Polygon rasterization (pycocotools' `rleFrPoly`) of arbitrary coordinates within one image size of the
//! image (the extent the dataset and results loaders admit; beyond it rasterizing needs memory in proportion to
//! the coordinates), NaN included: never a panic, and the RLE always covers exactly `h * w` pixels.
#![no_main]

use attndet_coco::mask::fr_poly;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (h, w) = (data[0] as u32 % 48 + 1, data[1] as u32 % 48 + 1);
    let xy: Vec<f64> = data[2..]
        .chunks_exact(8)
        .take(64)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .filter(|v| v.is_nan() || (-48.0..=96.0).contains(v))
        .collect();
    let rle = fr_poly(&xy, h, w);
    assert_eq!(rle.counts_sum(), h as u64 * w as u64);
    let bits = rle.decode().expect("a rasterized polygon decodes");
    assert_eq!(bits.len(), (h * w) as usize);
});
