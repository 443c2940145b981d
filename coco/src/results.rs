//! Detection results: the in-memory form, reading and writing COCO results JSON, with pycocotools `loadRes`
//! semantics.
//!
//! Boxes are `[x, y, w, h]` in absolute pixels.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::annotations::{RleJson, Segmentation};
use crate::dataset::{CocoDataset, write_json_atomic};
use crate::error::CocoError;

/// One detection. Its id is always its position in the list plus one (pycocotools `loadRes` forces this).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Image the detection is in.
    pub image_id: u64,
    /// Predicted category.
    pub category_id: u64,
    /// Box `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// Confidence (higher is better).
    pub score: f64,
    /// Area used for the small/medium/large ranges: the box area, or the mask area for mask-only results.
    pub area: f64,
    /// The mask, if any. A box-only detection evaluated as `segm` uses its box polygon (like pycocotools).
    pub segmentation: Option<Segmentation>,
}

impl Detection {
    /// A box detection; its area is `w * h` (as in pycocotools' bbox branch of `loadRes`).
    pub fn from_bbox(image_id: u64, category_id: u64, bbox: [f64; 4], score: f64) -> Self {
        Detection {
            image_id,
            category_id,
            bbox,
            score,
            area: bbox[2] * bbox[3],
            segmentation: None,
        }
    }
}

/// A box as read from JSON: up to 4 numbers, no allocation.
#[derive(Clone, Copy)]
struct RawBox {
    v: [f64; 4],
    len: usize,
}

impl<'de> Deserialize<'de> for RawBox {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBox;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a box [x, y, w, h] of 4 numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBox, A::Error> {
                let mut b = RawBox { v: [0.0; 4], len: 0 };
                while let Some(x) = seq.next_element::<f64>()? {
                    if b.len == 4 {
                        return Err(de::Error::invalid_length(5, &self));
                    }
                    b.v[b.len] = x;
                    b.len += 1;
                }
                Ok(b)
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct RawResult {
    image_id: u64,
    category_id: u64,
    #[serde(default)]
    bbox: Option<RawBox>,
    score: f64,
    #[serde(default)]
    segmentation: Option<Segmentation>,
}

/// Read a COCO results file (a JSON list of `{image_id, category_id, bbox|segmentation, score}`) against the
/// ground truth `gt`, with pycocotools `loadRes` semantics:
/// - every result's image must be in `gt` (else an error naming the result);
/// - the FIRST result picks the branch: with a non-empty `bbox`, all results are boxes (`area = w * h`, a
///   `segmentation` is kept for segm evaluation); otherwise all need a `segmentation` (area = mask area, `bbox`
///   from the mask when absent);
/// - an empty list is accepted and evaluates to AP 0 where there is ground truth (pycocotools crashes).
///
/// Results of categories not in `gt` are kept here and dropped by the evaluator, as pycocotools does.
pub fn load_results(path: impl AsRef<Path>, gt: &CocoDataset) -> Result<Vec<Detection>, CocoError> {
    let path = path.as_ref();
    let bytes = crate::dataset::read_json_file(path)?;
    let raw: Vec<RawResult> = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(source) => return Err(diagnose_parse_error(path, &bytes, source)),
    };
    results_from_raw(raw, gt, path)
}

/// Parse results from JSON text already in memory (`source` names it in errors).
pub fn parse_results(
    json: &str,
    gt: &CocoDataset,
    source: impl AsRef<Path>,
) -> Result<Vec<Detection>, CocoError> {
    let path = source.as_ref();
    let raw: Vec<RawResult> = match serde_json::from_str(json) {
        Ok(r) => r,
        Err(e) => return Err(diagnose_parse_error(path, json.as_bytes(), e)),
    };
    results_from_raw(raw, gt, path)
}

fn results_from_raw(raw: Vec<RawResult>, gt: &CocoDataset, path: &Path) -> Result<Vec<Detection>, CocoError> {
    let err =
        |i: usize, field: &str, problem: String| CocoError::invalid(path, format!("[{i}]{field}"), problem);
    let bbox_branch = raw.first().is_some_and(|r| r.bbox.is_some_and(|b| b.len > 0));
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let Some(img) = gt.image(r.image_id) else {
            return Err(err(
                i,
                ".image_id",
                format!(
                    "image {} is not in the ground truth {} (results do not correspond to it)",
                    r.image_id,
                    gt.source().display()
                ),
            ));
        };
        let bbox = match r.bbox {
            Some(b) if b.len == 4 => {
                if b.v[2] < 0.0 || b.v[3] < 0.0 {
                    return Err(err(
                        i,
                        ".bbox",
                        format!("{:?} has a negative width or height", b.v),
                    ));
                }
                Some(b.v)
            }
            Some(b) if b.len > 0 || bbox_branch => {
                return Err(err(
                    i,
                    ".bbox",
                    format!("expected 4 numbers [x, y, w, h], got {}", b.len),
                ));
            }
            _ => None,
        };
        crate::dataset::validate_extent(
            bbox.as_ref().map(|b| &b[..]),
            r.segmentation.as_ref(),
            img.width,
            img.height,
        )
        .map_err(|(field, p)| err(i, field, p))?;
        let det = if bbox_branch {
            let Some(bbox) = bbox else {
                return Err(err(
                    i,
                    "",
                    "has no bbox, but the first result is a box result".into(),
                ));
            };
            if let Some(seg) = &r.segmentation {
                crate::dataset::validate_segmentation(seg).map_err(|p| err(i, ".segmentation", p))?;
            }
            Detection {
                image_id: r.image_id,
                category_id: r.category_id,
                bbox,
                score: r.score,
                area: bbox[2] * bbox[3],
                segmentation: r.segmentation,
            }
        } else {
            let Some(seg) = r.segmentation else {
                return Err(err(i, "", "has neither a bbox nor a segmentation".into()));
            };
            crate::dataset::validate_segmentation(&seg).map_err(|p| err(i, ".segmentation", p))?;
            let rle = seg
                .to_rle(img.height, img.width)
                .map_err(|e| err(i, ".segmentation", e.to_string()))?;
            let bbox = bbox.unwrap_or_else(|| rle.to_bbox());
            Detection {
                image_id: r.image_id,
                category_id: r.category_id,
                bbox,
                score: r.score,
                area: rle.area() as f64,
                segmentation: Some(seg),
            }
        };
        out.push(det);
    }
    Ok(out)
}

