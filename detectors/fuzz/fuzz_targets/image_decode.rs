//! Image decoding (the loader's `decode_bytes`, PNG and JPEG): any bytes decode to an RGB image within the
//! pixel limit, or are refused with an error naming the file; never a panic or an allocation past the limit.
#![no_main]

use std::path::Path;

use attndet_detectors::data::loader::decode_bytes;
use libfuzzer_sys::fuzz_target;

/// 4 megapixels: a 12 MB RGB buffer at most, inside the fuzzer's memory limit.
const LIMIT: u64 = 1 << 22;

fuzz_target!(|data: &[u8]| {
    match decode_bytes(data, Path::new("fuzz.img"), LIMIT) {
        Ok(img) => {
            let (w, h) = img.dimensions();
            assert!(u64::from(w) * u64::from(h) <= LIMIT, "{w}x{h} over the limit");
            assert_eq!(img.as_raw().len(), w as usize * h as usize * 3);
        }
        Err(e) => assert!(e.to_string().contains("fuzz.img"), "unnamed error: {e}"),
    }
});
