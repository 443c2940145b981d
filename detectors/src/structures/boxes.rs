use burn::prelude::*;

use super::error::{BlocksError, check_boxes};

/// A set of axis-aligned boxes on one image.
///
/// # Shapes
/// - tensor: `[N, 4]`, `(x1, y1, x2, y2)`, absolute pixels; `N` may be 0.
#[derive(Debug, Clone)]
pub struct Boxes<B: Backend> {
    tensor: Tensor<B, 2>,
}

impl<B: Backend> Boxes<B> {
    /// Wraps a `[N, 4]` xyxy tensor.
    ///
    /// # Errors
    /// [`BlocksError::Shape`] when the tensor is not `[N, 4]`.
    pub fn new(tensor: Tensor<B, 2>) -> Result<Self, BlocksError> {
        check_boxes("boxes", tensor.dims())?;
        Ok(Self { tensor })
    }

    /// An empty `[0, 4]` set.
    pub fn empty(device: &B::Device) -> Self {
        Self {
            tensor: Tensor::zeros([0, 4], device),
        }
    }

    /// Boxes from host rows.
    pub fn from_rows(rows: &[[f32; 4]], device: &B::Device) -> Self {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Self {
            tensor: Tensor::from_data(TensorData::new(flat, [rows.len(), 4]), device),
        }
    }

    /// Number of boxes `N`.
    pub fn len(&self) -> usize {
        self.tensor.dims()[0]
    }

    /// Whether there is no box.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `[N, 4]` tensor.
    pub fn tensor(&self) -> &Tensor<B, 2> {
        &self.tensor
    }

    /// The `[N, 4]` tensor, by value.
    pub fn into_tensor(self) -> Tensor<B, 2> {
        self.tensor
    }

    /// Widths `x2 - x1`, `[N]`.
    pub fn widths(&self) -> Tensor<B, 1> {
        column(&self.tensor, 2) - column(&self.tensor, 0)
    }

    /// Heights `y2 - y1`, `[N]`.
    pub fn heights(&self) -> Tensor<B, 1> {
        column(&self.tensor, 3) - column(&self.tensor, 1)
    }

    /// Areas `(x2 - x1) * (y2 - y1)`, `[N]` (negative for inverted boxes, as torchvision's `box_area`).
    pub fn area(&self) -> Tensor<B, 1> {
        self.widths() * self.heights()
    }

    /// Clamps the coordinates into an image of `[height, width]` pixels: `x` into `[0, width]`, `y` into
    /// `[0, height]` (torchvision `clip_boxes_to_image`, mmdetection `clip_border`).
    pub fn clip(self, [height, width]: [usize; 2]) -> Self {
        let n = self.len();
        let t = self.tensor.reshape([n, 2, 2]);
        let x = t.clone().slice(s![.., .., 0..1]).clamp(0.0, width as f32);
        let y = t.slice(s![.., .., 1..2]).clamp(0.0, height as f32);
        Self {
            tensor: Tensor::cat(vec![x, y], 2).reshape([n, 4]),
        }
    }

    /// Mask of boxes whose width and height are both larger than `threshold`, `[N]` (detectron2's
    /// `nonempty`; `threshold = 0` drops degenerate boxes).
    pub fn nonempty(&self, threshold: f32) -> Tensor<B, 1, Bool> {
        self.widths()
            .greater_elem(threshold)
            .bool_and(self.heights().greater_elem(threshold))
    }

    /// Scales x coordinates by `sx` and y coordinates by `sy` (image resizing).
    pub fn scale(self, sx: f32, sy: f32) -> Self {
        let device = self.tensor.device();
        let factors = Tensor::<B, 1>::from_floats([sx, sy, sx, sy], &device).reshape([1, 4]);
        Self {
            tensor: self.tensor * factors,
        }
    }

    /// Mirrors the boxes left-right in an image `width` pixels wide: `x1' = width - x2`, `x2' = width - x1`
    /// (mmdetection `bbox_flip`, horizontal).
    pub fn flip_horizontal(self, width: usize) -> Self {
        let x1 = column(&self.tensor, 0);
        let x2 = column(&self.tensor, 2);
        let w = width as f32;
        let t = Tensor::stack(
            vec![
                x2.neg().add_scalar(w),
                column(&self.tensor, 1),
                x1.neg().add_scalar(w),
                column(&self.tensor, 3),
            ],
            1,
        );
        Self { tensor: t }
    }

    /// Mirrors the boxes top-bottom in an image `height` pixels high.
    pub fn flip_vertical(self, height: usize) -> Self {
        let y1 = column(&self.tensor, 1);
        let y2 = column(&self.tensor, 3);
        let h = height as f32;
        let t = Tensor::stack(
            vec![
                column(&self.tensor, 0),
                y2.neg().add_scalar(h),
                column(&self.tensor, 2),
                y1.neg().add_scalar(h),
            ],
            1,
        );
        Self { tensor: t }
    }

    /// Keeps the rows at `indices` (`[K]`, in that order).
    pub fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        Self {
            tensor: self.tensor.select(0, indices),
        }
    }

    /// Concatenates box sets (all on one device; an empty list gives an empty set).
    pub fn cat(sets: Vec<Self>, device: &B::Device) -> Self {
        if sets.is_empty() {
            return Self::empty(device);
        }
        Self {
            tensor: Tensor::cat(sets.into_iter().map(|b| b.tensor).collect(), 0),
        }
    }

    /// The boxes as host rows.
    pub fn to_rows(&self) -> Vec<[f32; 4]> {
        let v = self
            .tensor
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        v.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
    }
}

impl<B: Backend> TryFrom<Tensor<B, 2>> for Boxes<B> {
    type Error = BlocksError;
    fn try_from(t: Tensor<B, 2>) -> Result<Self, BlocksError> {
        Self::new(t)
    }
}

/// Column `i` of a `[N, K]` tensor as `[N]`.
pub(crate) fn column<B: Backend>(t: &Tensor<B, 2>, i: usize) -> Tensor<B, 1> {
    let n = t.dims()[0];
    t.clone().slice(s![.., i..i + 1]).reshape([n])
}
