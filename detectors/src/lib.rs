//! Detection building blocks, detectors, data pipeline and training engine on burn.
#![warn(missing_docs)]

pub mod config;
pub mod data;
pub mod engine;
