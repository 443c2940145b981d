//! The real COCO fixture (val2014, 100 images, the cocoapi demo's fake results) must reproduce pycocotools
//! 2.0.11's 12 stats bit for bit (`expected_stats.json` was written by pycocotools itself).

use attndet_coco::{CocoDataset, EvalParams, IouType, evaluate, load_results};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/coco");

fn expected(iou: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/expected_stats.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[iou]["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn check(iou_type: IouType, results: &str) {
    let gt = CocoDataset::load(format!("{FIXTURES}/instances_val2014_100.json")).unwrap();
    let dets = load_results(format!("{FIXTURES}/{results}"), &gt).unwrap();
    let ev = evaluate(&gt, &dets, &EvalParams::new(iou_type)).unwrap();
    let want = expected(&iou_type.to_string());
    for (i, (got, want)) in ev.stats.iter().zip(&want).enumerate() {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{iou_type} stat {i}: got {got:?}, pycocotools {want:?}"
        );
    }
    assert_eq!(ev.stats.len(), 12);
}

#[test]
fn bbox_stats_are_bit_identical() {
    check(IouType::Bbox, "instances_val2014_fakebbox100_results.json");
}

#[test]
fn segm_stats_are_bit_identical() {
    check(IouType::Segm, "instances_val2014_fakesegm100_results.json");
}

#[test]
fn proposal_recall_matches_pycocotools() {
    // `python3 coco/scripts/proposal_recall.py` (pycocotools 2.0.11, useCats=0, maxDets [100, 300, 1000]):
    // AR@100 = AR@300 = AR@1000 = 0.6780722891566265 (no image has more than 100 results).
    let gt = CocoDataset::load(format!("{FIXTURES}/instances_val2014_100.json")).unwrap();
    let dets = load_results(
        format!("{FIXTURES}/instances_val2014_fakebbox100_results.json"),
        &gt,
    )
    .unwrap();
    let ev = evaluate(&gt, &dets, &EvalParams::proposals()).unwrap();
    assert_eq!(
        ev.average_recall(),
        vec![
            (100, 0.6780722891566265),
            (300, 0.6780722891566265),
            (1000, 0.6780722891566265)
        ]
    );
}

#[test]
fn subsets_of_images_and_categories() {
    // Restricting to all GT images and categories explicitly changes nothing; restricting to one category
    // gives that category's AP (the per-category table's entry).
    let gt = CocoDataset::load(format!("{FIXTURES}/instances_val2014_100.json")).unwrap();
    let dets = load_results(
        format!("{FIXTURES}/instances_val2014_fakebbox100_results.json"),
        &gt,
    )
    .unwrap();
    let full = evaluate(&gt, &dets, &EvalParams::new(IouType::Bbox)).unwrap();
    let explicit = EvalParams {
        image_ids: Some(gt.sorted_image_ids()),
        category_ids: Some(gt.sorted_category_ids()),
        ..EvalParams::new(IouType::Bbox)
    };
    assert_eq!(evaluate(&gt, &dets, &explicit).unwrap().stats, full.stats);
    let person = EvalParams {
        category_ids: Some(vec![1]),
        ..EvalParams::new(IouType::Bbox)
    };
    let ev = evaluate(&gt, &dets, &person).unwrap();
    assert_eq!(ev.category_ids, vec![1]);
    assert_eq!(ev.stats[0], full.per_category_ap()[0].2);
}
