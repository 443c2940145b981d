//! Evaluation parameters with pycocotools' defaults (`Params.setDetParams`).

/// What is compared: boxes or masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IouType {
    /// Box IoU on `[x, y, w, h]` boxes.
    Bbox,
    /// Mask IoU on RLEs (polygons are rasterized at the image size).
    Segm,
}

impl std::str::FromStr for IouType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bbox" => Ok(IouType::Bbox),
            "segm" => Ok(IouType::Segm),
            other => Err(format!("unknown IoU type `{other}` (expected `bbox` or `segm`)")),
        }
    }
}

impl std::fmt::Display for IouType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IouType::Bbox => "bbox",
            IouType::Segm => "segm",
        })
    }
}

/// An object-size range `[lo, hi]` in pixels of area, both ends inclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct AreaRange {
    /// Label used by the summary (`all`, `small`, `medium`, `large`).
    pub label: String,
    /// Lower bound (inclusive).
    pub lo: f64,
    /// Upper bound (inclusive).
    pub hi: f64,
}

/// Evaluation parameters. [`EvalParams::new`] gives pycocotools' defaults exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalParams {
    /// Box or mask IoU.
    pub iou_type: IouType,
    /// IoU thresholds, default `np.linspace(.5, .95, 10)` bit for bit.
    pub iou_thrs: Vec<f64>,
    /// Recall thresholds, default `np.linspace(0, 1, 101)` bit for bit.
    pub rec_thrs: Vec<f64>,
    /// Detections kept per image and category, default `[1, 10, 100]` (sorted before use).
    pub max_dets: Vec<usize>,
    /// Area ranges, default all/small/medium/large.
    pub area_ranges: Vec<AreaRange>,
    /// Evaluate per category (true) or pool all categories (false, class-agnostic, as for proposals).
    pub use_cats: bool,
    /// Evaluate only these images (pycocotools `params.imgIds`); `None`: every GT image.
    pub image_ids: Option<Vec<u64>>,
    /// Evaluate only these categories (pycocotools `params.catIds`); `None`: every GT category.
    pub category_ids: Option<Vec<u64>>,
}

/// `np.linspace(start, stop, num)` as numpy computes it: `i * step + start`, the last value forced to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

impl EvalParams {
    /// pycocotools' defaults for `iou_type`.
    pub fn new(iou_type: IouType) -> Self {
        let range = |label: &str, lo: f64, hi: f64| AreaRange {
            label: label.into(),
            lo,
            hi,
        };
        EvalParams {
            iou_type,
            iou_thrs: linspace(0.5, 0.95, 10),
            rec_thrs: linspace(0.0, 1.0, 101),
            max_dets: vec![1, 10, 100],
            area_ranges: vec![
                range("all", 0.0, 1e10),
                range("small", 0.0, 1024.0),
                range("medium", 1024.0, 9216.0),
                range("large", 9216.0, 1e10),
            ],
            use_cats: true,
            image_ids: None,
            category_ids: None,
        }
    }

    /// Class-agnostic box recall for region proposals: maxDets `[100, 300, 1000]`, categories pooled.
    pub fn proposals() -> Self {
        EvalParams {
            max_dets: vec![100, 300, 1000],
            use_cats: false,
            ..EvalParams::new(IouType::Bbox)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_match_numpy_bits() {
        let p = EvalParams::new(IouType::Bbox);
        // np.linspace(.5, .95, 10)[8] is 0.8999999999999999, not 0.9.
        assert_eq!(p.iou_thrs[8], 0.8999999999999999);
        assert_eq!(p.iou_thrs[9], 0.95);
        // np.linspace(0, 1, 101)[57] is 0.5700000000000001.
        assert_eq!(p.rec_thrs[57], 0.5700000000000001);
        assert_eq!(p.rec_thrs[100], 1.0);
        assert!(linspace(0.0, 1.0, 0).is_empty());
    }
}
