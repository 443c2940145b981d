//! A loaded, validated COCO dataset with its indexes (images, categories, annotations per image).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::annotations::{Annotation, Category, CocoJson, Image, Segmentation};
use crate::error::CocoError;
use crate::mask::Rle;

/// A validated COCO instances dataset with lookups by id.
///
/// Validation refuses duplicate image, category or annotation ids, annotations pointing at unknown images or
/// categories, boxes that are not 4 numbers with non-negative size, polygons with fewer than 3 points and RLEs
/// whose counts do not cover `h * w` pixels or whose string is malformed. (pycocotools would silently keep the
/// last duplicate and drop annotations of unknown images; we say which entry is wrong instead.)
#[derive(Debug, Clone)]
pub struct CocoDataset {
    source: PathBuf,
    json: CocoJson,
    image_pos: HashMap<u64, usize>,
    category_pos: HashMap<u64, usize>,
    anns_by_image: Vec<Vec<usize>>,
    anns_by_category: Vec<Vec<usize>>,
}

/// Default of [`max_json_bytes`]: 4 GiB, several times COCO's or LVIS's largest annotation file.
pub const DEFAULT_MAX_JSON_BYTES: u64 = 4 << 30;

/// The largest annotation or results file read: `ATTNDET_MAX_JSON_BYTES` if set to a number, else
/// [`DEFAULT_MAX_JSON_BYTES`]. Parsing needs a few times the file's size in memory, so a file beyond what the
/// machine can hold is refused up front with a clear error rather than by the out-of-memory killer.
pub fn max_json_bytes() -> u64 {
    std::env::var("ATTNDET_MAX_JSON_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_JSON_BYTES)
}

/// Read a JSON file whole, refusing one larger than [`max_json_bytes`] before reading it (or, for a stream
/// whose size is unknown, as soon as it has read more).
pub fn read_json_file(path: &Path) -> Result<Vec<u8>, CocoError> {
    let read_err = |error| CocoError::Read {
        path: path.to_owned(),
        error,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    let limit = max_json_bytes();
    if size > limit {
        return Err(CocoError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        });
    }
    read_at_most(path, limit)
        .map_err(read_err)?
        .ok_or(CocoError::TooLarge {
            path: path.to_owned(),
            size: limit.saturating_add(1),
            limit,
        })
}

/// The whole of `path` if it holds at most `limit` bytes, `None` if it holds more. The read itself stops one
/// byte past the limit: a file's reported size is the file system's word, and a device or pipe (`/dev/zero`,
/// `<(...)`) reports 0, so a check of the size alone would let one be read without end.
pub fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

impl CocoDataset {
    /// Read and validate a COCO instances JSON file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CocoError> {
        let path = path.as_ref();
        let bytes = read_json_file(path)?;
        let json: CocoJson = serde_json::from_slice(&bytes).map_err(|error| CocoError::Json {
            path: path.to_owned(),
            error,
        })?;
        Self::from_json(json, path)
    }

    /// Validate an in-memory dataset; `source` names it in error messages.
    pub fn from_json(json: CocoJson, source: impl AsRef<Path>) -> Result<Self, CocoError> {
        let source = source.as_ref().to_owned();
        let err = |at: String, problem: String| CocoError::invalid(source.clone(), at, problem);
        let mut image_pos = HashMap::with_capacity(json.images.len());
        for (i, img) in json.images.iter().enumerate() {
            if let Some(prev) = image_pos.insert(img.id, i) {
                return Err(err(
                    format!("images[{i}]"),
                    format!("duplicate image id {} (also images[{prev}])", img.id),
                ));
            }
        }
        let mut category_pos = HashMap::with_capacity(json.categories.len());
        for (i, cat) in json.categories.iter().enumerate() {
            if let Some(prev) = category_pos.insert(cat.id, i) {
                return Err(err(
                    format!("categories[{i}]"),
                    format!("duplicate category id {} (also categories[{prev}])", cat.id),
                ));
            }
        }
        let mut ann_ids: HashMap<u64, usize> = HashMap::with_capacity(json.annotations.len());
        let mut anns_by_image = vec![Vec::new(); json.images.len()];
        let mut anns_by_category = vec![Vec::new(); json.categories.len()];
        for (i, ann) in json.annotations.iter().enumerate() {
            let at = |field: &str| format!("annotations[{i}] (id {}){field}", ann.id);
            if let Some(prev) = ann_ids.insert(ann.id, i) {
                return Err(err(
                    at(""),
                    format!("duplicate annotation id {} (also annotations[{prev}])", ann.id),
                ));
            }
            let Some(&img) = image_pos.get(&ann.image_id) else {
                return Err(err(
                    at(".image_id"),
                    format!("image {} is not in images", ann.image_id),
                ));
            };
            let Some(&cat) = category_pos.get(&ann.category_id) else {
                return Err(err(
                    at(".category_id"),
                    format!("category {} is not in categories", ann.category_id),
                ));
            };
            validate_bbox(&ann.bbox).map_err(|p| err(at(".bbox"), p))?;
            if !ann.area.is_finite() || ann.area < 0.0 {
                return Err(err(
                    at(".area"),
                    format!("area {} is not a finite non-negative number", ann.area),
                ));
            }
            let image = &json.images[img];
            validate_extent(
                Some(&ann.bbox),
                ann.segmentation.as_ref(),
                image.width,
                image.height,
            )
            .map_err(|(field, p)| err(at(field), p))?;
            if let Some(seg) = &ann.segmentation {
                validate_segmentation(seg).map_err(|p| err(at(".segmentation"), p))?;
                // a mask of another size than its image cannot be scored or trained against it
                let image = &json.images[img];
                if let Segmentation::Rle(r) = seg
                    && r.size != [image.height, image.width]
                {
                    return Err(err(
                        at(".segmentation.size"),
                        format!(
                            "RLE of size {:?} (h, w) on image {} of {}x{} (h x w)",
                            r.size, image.id, image.height, image.width
                        ),
                    ));
                }
            }
            anns_by_image[img].push(i);
            anns_by_category[cat].push(i);
        }
        Ok(CocoDataset {
            source,
            json,
            image_pos,
            category_pos,
            anns_by_image,
            anns_by_category,
        })
    }

    /// The file (or description) the dataset came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The underlying JSON model.
    pub fn json(&self) -> &CocoJson {
        &self.json
    }

    /// All images, in file order.
    pub fn images(&self) -> &[Image] {
        &self.json.images
    }

    /// All categories, in file order.
    pub fn categories(&self) -> &[Category] {
        &self.json.categories
    }

    /// All annotations, in file order.
    pub fn annotations(&self) -> &[Annotation] {
        &self.json.annotations
    }

    /// The image with this id.
    pub fn image(&self, id: u64) -> Option<&Image> {
        self.image_pos.get(&id).map(|&i| &self.json.images[i])
    }

    /// The category with this id.
    pub fn category(&self, id: u64) -> Option<&Category> {
        self.category_pos.get(&id).map(|&i| &self.json.categories[i])
    }

    /// Position of an image in [`images`](Self::images).
    pub fn image_index(&self, id: u64) -> Option<usize> {
        self.image_pos.get(&id).copied()
    }

    /// Position of a category in [`categories`](Self::categories).
    pub fn category_index(&self, id: u64) -> Option<usize> {
        self.category_pos.get(&id).copied()
    }

    /// Annotations of an image, in file order (empty for an unknown image).
    pub fn annotations_of(&self, image_id: u64) -> impl Iterator<Item = &Annotation> + '_ {
        let list = self
            .image_pos
            .get(&image_id)
            .map(|&i| self.anns_by_image[i].as_slice())
            .unwrap_or(&[]);
        list.iter().map(|&a| &self.json.annotations[a])
    }

    /// Annotations of a category, in file order (empty for an unknown category).
    pub fn annotations_of_category(&self, category_id: u64) -> impl Iterator<Item = &Annotation> + '_ {
        let list = self
            .category_pos
            .get(&category_id)
            .map(|&k| self.anns_by_category[k].as_slice())
            .unwrap_or(&[]);
        list.iter().map(|&a| &self.json.annotations[a])
    }

    /// Image ids sorted ascending (pycocotools' `imgIds`).
    pub fn sorted_image_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.json.images.iter().map(|i| i.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Category ids sorted ascending (pycocotools' `catIds`).
    pub fn sorted_category_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.json.categories.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }

    /// The annotation's mask as an RLE at its image's size (pycocotools `annToRLE`); box-only annotations
    /// give the box rasterized.
    pub fn ann_to_rle(&self, ann: &Annotation) -> Result<Rle, CocoError> {
        let img = self.image(ann.image_id).ok_or_else(|| {
            CocoError::invalid(
                &self.source,
                format!("annotation id {}", ann.id),
                "image is not in images",
            )
        })?;
        match &ann.segmentation {
            Some(seg) => seg.to_rle(img.height, img.width).map_err(|e| {
                CocoError::invalid(
                    &self.source,
                    format!("annotation id {}.segmentation", ann.id),
                    e.to_string(),
                )
            }),
            None => {
                let b = [ann.bbox[0], ann.bbox[1], ann.bbox[2], ann.bbox[3]];
                Ok(crate::mask::fr_bbox(&b, img.height, img.width))
            }
        }
    }

    /// Write the dataset as JSON, atomically (temporary file, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CocoError> {
        write_json_atomic(path.as_ref(), &self.json)
    }
}

