//! Compressed RLE strings (pycocotools' LEB128-like encoding): any string at any small size either decodes to
//! a valid RLE, which re-encodes to a string that decodes to the same RLE, or is refused with an error.
#![no_main]

use attndet_coco::mask::{rle_from_string, rle_to_string};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (h, w) = (data[0] as u32 % 64, data[1] as u32 % 64);
    let Ok(s) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let Ok(rle) = rle_from_string(s, h, w) else {
        return;
    };
    if rle.validate().is_ok() {
        let again = rle_from_string(&rle_to_string(&rle), h, w).expect("our own string decodes");
        assert_eq!(again.decode().unwrap(), rle.decode().unwrap());
        assert!(rle.area() as u64 <= rle.counts_sum());
    }
});
