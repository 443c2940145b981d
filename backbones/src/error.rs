//! The crate's typed error: every variant names the model, file, key or field at fault.

use std::path::PathBuf;

/// Everything that can go wrong when naming, building, loading or saving a backbone.
///
/// All variants describe bad input (a wrong name, a wrong or unreadable file), so a binary maps them to exit 2.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// The model name is not in the zoo (or its parameters do not parse).
    #[error("unknown model `{name}`: {reason}")]
    UnknownModel {
        /// The name as given.
        name: String,
        /// Why it was rejected, with the accepted forms.
        reason: String,
    },

    /// A configuration value is out of range (e.g. an even ECA kernel size).
    #[error("invalid configuration of `{model}`: {field}: {reason}")]
    InvalidConfig {
        /// The model being configured.
        model: String,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A checkpoint file could not be opened or parsed.
    #[error("cannot read checkpoint {}: {reason}", path.display())]
    CheckpointRead {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        reason: String,
    },

    /// A checkpoint does not fit the architecture: the keys at fault are listed by name.
    #[error("checkpoint {} does not fit `{model}`:\n{mismatch}", path.display())]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
        /// The architecture it was loaded into.
        model: String,
        /// Missing, unexpected and mis-shaped keys.
        mismatch: KeyMismatch,
    },

    /// Weights could not be written.
    #[error("cannot write weights to {}: {reason}", path.display())]
    CheckpointWrite {
        /// The file.
        path: PathBuf,
        /// The writer's message.
        reason: String,
    },
}

/// The keys of a checkpoint that do not fit a model, by name (checkpoint naming, after the key map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyMismatch {
    /// Tensors the model needs that the checkpoint lacks.
    pub missing: Vec<String>,
    /// Tensors of the checkpoint the model has no place for.
    pub unexpected: Vec<String>,
    /// Tensors present on both sides with different shapes: `(key, model shape, checkpoint shape)`.
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl KeyMismatch {
    /// True when the checkpoint fits exactly.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape_mismatch.is_empty()
    }
}

impl std::fmt::Display for KeyMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Long lists are cut: a wrong architecture can mismatch thousands of keys.
        const SHOWN: usize = 40;
        fn list(f: &mut std::fmt::Formatter<'_>, title: &str, items: &[String]) -> std::fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {title} ({}):", items.len())?;
            for item in items.iter().take(SHOWN) {
                writeln!(f, "    {item}")?;
            }
            if items.len() > SHOWN {
                writeln!(f, "    ... and {} more", items.len() - SHOWN)?;
            }
            Ok(())
        }
        list(f, "missing keys", &self.missing)?;
        list(f, "unexpected keys", &self.unexpected)?;
        let shapes: Vec<String> = self
            .shape_mismatch
            .iter()
            .map(|(k, model, ckpt)| format!("{k}: model {model:?}, checkpoint {ckpt:?}"))
            .collect();
        list(f, "shape mismatches", &shapes)
    }
}
