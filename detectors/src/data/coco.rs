//! From a COCO dataset (the `attndet-coco` loader) to the pipeline's records: boxes converted from
//! `[x, y, w, h]` to `[x1, y1, x2, y2]`, categories mapped to contiguous labels in ascending id order, crowd
//! annotations kept apart as ignore regions, and degenerate boxes (width or height below 1 pixel) and boxes
//! that do not overlap their image dropped, as mmdetection does (clipped to the image, such a box would have
//! no width and an infinite regression target).

use std::path::Path;

use attndet_coco::CocoDataset;

use super::DetRecord;

/// Records of a dataset and the category id of each label.
#[derive(Debug, Clone)]
pub struct DetDataset {
    /// One record per kept image, in ascending image-id order.
    pub records: Vec<DetRecord>,
    /// `category_ids[label]` is the COCO category id of a label.
    pub category_ids: Vec<u64>,
    /// Category names, parallel to `category_ids`.
    pub category_names: Vec<String>,
    /// Images left out because they had no usable (non-crowd, non-degenerate) box.
    pub images_without_boxes: usize,
    /// Boxes dropped because they lie wholly outside their image.
    pub boxes_outside_image: usize,
}

/// Build the records of `coco`, with image files under `img_dir`. With `skip_empty` (training), images without
/// a usable box are left out (they contribute no positives and mmdetection filters them too).
pub fn records_from_coco(coco: &CocoDataset, img_dir: &Path, skip_empty: bool) -> DetDataset {
    records_with_class_ids(coco, img_dir, skip_empty, crate::config::ClassIds::Sorted, 0)
}

