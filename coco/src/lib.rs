//! COCO for attndet: the instances data model and loader, a pycocotools-exact evaluator, the mask API
//! (RLE, polygons) and synthetic datasets. Pure Rust, no burn dependency, so it builds and tests fast.
//!
//! ```no_run
//! use attndet_coco::{CocoDataset, EvalParams, IouType, evaluate, load_results};
//! let gt = CocoDataset::load("instances_val2017.json")?;
//! let dets = load_results("detections.json", &gt)?;
//! let ev = evaluate(&gt, &dets, &EvalParams::new(IouType::Bbox))?;
//! print!("{}", ev.summary());
//! # Ok::<(), attndet_coco::CocoError>(())
//! ```
#![warn(missing_docs)]

pub mod annotations;
pub mod dataset;
pub mod draw;
pub mod error;
pub mod eval;
pub mod mask;
pub mod results;
pub mod synth;

pub use annotations::{Annotation, Category, CocoJson, Image, RleCounts, RleJson, Segmentation};
pub use dataset::CocoDataset;
pub use error::{CocoError, MaskError};
pub use eval::{EvalParams, Evaluation, IouType, evaluate};
pub use mask::Rle;
pub use results::{Detection, load_results, parse_results, write_results};
