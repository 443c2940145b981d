//! Per-image metadata and ground truth: the one description of an image that the data pipeline hands to the
//! detectors, whatever the detector.

use std::path::PathBuf;

use super::instances::RleMask;

/// Per-image metadata carried with a batch: what maps detections back to the original image.
///
/// Sizes are `(width, height)` pairs throughout (the order of `image::GenericImageView::dimensions`);
/// [`ImageMeta::img_hw`] and [`ImageMeta::pad_hw`] give the `[height, width]` that tensor code wants.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageMeta {
    /// COCO image id.
    pub image_id: u64,
    /// Image file.
    pub file: PathBuf,
    /// Original `(width, height)`.
    pub ori_size: (u32, u32),
    /// `(width, height)` after resizing (before padding; mmdetection `img_shape`): boxes are clipped to it.
    pub img_size: (u32, u32),
    /// `(sx, sy)`: resized = original * scale.
    pub scale: (f32, f32),
    /// Whether the image was flipped horizontally.
    pub flipped: bool,
    /// `(width, height)` of this image padded to the size divisor (mmdetection `pad_shape`): anchors beyond
    /// it are invalid. Set when batching; at most the batch tensor's size.
    pub pad_size: (u32, u32),
}

impl ImageMeta {
    /// Meta of an image of `(width, height)` that was neither resized, flipped nor padded.
    pub fn unscaled(image_id: u64, size: (u32, u32)) -> Self {
        Self {
            image_id,
            file: PathBuf::new(),
            ori_size: size,
            img_size: size,
            scale: (1.0, 1.0),
            flipped: false,
            pad_size: size,
        }
    }

    /// `[height, width]` after resizing.
    pub fn img_hw(&self) -> [usize; 2] {
        [self.img_size.1 as usize, self.img_size.0 as usize]
    }

    /// `[height, width]` after padding, bounded by a batch tensor of `[H, W]`.
    pub fn pad_hw(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        [h.min(self.pad_size.1 as usize), w.min(self.pad_size.0 as usize)]
    }

    /// Map a box `[x1, y1, x2, y2]` from the transformed image back to the original: undo the flip (in the
    /// resized frame), then the scale, and clip to the original size.
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let (w, _) = self.img_size;
        let b = if self.flipped {
            [w as f32 - b[2], b[1], w as f32 - b[0], b[3]]
        } else {
            b
        };
        let (sx, sy) = self.scale;
        let (ow, oh) = (self.ori_size.0 as f32, self.ori_size.1 as f32);
        [
            (b[0] / sx).clamp(0.0, ow),
            (b[1] / sy).clamp(0.0, oh),
            (b[2] / sx).clamp(0.0, ow),
            (b[3] / sy).clamp(0.0, oh),
        ]
    }
}

/// The ground truth of one image, in the coordinates of the transformed (resized, flipped) image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroundTruth {
    /// Boxes `[x1, y1, x2, y2]`.
    pub boxes: Vec<[f32; 4]>,
    /// 0-based contiguous class index of each box.
    pub labels: Vec<usize>,
    /// Crowd regions `[x1, y1, x2, y2]`: priors inside them are ignored, never negatives.
    pub ignore: Vec<[f32; 4]>,
    /// Instance masks, one per box, in the transformed image's `[height, width]` (run-length encoded to keep
    /// a batch's memory bounded); `None` when the dataset or the detector carries no masks.
    pub masks: Option<Vec<RleMask>>,
}

impl GroundTruth {
    /// Number of (non-crowd) instances.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether the image has no instance.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}