/// [`records_from_coco`] for a detector of `num_classes` classes whose class indices map to category ids by
/// `class_ids` (annotations of a category outside them are left out). A class without a category of the
/// dataset (e.g. torchvision's class 0) is named `class_ID`.
pub fn records_with_class_ids(
    coco: &CocoDataset,
    img_dir: &Path,
    skip_empty: bool,
    class_ids: crate::config::ClassIds,
    num_classes: usize,
) -> DetDataset {
    let category_ids = class_ids.category_ids(&coco.sorted_category_ids(), num_classes);
    let category_names = category_ids
        .iter()
        .map(|id| {
            coco.category(*id)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| format!("class_{id}"))
        })
        .collect();
    let label_of = |cat: u64| category_ids.binary_search(&cat).ok();
    let mut records = Vec::new();
    let mut images_without_boxes = 0;
    let mut boxes_outside_image = 0;
    for id in coco.sorted_image_ids() {
        let Some(img) = coco.image(id) else { continue };
        let mut r = DetRecord {
            image_id: id,
            file: img_dir.join(&img.file_name),
            size: (img.width, img.height),
            boxes: Vec::new(),
            labels: Vec::new(),
            ignore: Vec::new(),
            ann_ids: Vec::new(),
            masks: Vec::new(),
        };
        for ann in coco.annotations_of(id) {
            let [x, y, w, h] = [ann.bbox[0], ann.bbox[1], ann.bbox[2], ann.bbox[3]];
            let b = [x as f32, y as f32, (x + w) as f32, (y + h) as f32];
            if ann.iscrowd != 0 {
                r.ignore.push(b);
                continue;
            }
            if w < 1.0 || h < 1.0 || ann.area <= 0.0 {
                continue;
            }
            // mmdetection's rule: the box must overlap the image (the resize clips boxes to the image)
            let inter_w = (x + w).min(img.width as f64) - x.max(0.0);
            let inter_h = (y + h).min(img.height as f64) - y.max(0.0);
            if inter_w <= 0.0 || inter_h <= 0.0 {
                boxes_outside_image += 1;
                continue;
            }
            let Some(label) = label_of(ann.category_id) else {
                continue;
            };
            r.boxes.push(b);
            r.labels.push(label);
            r.ann_ids.push(ann.id);
            r.masks.push(ann.segmentation.clone());
        }
        if r.boxes.is_empty() {
            images_without_boxes += 1;
            if skip_empty {
                continue;
            }
        }
        records.push(r);
    }
    DetDataset {
        records,
        category_ids,
        category_names,
        images_without_boxes,
        boxes_outside_image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attndet_coco::CocoJson;
    use serde_json::json;

    fn dataset() -> CocoDataset {
        let j: CocoJson = serde_json::from_value(json!({
            "images": [
                {"id": 3, "width": 40, "height": 30, "file_name": "c.png"},
                {"id": 1, "width": 40, "height": 30, "file_name": "a.png"},
                {"id": 2, "width": 40, "height": 30, "file_name": "b.png"}
            ],
            "categories": [{"id": 7, "name": "seven"}, {"id": 2, "name": "two"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [5, 5, 0.5, 8], "area": 4, "iscrowd": 0},
                {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 1},
                {"id": 4, "image_id": 2, "category_id": 2, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 1}
            ]
        }))
        .unwrap();
        CocoDataset::from_json(j, "mem.json").unwrap()
    }

    #[test]
    fn converts_boxes_maps_labels_and_separates_crowds() {
        let d = records_from_coco(&dataset(), Path::new("imgs"), false);
        assert_eq!(d.category_ids, vec![2, 7]); // label 0 = id 2, label 1 = id 7
        assert_eq!(d.category_names, vec!["two", "seven"]);
        let ids: Vec<u64> = d.records.iter().map(|r| r.image_id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let r = &d.records[0];
        assert_eq!(r.file, Path::new("imgs/a.png"));
        // [1, 2, 10, 20] xywh -> [1, 2, 11, 22]; the 0.5-wide box is dropped; the crowd is an ignore region
        assert_eq!(r.boxes, vec![[1.0, 2.0, 11.0, 22.0]]);
        assert_eq!(r.labels, vec![1]);
        assert_eq!(r.ignore, vec![[0.0, 0.0, 30.0, 30.0]]);
        assert_eq!(d.images_without_boxes, 2);
    }

    #[test]
    fn training_skips_images_without_usable_boxes() {
        let d = records_from_coco(&dataset(), Path::new("imgs"), true);
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.records[0].image_id, 1);
    }

    /// A box wholly outside its 40 x 30 image would be clipped to zero width by the resize and reach the
    /// regression loss as log(0): it is dropped and counted; a box partly inside is kept as annotated.
    #[test]
    fn boxes_outside_their_image_are_dropped_and_counted() {
        let j: CocoJson = serde_json::from_value(json!({
            "images": [{"id": 1, "width": 40, "height": 30, "file_name": "a.png"}],
            "categories": [{"id": 1, "name": "one"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 5, 10, 10], "area": 100, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, -20, 10, 20], "area": 200, "iscrowd": 0},
                {"id": 3, "image_id": 1, "category_id": 1, "bbox": [35, 25, 10, 10], "area": 100, "iscrowd": 0}
            ]
        }))
        .unwrap();
        let coco = CocoDataset::from_json(j, "mem.json").unwrap();
        let d = records_from_coco(&coco, Path::new("imgs"), true);
        // id 1 starts right of x = 40; id 2 ends at y = 0 (touching, no overlap); id 3 overlaps 5 x 5
        assert_eq!(d.boxes_outside_image, 2);
        assert_eq!(d.records[0].ann_ids, vec![3]);
        assert_eq!(d.records[0].boxes, vec![[35.0, 25.0, 45.0, 35.0]]);
        let empty = CocoDataset::from_json(
            serde_json::from_value(json!({"images": [], "categories": [], "annotations": []})).unwrap(),
            "empty.json",
        )
        .unwrap();
        let e = records_from_coco(&empty, Path::new("imgs"), true);
        assert_eq!((e.records.len(), e.boxes_outside_image), (0, 0));
    }
}
