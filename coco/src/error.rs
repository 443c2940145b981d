//! The crate's typed error. Every variant but [`CocoError::Write`] means bad input (exit code 2 in the binary).

use std::path::PathBuf;

/// Errors of the COCO data model, mask API, evaluator and generators.
#[derive(Debug, thiserror::Error)]
pub enum CocoError {
    /// A file could not be read (missing, unreadable).
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not JSON of the expected shape (the message carries line and column).
    #[error("{}: {error}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        error: serde_json::Error,
    },
    /// The JSON parsed but its content is invalid: `at` is the JSON path (with the annotation id where known).
    #[error("{}: {at}: {problem}", path.display())]
    Invalid {
        /// The file (or a description of the in-memory source).
        path: PathBuf,
        /// JSON path of the offending element, e.g. `annotations[12] (id 345).bbox`.
        at: String,
        /// What is wrong.
        problem: String,
    },
    /// A JSON file is larger than the limit ([`crate::dataset::max_json_bytes`]).
    #[error(
        "{}: {size} bytes is more than the limit of {limit} bytes for a JSON file (set ATTNDET_MAX_JSON_BYTES to raise it)",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A mask operation got invalid input.
    #[error("mask: {0}")]
    Mask(#[from] MaskError),
    /// Evaluation was asked something impossible (e.g. parameters out of range).
    #[error("evaluation: {0}")]
    Eval(String),
}

impl CocoError {
    /// Whether the error is the user's input (a file, a field, an argument) rather than a runtime failure.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, CocoError::Write { .. })
    }

    pub(crate) fn invalid(
        path: impl Into<PathBuf>,
        at: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        CocoError::Invalid {
            path: path.into(),
            at: at.into(),
            problem: problem.into(),
        }
    }
}

/// Errors of the mask API (RLE, polygons, compressed strings).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// RLE run lengths do not add up to `h * w`.
    #[error("RLE counts sum to {sum} but the mask has h*w = {expected} pixels")]
    CountsSum {
        /// Sum of the counts.
        sum: u64,
        /// `h * w`.
        expected: u64,
    },
    /// A compressed RLE string is malformed.
    #[error("malformed compressed RLE string at byte {pos}: {why}")]
    MalformedString {
        /// Byte offset of the problem.
        pos: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// Masks of different sizes were combined.
    #[error("mask sizes differ: {a_h}x{a_w} vs {b_h}x{b_w} (h x w)")]
    SizeMismatch {
        /// First mask height.
        a_h: u32,
        /// First mask width.
        a_w: u32,
        /// Second mask height.
        b_h: u32,
        /// Second mask width.
        b_w: u32,
    },
    /// A polygon has fewer than 3 points.
    #[error("polygon has {coords} coordinates; at least 6 (3 points) are needed")]
    PolygonTooShort {
        /// Number of coordinates.
        coords: usize,
    },
    /// A pixel buffer does not have `h * w` entries.
    #[error("mask buffer has {len} pixels, expected h*w = {expected}")]
    BufferSize {
        /// Buffer length.
        len: usize,
        /// `h * w`.
        expected: usize,
    },
}
