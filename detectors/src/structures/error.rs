use thiserror::Error;

/// Bad input to a building block: a tensor of the wrong shape or an invalid configuration value.
///
/// Every variant names the tensor or the config field, so the binary can report it and exit with code 2.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BlocksError {
    /// A tensor does not have the shape the operation needs.
    #[error("tensor `{tensor}` has shape {got:?}, expected {expected}")]
    Shape {
        /// Name of the offending tensor (argument name).
        tensor: String,
        /// The shape that was passed.
        got: Vec<usize>,
        /// The expected shape, in words (e.g. `[N, 4]`).
        expected: String,
    },
    /// A configuration value is out of its valid range.
    #[error("config field `{field}`: {reason}")]
    Config {
        /// Name of the field (as spelled in the JSON config).
        field: String,
        /// Why the value is invalid.
        reason: String,
    },
}

impl BlocksError {
    /// A [`BlocksError::Shape`] for `tensor`.
    pub fn shape(tensor: &str, got: &[usize], expected: &str) -> Self {
        Self::Shape {
            tensor: tensor.into(),
            got: got.to_vec(),
            expected: expected.into(),
        }
    }

    /// A [`BlocksError::Config`] for `field`.
    pub fn config(field: &str, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks that a `[N, 4]` tensor has 4 columns.
pub(crate) fn check_boxes(name: &str, dims: [usize; 2]) -> Result<(), BlocksError> {
    if dims[1] == 4 {
        Ok(())
    } else {
        Err(BlocksError::shape(name, &dims, "[N, 4] (x1, y1, x2, y2)"))
    }
}
