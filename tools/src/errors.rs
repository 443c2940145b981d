//! Mapping of errors to exit codes: 2 for bad usage or bad input, 1 for everything else.

use std::fmt;

use attndet_detectors::data::ImageError;
use attndet_detectors::engine::evaluate::EvalError;
use attndet_detectors::engine::trainer::TrainError;

/// An error caused by the user's input (a file, a field, an argument): exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Build an `anyhow::Error` that exits with code 2.
#[allow(dead_code)]
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// Exit code for an error: 2 when any error in the chain is a bad-input error, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let is_bad_input = err.chain().any(|e| {
        e.is::<BadInput>()
            || e.is::<attndet_backbones::BackboneError>()
            || e.downcast_ref::<attndet_coco::CocoError>()
                .is_some_and(|c| c.is_bad_input())
            || e.downcast_ref::<ImageError>().is_some_and(is_bad_image)
            || e.downcast_ref::<TrainError>().is_some_and(|t| match t {
                TrainError::Data(i) => is_bad_image(i),
                TrainError::Lock(l) => l.is_held(),
                _ => false,
            })
            || e.downcast_ref::<EvalError>()
                .is_some_and(|v| matches!(v, EvalError::Data(i) if is_bad_image(i)))
    });
    if is_bad_input { 2 } else { 1 }
}

/// A missing, corrupt, oversized or mis-annotated image is bad input; a failing loader is not.
fn is_bad_image(e: &ImageError) -> bool {
    !e.loader_failure
}
