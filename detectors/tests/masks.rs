//! Mask R-CNN's mask targets and mask pasting against mmdetection's formulation, recorded by
//! `python3 detectors/scripts/make_mask_fixtures.py` (torch + torchvision's RoIAlign + pycocotools) into
//! `tests/fixtures/masks.json`: polygon and RLE instances, RoIs partly outside the image and smaller than a
//! pixel, pasted boxes at the image border, outside it and smaller than a pixel.

mod common;

use attndet_coco::mask::{Rle, fr_poly, merge};
use attndet_detectors::config::MaskConvention;
use attndet_detectors::roi_heads::mask_head::{mask_targets, paste_mask};
use attndet_detectors::structures::RleMask;
use common::{Cpu, DEV};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/masks.json")).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn quad(v: &Value) -> [f32; 4] {
    let b = f32s(v);
    [b[0], b[1], b[2], b[3]]
}

/// The fixture's instances as the loader makes them: polygons rasterized by the coco crate's `fr_poly` and
/// merged (pycocotools' `annToMask`), RLE counts taken as they are.
fn instance_masks(f: &Value) -> Vec<RleMask> {
    let (h, w) = (
        f["height"].as_u64().unwrap() as u32,
        f["width"].as_u64().unwrap() as u32,
    );
    f["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|spec| {
            let rle = match spec.get("polygons") {
                Some(polys) => {
                    let parts: Vec<Rle> = polys
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            let xy: Vec<f64> = p
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|x| x.as_f64().unwrap())
                                .collect();
                            fr_poly(&xy, h, w)
                        })
                        .collect();
                    merge(&parts, false).unwrap()
                }
                None => Rle {
                    h,
                    w,
                    counts: u32s(&spec["counts"]),
                },
            };
            RleMask {
                size: [h as usize, w as usize],
                counts: rle.counts,
            }
        })
        .collect()
}

#[test]
fn instance_masks_rasterize_as_pycocotools() {
    let f = fixture();
    let masks = instance_masks(&f);
    for (i, (m, want)) in masks
        .iter()
        .zip(f["instance_counts"].as_array().unwrap())
        .enumerate()
    {
        assert_eq!(m.counts, u32s(want), "instance {i}");
    }
}

#[test]
fn mask_targets_match_mmdetection() {
    let f = fixture();
    let masks = instance_masks(&f);
    let rois: Vec<[f32; 4]> = f["rois"].as_array().unwrap().iter().map(quad).collect();
    let gt: Vec<usize> = u32s(&f["gt_index"]).into_iter().map(|g| g as usize).collect();
    let t = mask_targets::<Cpu>(&masks, &rois, &gt, 28, MaskConvention::Mmdetection, &DEV).unwrap();
    assert_eq!(t.dims(), [rois.len(), 28, 28]);
    let got: Vec<f32> = t.into_data().to_vec().unwrap();
    let want = u32s(&f["targets"]);
    for (r, (g, w)) in got.chunks(28 * 28).zip(want.chunks(28 * 28)).enumerate() {
        let differ = g.iter().zip(w).filter(|(a, b)| **a != **b as f32).count();
        assert_eq!(
            differ, 0,
            "RoI {r} ({:?}): {differ} of 784 target pixels differ",
            rois[r]
        );
    }
    // the tiny RoI lies inside the pentagon: all ones; the RoI beyond the image is zero outside it
    assert!(want[4 * 784..5 * 784].iter().all(|&v| v == 1));
}

#[test]
fn pasted_masks_match_mmdetection() {
    let f = fixture();
    let (h, w) = (
        f["height"].as_u64().unwrap() as u32,
        f["width"].as_u64().unwrap() as u32,
    );
    for (i, p) in f["pastes"].as_array().unwrap().iter().enumerate() {
        let probs = f32s(&p["probs"]);
        let m = (probs.len() as f64).sqrt() as usize;
        let rle = paste_mask(&probs, m, quad(&p["box"]), (h, w), 0.5);
        assert_eq!(
            rle.counts,
            u32s(&p["counts"]),
            "paste {i} at {:?}",
            quad(&p["box"])
        );
    }
}

#[test]
fn empty_inputs() {
    // no positive RoI: no target, and no instance needed
    let t = mask_targets::<Cpu>(&[], &[], &[], 28, MaskConvention::Mmdetection, &DEV).unwrap();
    assert_eq!(t.dims(), [0, 28, 28]);
    // positives without any instance mask are an error, not a panic
    assert!(
        mask_targets::<Cpu>(
            &[],
            &[[0.0, 0.0, 4.0, 4.0]],
            &[0],
            28,
            MaskConvention::Mmdetection,
            &DEV
        )
        .is_err()
    );
    // an empty box pastes nothing (zero extent: no pixel centre inside)
    let rle = paste_mask(&[1.0; 4], 2, [3.0, 3.0, 3.0, 7.0], (8, 8), 0.5);
    assert_eq!(rle.counts, vec![64]);
}
