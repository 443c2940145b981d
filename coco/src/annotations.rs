//! The COCO instances JSON data model (serde), as read from and written to disk.
//!
//! Boxes are `[x, y, w, h]` in absolute pixels (top-left corner, width, height); polygons are flat
//! `[x0, y0, x1, y1, ...]` lists in pixels; RLE sizes are `[h, w]`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::MaskError;
use crate::mask::{Rle, fr_poly, merge, rle_from_string, rle_to_string};

/// A whole COCO instances file. `info` and `licenses` are kept as they are.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CocoJson {
    /// Free-form dataset information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// Free-form license list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licenses: Option<Value>,
    /// The images.
    pub images: Vec<Image>,
    /// The object annotations.
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    /// The categories.
    pub categories: Vec<Category>,
}

/// One image entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// Unique image id.
    pub id: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// File name relative to the image directory.
    #[serde(default)]
    pub file_name: String,
    /// Every other field (license, coco_url, date_captured, ...), kept as is.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One category entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Category {
    /// Unique category id.
    pub id: u64,
    /// Human-readable name.
    pub name: String,
    /// Parent group name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

/// One object annotation. `area` and `iscrowd` are required (pycocotools' evaluator needs them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Annotation {
    /// Unique annotation id (0 is legal but counts as "unmatched" in pycocotools' matching).
    pub id: u64,
    /// Image the object is in.
    pub image_id: u64,
    /// Category of the object.
    pub category_id: u64,
    /// Box `[x, y, w, h]` in pixels; validated to 4 numbers with non-negative size.
    pub bbox: Vec<f64>,
    /// Area in pixels used for the small/medium/large ranges (the mask area for real COCO).
    pub area: f64,
    /// 1 for a crowd region (matched detections are ignored), else 0.
    pub iscrowd: u8,
    /// The mask: polygons or RLE; absent for box-only datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<Segmentation>,
}

/// An object mask as stored in JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Segmentation {
    /// One or more polygons `[x0, y0, x1, y1, ...]`; the mask is their union.
    Polygons(Vec<Vec<f64>>),
    /// A run-length encoding with its own size.
    Rle(RleJson),
}

/// The JSON form of an RLE: `{"size": [h, w], "counts": [...] | "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RleJson {
    /// `[h, w]`.
    pub size: [u32; 2],
    /// Run lengths, as a list (uncompressed) or a compressed string.
    pub counts: RleCounts,
}

/// RLE counts: uncompressed list or pycocotools' compressed string.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RleCounts {
    /// Plain run lengths.
    Uncompressed(Vec<u32>),
    /// pycocotools' compressed string.
    Compressed(String),
}

impl Segmentation {
    /// The mask as an RLE, following pycocotools' `annToRLE`: polygons are rasterized at the image's `h x w`
    /// and merged (union); an uncompressed RLE uses its own size; a compressed string is decoded as is.
    pub fn to_rle(&self, h: u32, w: u32) -> Result<Rle, MaskError> {
        match self {
            Segmentation::Polygons(polys) => {
                let mut rles = Vec::with_capacity(polys.len());
                for p in polys {
                    if p.len() < 6 {
                        return Err(MaskError::PolygonTooShort { coords: p.len() });
                    }
                    rles.push(fr_poly(p, h, w));
                }
                if rles.is_empty() {
                    return Err(MaskError::PolygonTooShort { coords: 0 });
                }
                merge(&rles, false)
            }
            Segmentation::Rle(r) => r.to_rle(),
        }
    }
}

impl RleJson {
    /// Decode to an [`Rle`] of the stated size (the counts are not checked against `h * w` here).
    pub fn to_rle(&self) -> Result<Rle, MaskError> {
        let [h, w] = self.size;
        match &self.counts {
            RleCounts::Uncompressed(c) => Ok(Rle {
                h,
                w,
                counts: c.clone(),
            }),
            RleCounts::Compressed(s) => rle_from_string(s, h, w),
        }
    }

    /// The compressed JSON form of an RLE (as pycocotools `encode` returns it).
    pub fn compressed(rle: &Rle) -> RleJson {
        RleJson {
            size: [rle.h, rle.w],
            counts: RleCounts::Compressed(rle_to_string(rle)),
        }
    }
}

// Hand-written deserializers: serde's untagged enums buffer every value first, which is slow on the
// hundreds of thousands of results a COCO evaluation reads.
impl<'de> Deserialize<'de> for Segmentation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Segmentation;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of polygons or an RLE object {size, counts}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Segmentation, A::Error> {
                let mut polys = Vec::new();
                while let Some(p) = seq.next_element::<Vec<f64>>()? {
                    polys.push(p);
                }
                Ok(Segmentation::Polygons(polys))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Segmentation, A::Error> {
                RleJson::deserialize(de::value::MapAccessDeserializer::new(map)).map(Segmentation::Rle)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RleCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RleCounts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of run lengths or a compressed RLE string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RleCounts, E> {
                Ok(RleCounts::Compressed(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<RleCounts, E> {
                Ok(RleCounts::Compressed(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RleCounts, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(c) = seq.next_element::<u32>()? {
                    v.push(c);
                }
                Ok(RleCounts::Uncompressed(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmentation_forms_parse() {
        let p: Segmentation = serde_json::from_str("[[1, 2, 3, 4, 5, 6]]").unwrap();
        assert_eq!(
            p,
            Segmentation::Polygons(vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
        );
        let r: Segmentation = serde_json::from_str(r#"{"size": [2, 3], "counts": [1, 5]}"#).unwrap();
        assert_eq!(
            r,
            Segmentation::Rle(RleJson {
                size: [2, 3],
                counts: RleCounts::Uncompressed(vec![1, 5])
            })
        );
        let c: Segmentation = serde_json::from_str(r#"{"counts": "0`0", "size": [4, 4]}"#).unwrap();
        assert_eq!(
            c,
            Segmentation::Rle(RleJson {
                size: [4, 4],
                counts: RleCounts::Compressed("0`0".into())
            })
        );
        let empty: Segmentation = serde_json::from_str("[]").unwrap();
        assert_eq!(empty, Segmentation::Polygons(vec![]));
        assert!(serde_json::from_str::<Segmentation>("3").is_err());
    }
}
