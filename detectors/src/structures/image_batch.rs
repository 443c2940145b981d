use burn::prelude::*;

use super::ImageMeta;

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
