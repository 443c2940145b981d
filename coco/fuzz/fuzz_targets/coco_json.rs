//! COCO annotation files: any bytes either load into a validated dataset or are refused with an error; a
//! loaded dataset's masks rasterize without a panic (pycocotools' `annToRLE`) whenever its images are small
//! enough to rasterize here.
#![no_main]

use attndet_coco::{CocoDataset, CocoJson};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<CocoJson>(data) else {
        return;
    };
    let Ok(ds) = CocoDataset::from_json(json, "fuzz.json") else {
        return;
    };
    for ann in ds.annotations() {
        let Some(img) = ds.image(ann.image_id) else {
            panic!("a validated annotation names a missing image");
        };
        // rasterizing allocates h * w: keep the fuzzer's memory bounded
        if (img.height as u64) * (img.width as u64) <= 1 << 16 {
            if let Ok(rle) = ds.ann_to_rle(ann) {
                assert_eq!(rle.counts_sum(), img.height as u64 * img.width as u64);
            }
        }
    }
    let _ = ds.sorted_image_ids();
});