/// Serialize `value` to `path` atomically: write `path.tmp`, then rename over `path`.
pub(crate) fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), CocoError> {
    let werr = |error| CocoError::Write {
        path: path.to_owned(),
        error,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(value).map_err(|e| werr(std::io::Error::other(e)))?;
    std::fs::write(&tmp, bytes).map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

fn validate_bbox(b: &[f64]) -> Result<(), String> {
    if b.len() != 4 {
        return Err(format!("expected 4 numbers [x, y, w, h], got {}", b.len()));
    }
    if b.iter().any(|v| !v.is_finite()) {
        return Err(format!("{b:?} has a non-finite number"));
    }
    if b[2] < 0.0 || b[3] < 0.0 {
        return Err(format!("{b:?} has a negative width or height"));
    }
    Ok(())
}

/// Boxes `[x, y, w, h]` and polygons must stay within one image size of their `width x height` image:
/// rasterizing them (segm evaluation of a box, pycocotools' `annToRLE`/`frPyObjects`) traces every edge at 5x
/// resolution, so a coordinate of 1e9 would need gigabytes (pycocotools runs out of memory). Real annotations
/// and detections lie inside their image, give or take a few pixels.
pub(crate) fn validate_extent(
    bbox: Option<&[f64]>,
    seg: Option<&Segmentation>,
    width: u32,
    height: u32,
) -> Result<(), (&'static str, String)> {
    let margin = width.max(height).max(1) as f64;
    let (w, h) = (width as f64, height as f64);
    let inside = |x: f64, y: f64| (-margin..=w + margin).contains(&x) && (-margin..=h + margin).contains(&y);
    let why = || format!("lies more than one image size outside its {width}x{height} (w x h) image");
    if let Some(b) = bbox.filter(|b| b.len() == 4)
        && (!inside(b[0], b[1]) || !inside(b[0] + b[2], b[1] + b[3]))
    {
        return Err((".bbox", format!("{b:?} {}", why())));
    }
    if let Some(Segmentation::Polygons(polys)) = seg {
        for (j, p) in polys.iter().enumerate() {
            if p.chunks_exact(2).any(|xy| !inside(xy[0], xy[1])) {
                return Err((".segmentation", format!("polygon {j} {}", why())));
            }
        }
    }
    Ok(())
}

pub(crate) fn validate_segmentation(seg: &Segmentation) -> Result<(), String> {
    match seg {
        Segmentation::Polygons(polys) => {
            for (j, p) in polys.iter().enumerate() {
                // pycocotools drops an odd trailing value without a word; a malformed polygon is refused
                if p.len() % 2 != 0 {
                    return Err(format!(
                        "polygon {j} has an odd number of coordinates ({}): x, y pairs expected",
                        p.len()
                    ));
                }
                if p.len() < 6 {
                    return Err(format!(
                        "polygon {j} has {} coordinates; at least 3 points (6 numbers) needed",
                        p.len()
                    ));
                }
                if p.iter().any(|v| !v.is_finite()) {
                    return Err(format!("polygon {j} has a non-finite coordinate"));
                }
            }
            Ok(())
        }
        Segmentation::Rle(r) => {
            let rle = r.to_rle().map_err(|e| e.to_string())?;
            rle.validate().map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<CocoDataset, CocoError> {
        let json: CocoJson = serde_json::from_str(s).unwrap();
        CocoDataset::from_json(json, "t.json")
    }

    const IMGS: &str = r#""images": [{"id": 1, "width": 4, "height": 3}, {"id": 2, "width": 4, "height": 3}],
        "categories": [{"id": 7, "name": "cat"}]"#;

    fn with_ann(ann: &str) -> String {
        format!(r#"{{{IMGS}, "annotations": [{ann}]}}"#)
    }

    fn err_of(s: &str) -> String {
        load_str(s).unwrap_err().to_string()
    }

    #[test]
    fn empty_dataset_loads() {
        let d = load_str(r#"{"images": [], "categories": []}"#).unwrap();
        assert!(d.images().is_empty() && d.annotations().is_empty());
        assert_eq!(d.annotations_of(1).count(), 0);
    }

    #[test]
    fn index_by_image_keeps_file_order() {
        let ok = r#"{"id": 5, "image_id": 2, "category_id": 7, "bbox": [0,0,1,1], "area": 1, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [0,0,1,1], "area": 1, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 7, "bbox": [0,0,1,1], "area": 1, "iscrowd": 0,
             "segmentation": {"size": [3, 4], "counts": [2, 10]}}"#;
        let d = load_str(&with_ann(ok)).unwrap();
        assert_eq!(d.annotations_of(2).map(|a| a.id).collect::<Vec<_>>(), vec![5, 4]);
        assert_eq!(d.sorted_image_ids(), vec![1, 2]);
        assert_eq!(d.category(7).unwrap().name, "cat");
        assert_eq!(
            d.annotations_of_category(7).map(|a| a.id).collect::<Vec<_>>(),
            vec![5, 3, 4]
        );
        assert_eq!(d.annotations_of_category(8).count(), 0);
    }

    #[test]
    fn invalid_entries_are_named() {
        let a = |extra: &str| {
            with_ann(&format!(
                r#"{{"id": 9, "image_id": 1, "category_id": 7, "area": 1, "iscrowd": 0, {extra}}}"#
            ))
        };
        assert_eq!(
            err_of(&a(r#""bbox": [0, 0, 1]"#)),
            "t.json: annotations[0] (id 9).bbox: expected 4 numbers [x, y, w, h], got 3"
        );
        assert!(
            err_of(&a(r#""bbox": [0, 0, -1, 2]"#))
                .contains("(id 9).bbox: [0.0, 0.0, -1.0, 2.0] has a negative")
        );
        assert!(
            err_of(&a(r#""bbox": [0,0,1,1], "segmentation": [[1, 2, 3, 4]]"#))
                .contains("(id 9).segmentation: polygon 0 has 4 coordinates")
        );
        assert!(
            err_of(&a(
                r#""bbox": [0,0,1,1], "segmentation": {"size": [3, 4], "counts": [2, 3]}"#
            ))
            .contains("(id 9).segmentation: RLE counts sum to 5 but the mask has h*w = 12 pixels")
        );
        assert!(
            err_of(&a(
                r#""bbox": [0,0,1,1], "segmentation": {"size": [3, 4], "counts": "0 "}"#
            ))
            .contains("malformed compressed RLE string")
        );
        // odd coordinate counts are refused (pycocotools would drop the last value silently)
        assert!(
            err_of(&a(
                r#""bbox": [0,0,1,1], "segmentation": [[0, 0, 3, 0, 3, 2, 1]]"#
            ))
            .contains("(id 9).segmentation: polygon 0 has an odd number of coordinates (7)")
        );
        // an RLE of another size than its 3x4 image
        assert_eq!(
            err_of(&a(
                r#""bbox": [0,0,1,1], "segmentation": {"size": [4, 3], "counts": [2, 10]}"#
            )),
            "t.json: annotations[0] (id 9).segmentation.size: RLE of size [4, 3] (h, w) on image 1 of 3x4 (h x w)"
        );
        // geometry far outside the image is refused (rasterizing it would need gigabytes); found by fuzzing
        assert_eq!(
            err_of(&a(r#""bbox": [0, 0, 4, 477777777]"#)),
            "t.json: annotations[0] (id 9).bbox: [0.0, 0.0, 4.0, 477777777.0] lies more than one image size outside its 4x3 (w x h) image"
        );
        assert!(
            err_of(&a(r#""bbox": [0,0,1,1], "segmentation": [[0, 0, 3, 0, 3, 1e9]]"#))
                .contains("(id 9).segmentation: polygon 0 lies more than one image size outside")
        );
        // a crowd region given as a polygon list (pycocotools reads it as the union of the polygons) loads
        assert!(
            load_str(&with_ann(
                r#"{"id": 9, "image_id": 1, "category_id": 7, "area": 1, "iscrowd": 1, "bbox": [0,0,3,2], "segmentation": [[0, 0, 3, 0, 3, 2]]}"#
            ))
            .is_ok()
        );
        let unknown_img = with_ann(
            r#"{"id": 9, "image_id": 3, "category_id": 7, "bbox": [0,0,1,1], "area": 1, "iscrowd": 0}"#,
        );
        assert_eq!(
            err_of(&unknown_img),
            "t.json: annotations[0] (id 9).image_id: image 3 is not in images"
        );
        let unknown_cat = with_ann(
            r#"{"id": 9, "image_id": 1, "category_id": 8, "bbox": [0,0,1,1], "area": 1, "iscrowd": 0}"#,
        );
        assert!(err_of(&unknown_cat).contains("category 8 is not in categories"));
        let dup = with_ann(
            r#"{"id": 9, "image_id": 1, "category_id": 7, "bbox": [0,0,1,1], "area": 1, "iscrowd": 0},
               {"id": 9, "image_id": 2, "category_id": 7, "bbox": [0,0,1,1], "area": 1, "iscrowd": 0}"#,
        );
        assert_eq!(
            err_of(&dup),
            "t.json: annotations[1] (id 9): duplicate annotation id 9 (also annotations[0])"
        );
        let dup_img = r#"{"images": [{"id": 1, "width": 4, "height": 3}, {"id": 1, "width": 4, "height": 3}], "categories": []}"#;
        assert_eq!(
            err_of(dup_img),
            "t.json: images[1]: duplicate image id 1 (also images[0])"
        );
        let dup_cat = r#"{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}"#;
        assert_eq!(
            err_of(dup_cat),
            "t.json: categories[1]: duplicate category id 1 (also categories[0])"
        );
    }
}