/// The typed parse failed: find which result is wrong (slow path, only on error) for a message that names it.
fn diagnose_parse_error(path: &Path, bytes: &[u8], source: serde_json::Error) -> CocoError {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return CocoError::Json {
            path: path.to_owned(),
            error: source,
        };
    };
    let Some(list) = value.as_array() else {
        return CocoError::invalid(path, "(top level)", "expected a JSON list of results");
    };
    for (i, item) in list.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return CocoError::invalid(path, format!("[{i}]"), "expected an object");
        };
        for field in ["image_id", "category_id"] {
            match obj.get(field) {
                None => {
                    return CocoError::invalid(path, format!("[{i}]"), format!("missing field `{field}`"));
                }
                Some(v) if v.as_u64().is_none() => {
                    return CocoError::invalid(
                        path,
                        format!("[{i}].{field}"),
                        format!("{v} is not a non-negative integer id"),
                    );
                }
                _ => {}
            }
        }
        match obj.get("score") {
            None => return CocoError::invalid(path, format!("[{i}]"), "missing field `score`"),
            Some(v) if !v.is_number() => {
                return CocoError::invalid(path, format!("[{i}].score"), format!("{v} is not a number"));
            }
            _ => {}
        }
        if let Some(b) = obj.get("bbox") {
            let ok = b
                .as_array()
                .is_some_and(|a| a.len() <= 4 && a.iter().all(|x| x.is_number()));
            if !ok {
                return CocoError::invalid(
                    path,
                    format!("[{i}].bbox"),
                    format!("{b} is not a box [x, y, w, h] of 4 numbers"),
                );
            }
        }
        if let Some(s) = obj.get("segmentation")
            && let Err(e) = serde_json::from_value::<Segmentation>(s.clone())
        {
            return CocoError::invalid(path, format!("[{i}].segmentation"), e.to_string());
        }
    }
    CocoError::Json {
        path: path.to_owned(),
        error: source,
    }
}

