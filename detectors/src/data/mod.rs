//! The input pipeline: COCO records, transforms, batching and the threaded loader.

pub mod coco;
pub mod loader;
pub mod transforms;

pub use loader::{Batch, BatchItem, DetRecord, EpochLoader, ImageError, LoaderOptions, Shard};
