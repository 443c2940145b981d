//! COCO for attndet: the instances data model and loader, a pycocotools-exact evaluator, the mask API
//! (RLE, polygons) and synthetic datasets. Pure Rust, no burn dependency, so it builds and tests fast.
#![warn(missing_docs)]
