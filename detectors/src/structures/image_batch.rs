use burn::prelude::*;

/// Sizes of one image of a batch, each `[height, width]` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageMeta {
    /// Size of the image as loaded from disk (before resizing); predictions are scaled back to it.
    pub original_size: [usize; 2],
    /// Size after resizing, before padding (mmdetection `img_shape`); boxes are clipped to it.
    pub image_size: [usize; 2],
    /// Size after padding this image to the size divisor (mmdetection `pad_shape`); anchors outside it are
    /// invalid. At most the batch tensor's `[H, W]`.
    pub pad_size: [usize; 2],
}

impl ImageMeta {
    /// Meta of an image that was neither resized nor padded.
    pub fn unscaled(size: [usize; 2]) -> Self {
        Self {
            original_size: size,
            image_size: size,
            pad_size: size,
        }
    }

    /// `(sx, sy)` mapping resized coordinates back to the original image.
    pub fn scale_to_original(&self) -> (f32, f32) {
        (
            self.original_size[1] as f32 / self.image_size[1] as f32,
            self.original_size[0] as f32 / self.image_size[0] as f32,
        )
    }
}

/// A padded batch of images with the sizes of each.
///
/// # Shapes
/// - images: `[N, 3, H, W]`, every image at the top-left, zero padded to the batch's `[H, W]`
/// - metas: `N` entries
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// The padded image tensor.
    pub images: Tensor<B, 4>,
    /// Per-image sizes.
    pub metas: Vec<ImageMeta>,
}

impl<B: Backend> ImageBatch<B> {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether the batch has no image.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// The batch's padded `[H, W]`.
    pub fn batch_size_hw(&self) -> [usize; 2] {
        let [_, _, h, w] = self.images.dims();
        [h, w]
    }
}
