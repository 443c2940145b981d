//! Randomized parity with pycocotools 2.0.11: the fixtures were recorded by `coco/scripts/gen_parity.py`
//! (run from the repository root: `python3 coco/scripts/gen_parity.py`), and every number must match exactly.

use attndet_coco::eval::pairwise_mean;
use attndet_coco::mask::{bb_iou, fr_bbox, fr_poly, iou, merge, rle_from_string, rle_to_string};
use attndet_coco::{CocoDataset, CocoJson, EvalParams, IouType, Rle, evaluate, parse_results};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    serde_json::from_str(&std::fs::read_to_string(format!("{path}{name}")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect()
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[test]
fn evaluator_matches_pycocotools_on_random_cases() {
    let all = fixture("parity_eval.json");
    let cases = all["cases"].as_array().unwrap();
    assert!(cases.len() >= 100);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let iou_type: IouType = case["iou_type"].as_str().unwrap().parse().unwrap();
        let gt_json: CocoJson = serde_json::from_value(case["gt"].clone()).unwrap();
        let gt = CocoDataset::from_json(gt_json, format!("case {i}")).unwrap();
        let dets = parse_results(&case["results"].to_string(), &gt, "results").unwrap();
        let ev = evaluate(&gt, &dets, &EvalParams::new(iou_type)).unwrap();
        let want = &case["expected"];
        if !same_bits(&ev.stats, &floats(&want["stats"])) {
            failures.push(format!(
                "case {i} ({iou_type}) stats: got {:?}, want {}",
                ev.stats, want["stats"]
            ));
            continue;
        }
        // recall[t, k, area all, maxDets 100]
        let [nt, _, nk, _, nm] = ev.precision_shape();
        let recall: Vec<f64> = (0..nt)
            .flat_map(|t| (0..nk).map(move |k| (t, k)))
            .map(|(t, k)| ev.recall_at(t, k, 0, nm - 1))
            .collect();
        if !same_bits(&recall, &floats(&want["recall"])) {
            failures.push(format!("case {i} recall differs"));
        }
        let per_cat: Vec<f64> = ev.per_category_ap().iter().map(|c| c.2).collect();
        if !same_bits(&per_cat, &floats(&want["per_category_ap"])) {
            failures.push(format!(
                "case {i} per-category AP: got {per_cat:?}, want {}",
                want["per_category_ap"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn rle(s: &Value, h: u32, w: u32) -> Rle {
    rle_from_string(s.as_str().unwrap(), h, w).unwrap()
}

fn hw(c: &Value) -> (u32, u32) {
    (c["h"].as_u64().unwrap() as u32, c["w"].as_u64().unwrap() as u32)
}

#[test]
fn mask_api_matches_pycocotools() {
    let m = fixture("parity_mask.json");
    for c in m["encode"].as_array().unwrap() {
        let (h, w) = hw(c);
        let mask: Vec<u8> = c["mask_col_major"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let r = Rle::encode(&mask, h, w).unwrap();
        assert_eq!(rle_to_string(&r), c["string"].as_str().unwrap());
        assert_eq!(rle(&c["string"], h, w), r);
        assert_eq!(r.decode().unwrap(), mask);
        assert_eq!(r.area() as u64, c["area"].as_u64().unwrap());
        assert_eq!(r.to_bbox().to_vec(), floats(&c["bbox"]));
    }
    for c in m["merge"].as_array().unwrap() {
        let (h, w) = hw(c);
        let rles: Vec<Rle> = c["strings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| rle(s, h, w))
            .collect();
        assert_eq!(
            rle_to_string(&merge(&rles, false).unwrap()),
            c["union"].as_str().unwrap()
        );
        assert_eq!(
            rle_to_string(&merge(&rles, true).unwrap()),
            c["intersection"].as_str().unwrap()
        );
    }
    for c in m["iou"].as_array().unwrap() {
        let (h, w) = hw(c);
        let dt: Vec<Rle> = c["dt"].as_array().unwrap().iter().map(|s| rle(s, h, w)).collect();
        let gt: Vec<Rle> = c["gt"].as_array().unwrap().iter().map(|s| rle(s, h, w)).collect();
        let crowd: Vec<bool> = c["iscrowd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64() == Some(1))
            .collect();
        let want: Vec<f64> = c["iou"].as_array().unwrap().iter().flat_map(floats).collect();
        assert!(same_bits(&iou(&dt, &gt, &crowd), &want), "{c}");
    }
    for c in m["poly"].as_array().unwrap() {
        let (h, w) = hw(c);
        let r = fr_poly(&floats(&c["poly"]), h, w);
        assert_eq!(rle_to_string(&r), c["string"].as_str().unwrap(), "{c}");
        assert_eq!(r.area() as u64, c["area"].as_u64().unwrap());
    }
    for c in m["bbox"].as_array().unwrap() {
        let (h, w) = hw(c);
        let b = floats(&c["bbox"]);
        let r = fr_bbox(&[b[0], b[1], b[2], b[3]], h, w);
        assert_eq!(rle_to_string(&r), c["string"].as_str().unwrap(), "{c}");
    }
    for c in m["bbiou"].as_array().unwrap() {
        let boxes = |v: &Value| -> Vec<[f64; 4]> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|b| floats(b).try_into().unwrap())
                .collect()
        };
        let crowd: Vec<bool> = c["iscrowd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64() == Some(1))
            .collect();
        let want: Vec<f64> = c["iou"].as_array().unwrap().iter().flat_map(floats).collect();
        assert!(
            same_bits(&bb_iou(&boxes(&c["dt"]), &boxes(&c["gt"]), &crowd), &want),
            "{c}"
        );
    }
    let _ = pairwise_mean(&[]);
}