#[derive(Serialize)]
struct OutResult<'a> {
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    segmentation: Option<&'a Segmentation>,
}

/// Write detections as a COCO results JSON file, atomically. Masks should be compressed RLE
/// ([`RleJson::compressed`]) for other tools to read them.
pub fn write_results(path: impl AsRef<Path>, dets: &[Detection]) -> Result<(), CocoError> {
    let out: Vec<OutResult> = dets
        .iter()
        .map(|d| OutResult {
            image_id: d.image_id,
            category_id: d.category_id,
            bbox: d.bbox,
            score: d.score,
            segmentation: d.segmentation.as_ref(),
        })
        .collect();
    write_json_atomic(path.as_ref(), &out)
}

/// Convert a mask to the compressed-RLE segmentation results carry.
pub fn compressed_segmentation(rle: &crate::mask::Rle) -> Segmentation {
    Segmentation::Rle(RleJson::compressed(rle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::CocoJson;
    use crate::mask::fr_bbox;

    fn gt() -> CocoDataset {
        let json: CocoJson = serde_json::from_str(
            r#"{"images": [{"id": 5, "width": 10, "height": 8}], "categories": [{"id": 1, "name": "a"}]}"#,
        )
        .unwrap();
        CocoDataset::from_json(json, "gt.json").unwrap()
    }

    #[test]
    fn load_res_branches() {
        let g = gt();
        // A 3x2 box mask at (1, 1): area 6, toBbox [1, 1, 3, 2].
        let s = crate::mask::rle_to_string(&fr_bbox(&[1.0, 1.0, 3.0, 2.0], 8, 10));
        let seg = format!(r#"{{"size": [8, 10], "counts": "{s}"}}"#);
        // Segmentation branch: area from the mask, bbox from toBbox.
        let dets = parse_results(
            &format!(r#"[{{"image_id": 5, "category_id": 1, "segmentation": {seg}, "score": 1}}]"#),
            &g,
            "r",
        )
        .unwrap();
        assert_eq!((dets[0].area, dets[0].bbox), (6.0, [1.0, 1.0, 3.0, 2.0]));
        // The first result carries a bbox: bbox branch for all, area = w * h even with a mask (quirk).
        let dets = parse_results(
            &format!(r#"[{{"image_id": 5, "category_id": 1, "bbox": [0, 0, 4, 4], "segmentation": {seg}, "score": 1}}]"#),
            &g,
            "r",
        )
        .unwrap();
        assert_eq!(dets[0].area, 16.0);
        // Empty results are accepted.
        assert!(parse_results("[]", &g, "r").unwrap().is_empty());
        // `bbox: []` does not pick the bbox branch (pycocotools' test), and there is no mask either.
        let err = parse_results(
            r#"[{"image_id": 5, "category_id": 1, "bbox": [], "score": 1}]"#,
            &g,
            "r",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "r: [0]: has neither a bbox nor a segmentation");
    }

    #[test]
    fn write_then_read_round_trips() {
        let g = gt();
        let mask = fr_bbox(&[2.0, 2.0, 3.0, 3.0], 8, 10);
        let dets = vec![
            Detection::from_bbox(5, 1, [0.5, 1.25, 3.0, 4.0], 0.123456789),
            Detection {
                segmentation: Some(compressed_segmentation(&mask)),
                ..Detection::from_bbox(5, 1, [2.0, 2.0, 3.0, 3.0], 0.5)
            },
        ];
        let path = std::env::temp_dir().join(format!("attndet-results-{}.json", std::process::id()));
        write_results(&path, &dets).unwrap();
        let back = load_results(&path, &g).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(back, dets);
    }
}
