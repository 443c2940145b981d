//! Detection building blocks, detectors, data pipeline and training engine on burn.
#![warn(missing_docs)]
