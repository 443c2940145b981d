//! The COCO mask API, bit-identical to pycocotools 2.0.11 (`maskApi.c`): run-length encoding, polygon and
//! box rasterization, area, bounding boxes, merge, IoU and the compressed-string codec.
//!
//! Masks are `h x w`, stored column-major (pixel `(x, y)` is at index `x * h + y`), like pycocotools.

mod codec;
mod polygon;
mod rle;

pub use codec::{rle_from_string, rle_to_string};
pub use polygon::{fr_bbox, fr_poly};
pub(crate) use rle::box_iou as rle_box_iou;
pub use rle::{Rle, bb_iou, iou, merge};
