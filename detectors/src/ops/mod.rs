//! Box operations on device tensors: overlaps (IoU, IoF, GIoU), class-aware NMS, RoIAlign and the
//! multi-level RoI extractor.

mod iou;
mod nms;
mod roi_align;
mod roi_extractor;
mod torch_sort;

pub use iou::{OVERLAP_EPS, OverlapMode, aligned_giou, aligned_iou, pairwise_giou, pairwise_overlaps};
pub use nms::{batched_nms, batched_nms_host, nms_host};
pub use roi_align::{RoiAlignBackend, RoiAlignOptions, roi_align, roi_align_gather, roi_align_scatter};
pub use roi_extractor::{LevelMapping, RoiExtractor, RoiExtractorConfig};
