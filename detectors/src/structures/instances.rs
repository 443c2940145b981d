use burn::prelude::*;

use super::boxes::Boxes;

/// A binary mask in COCO's uncompressed run-length encoding: runs over the column-major (Fortran order)
/// pixel sequence, alternating 0s and 1s and starting with a (possibly empty) run of 0s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RleMask {
    /// `[height, width]` of the mask.
    pub size: [usize; 2],
    /// Run lengths; they sum to `height * width`.
    pub counts: Vec<u32>,
}

impl RleMask {
    /// Encodes a row-major `height x width` bitmap.
    pub fn encode(bitmap: &[bool], [height, width]: [usize; 2]) -> Self {
        let mut counts = Vec::new();
        let (mut current, mut run) = (false, 0u32);
        for x in 0..width {
            for y in 0..height {
                let v = bitmap[y * width + x];
                if v != current {
                    counts.push(run);
                    current = v;
                    run = 0;
                }
                run += 1;
            }
        }
        counts.push(run);
        Self {
            size: [height, width],
            counts,
        }
    }

    /// Decodes to a row-major bitmap.
    pub fn decode(&self) -> Vec<bool> {
        let [height, width] = self.size;
        let mut out = vec![false; height * width];
        let (mut pos, mut value) = (0usize, false);
        for &c in &self.counts {
            for p in pos..(pos + c as usize).min(height * width) {
                let (x, y) = (p / height, p % height);
                out[y * width + x] = value;
            }
            pos += c as usize;
            value = !value;
        }
        out
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).map(|&c| c as u64).sum()
    }
}

/// Instance masks in one of two representations.
#[derive(Debug, Clone)]
pub enum Masks<B: Backend> {
    /// Full-image bitmaps, `[N, H, W]`.
    Bitmaps(Tensor<B, 3, Bool>),
    /// Run-length encoded masks, one per instance (compact on the host).
    Rle(Vec<RleMask>),
}

impl<B: Backend> Masks<B> {
    /// Number of masks.
    pub fn len(&self) -> usize {
        match self {
            Masks::Bitmaps(t) => t.dims()[0],
            Masks::Rle(v) => v.len(),
        }
    }

    /// Whether there is no mask.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The objects of one image: ground truth or predictions.
///
/// # Shapes
/// - boxes: `[N, 4]` xyxy absolute pixels
/// - labels: `[N]`, class indices in `0..num_classes`
/// - scores: `[N]` (predictions only)
/// - masks: `N` masks (instance segmentation only)
#[derive(Debug, Clone)]
pub struct Instances<B: Backend> {
    /// Boxes.
    pub boxes: Boxes<B>,
    /// Class labels.
    pub labels: Tensor<B, 1, Int>,
    /// Confidence scores of predictions.
    pub scores: Option<Tensor<B, 1>>,
    /// Instance masks.
    pub masks: Option<Masks<B>>,
}

impl<B: Backend> Instances<B> {
    /// Instances with boxes and labels only.
    pub fn new(boxes: Boxes<B>, labels: Tensor<B, 1, Int>) -> Self {
        Self {
            boxes,
            labels,
            scores: None,
            masks: None,
        }
    }

    /// No instance (e.g. an image without annotations).
    pub fn empty(device: &B::Device) -> Self {
        Self::new(Boxes::empty(device), Tensor::zeros([0], device))
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether there is no instance.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}
