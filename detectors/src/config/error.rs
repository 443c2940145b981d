//! Errors of config loading: all of them are bad input (exit code 2 in the binary).

use std::path::PathBuf;

/// A config that cannot be read, resolved or typed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("config {path} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error (with line and column).
        source: serde_json::Error,
    },
    /// `_base_` inheritance problem (not a list of strings, a cycle, ...).
    #[error("config {path}: {message}")]
    Base {
        /// The file naming the base.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A `--cfg-options` entry that cannot be applied.
    #[error("--cfg-options `{option}`: {message}")]
    Override {
        /// The entry as given.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The resolved config does not fit the typed schema (unknown field, wrong type, missing field).
    #[error("config {source_name}: at `{path}`: {message}")]
    Invalid {
        /// The config file.
        source_name: String,
        /// JSON path of the offending field, e.g. `model.bbox_head.loss_cls`.
        path: String,
        /// serde's message, e.g. "unknown field `gama`, expected one of `gamma`, `alpha`, `loss_weight`".
        message: String,
    },
}
