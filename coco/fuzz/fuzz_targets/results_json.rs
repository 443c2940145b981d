//! Results files against a fixed ground truth: any bytes are parsed or refused, and parsed results evaluate
//! (bbox and segm) without a panic, with every stat in [-1, 1].
#![no_main]

use attndet_coco::{CocoDataset, CocoJson, EvalParams, IouType, evaluate, parse_results};
use libfuzzer_sys::fuzz_target;

const GT: &str = r#"{"images": [{"id": 1, "width": 16, "height": 12}, {"id": 2, "width": 8, "height": 8}],
  "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
  "annotations": [
    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 6, 5], "area": 30, "iscrowd": 0,
     "segmentation": [[1, 1, 7, 1, 7, 6, 1, 6]]},
    {"id": 2, "image_id": 1, "category_id": 3, "bbox": [8, 2, 6, 8], "area": 48, "iscrowd": 1,
     "segmentation": {"size": [12, 16], "counts": [100, 20, 72]}},
    {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0,
     "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let gt_json: CocoJson = serde_json::from_str(GT).unwrap();
    let gt = CocoDataset::from_json(gt_json, "gt.json").unwrap();
    let Ok(dets) = parse_results(text, &gt, "fuzz.json") else {
        return;
    };
    for iou in [IouType::Bbox, IouType::Segm] {
        if let Ok(ev) = evaluate(&gt, &dets, &EvalParams::new(iou)) {
            assert!(
                ev.stats.iter().all(|s| (-1.0..=1.0).contains(s)),
                "{:?}",
                ev.stats
            );
        }
    }
});
