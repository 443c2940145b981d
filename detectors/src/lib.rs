//! Detection building blocks, detectors, data pipeline and training engine on burn.
#![warn(missing_docs)]

pub mod anchors;
pub mod assigners;
pub mod coders;
pub mod config;
pub mod data;
pub mod engine;
pub mod heads;
pub mod losses;
pub mod models;
pub mod necks;
pub mod ops;
pub mod roi_heads;
pub mod samplers;
pub mod structures;
