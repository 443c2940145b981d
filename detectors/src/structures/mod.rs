//! Typed detection structures: boxes, instances, image batches, and the shape/config errors of the building
//! blocks.
//!
//! Box format everywhere in this crate: `[N, 4]` float tensors, `(x1, y1, x2, y2)` in absolute pixels of the
//! (resized) input image, with `x2 >= x1` for a valid box. Widths are `x2 - x1` (no `+1`, as in torchvision and
//! mmdetection 2+).

mod boxes;
pub(crate) mod error;
mod image_batch;
mod instances;
mod meta;

pub use boxes::Boxes;
pub use error::BlocksError;
pub use image_batch::ImageBatch;
pub use instances::{Instances, Masks, RleMask};
pub use meta::{GroundTruth, ImageMeta};
