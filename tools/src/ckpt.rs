//! What `test` and `infer` load: a checkpoint and the config its model is built from.
//!
//! A checkpoint directory of ours carries its resolved config and class names (`state.json`), so a config
//! argument is optional. When one is given it is compared with the checkpoint's, field by field:
//! - fields that change the model's tensors (a class count, a width, a backbone) make the checkpoint unusable:
//!   an error naming each differing field with both values, and the missing / unexpected / mis-shaped tensors
//!   (exit 2);
//! - any other difference (test settings such as `model.test_cfg.score_thr`, the data, the schedule) applies,
//!   with a warning naming each field and both values.
//!
//! Whether a difference changes the model is not guessed from field names: the model the config builds is
//! compared tensor by tensor with what the checkpoint file holds.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attndet_detectors::config::{
    ExperimentConfig, apply_override, from_value_with_path, validate_experiment,
};
use attndet_detectors::engine::checkpoint::{self, CheckpointError, ConfigDifference, TrainState};
use attndet_detectors::models::{AnyDetector, DetBackend};

use crate::errors::bad_input;
use crate::train::{Prepared, build_model, load_split, prepare};

/// A checkpoint as `test` and `infer` name it: a directory of ours, or a foreign file.
enum Source {
    /// A checkpoint directory (`epoch_N`, `best`, a converted one) and its state.
    Ours(PathBuf, Box<TrainState>),
    /// A whole mmdetection detector (`.pth`).
    Foreign(PathBuf),
}

/// Find the checkpoint `ckpt` names: a checkpoint directory, a work dir (its `latest`), or a file.
fn source(ckpt: &Path) -> anyhow::Result<Source> {
    if ckpt.is_file() {
        if ckpt.extension().is_some_and(|e| e == "json") {
            return Err(bad_input(format!(
                "{}: a config, not a checkpoint (give the checkpoint after it: CONFIG CKPT)",
                ckpt.display()
            )));
        }
        return Ok(Source::Foreign(ckpt.to_path_buf()));
    }
    let dir = if ckpt.join("state.json").exists() {
        ckpt.to_path_buf()
    } else if let Some(latest) = checkpoint::latest(ckpt) {
        latest
    } else {
        return Err(bad_input(format!(
            "{}: not a checkpoint directory (no state.json) nor a work dir with one",
            ckpt.display()
        )));
    };
    let state = checkpoint::load_state(&dir).map_err(|e| bad_input(e.to_string()))?;
    Ok(Source::Ours(dir, Box::new(state)))
}

/// A checkpoint's model, loaded into the config that describes it.
pub struct Loaded<B: DetBackend> {
    /// The model, its weights loaded.
    pub model: AnyDetector<B>,
    /// The config that runs (the given one, else the checkpoint's), overrides applied.
    pub prepared: Prepared,
    /// Class names in label order: the checkpoint's, else the val annotations' when readable, else empty.
    pub classes: Vec<String>,
    /// The checkpoint directory or file loaded.
    pub path: PathBuf,
}

/// The config of a checkpoint (its recorded resolved config) with `overrides` applied and checked.
fn config_of_checkpoint(dir: &Path, state: &TrainState, overrides: &[String]) -> anyhow::Result<Prepared> {
    if state.config.is_null() {
        return Err(bad_input(format!(
            "{}: this checkpoint records no config (written by an older attndet): give the config it was trained \
             with before it (CONFIG CKPT)",
            dir.display()
        )));
    }
    let mut resolved = state.config.clone();
    for o in overrides {
        apply_override(&mut resolved, o).map_err(|e| bad_input(format!("--cfg-options: {e}")))?;
    }
    let source = format!("the config of {}", dir.join("state.json").display());
    let cfg: ExperimentConfig =
        from_value_with_path(&resolved, &source).map_err(|e| bad_input(e.to_string()))?;
    validate_experiment(&cfg, &source).map_err(|e| bad_input(e.to_string()))?;
    Ok(Prepared { cfg, resolved })
}

/// The config a `CONFIG|CKPT` argument names: a config file, or the recorded config of a checkpoint directory
/// (or of a work dir's `latest`), with `overrides` applied and checked.
///
/// # Errors
/// Exit 2 for an unreadable or invalid config, a path that is neither, a foreign checkpoint (it records no
/// config of ours) or a checkpoint written before configs were recorded.
pub fn config_of(path: &Path, overrides: &[String]) -> anyhow::Result<Prepared> {
    if path.is_file() && path.extension().is_some_and(|e| e == "json") {
        let (cfg, resolved) = crate::config_cmd::load_config(path, overrides)?;
        return Ok(Prepared { cfg, resolved });
    }
    match source(path)? {
        Source::Ours(dir, state) => config_of_checkpoint(&dir, &state, overrides),
        Source::Foreign(file) => Err(bad_input(format!(
            "{}: a foreign checkpoint carries no config of ours: give the config instead",
            file.display()
        ))),
    }
}

fn listed(diffs: &[ConfigDifference]) -> String {
    diffs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Load the checkpoint `ckpt` with the config `config` (or the checkpoint's own, when `None`) and
/// `overrides`, checking the two configs against each other as the module documentation says.
pub fn load<B: DetBackend>(
    config: Option<&Path>,
    ckpt: &Path,
    overrides: &[String],
    device: &B::Device,
) -> anyhow::Result<Loaded<B>> {
    match source(ckpt)? {
        Source::Foreign(file) => {
            let Some(config) = config else {
                return Err(bad_input(format!(
                    "{}: a foreign checkpoint carries no config of ours: give the config first (CONFIG {})",
                    file.display(),
                    file.display()
                )));
            };
            let prepared = prepare(config, overrides, None)?;
            let model = crate::convert::load_foreign_model::<B>(&prepared.cfg, &file, device)?.0;
            let classes = val_classes(&prepared.cfg);
            Ok(Loaded {
                model,
                prepared,
                classes,
                path: file,
            })
        }
        Source::Ours(dir, state) => {
            let prepared = match config {
                Some(c) => prepare(c, overrides, None)?,
                None => config_of_checkpoint(&dir, &state, overrides)?,
            };
            // with the checkpoint's own config only the overrides can differ; they are what was asked for
            let diffs = match (config, state.config.is_null()) {
                (Some(_), false) => checkpoint::config_diff(&state.config, &prepared.resolved),
                _ => Vec::new(),
            };
            let model = build_model::<B>(&prepared.cfg, device)?;
            let model = match checkpoint::load_model(&dir, model, device) {
                Ok(m) => m,
                Err(CheckpointError::Mismatch { path, mismatch }) if !diffs.is_empty() => {
                    return Err(bad_input(format!(
                        "checkpoint {}: the config differs from the checkpoint's in {} field(s): {}; {mismatch}",
                        path.display(),
                        diffs.len(),
                        listed(&diffs)
                    )));
                }
                Err(e) => {
                    return Err(bad_input(format!("{e}")))
                        .with_context(|| format!("loading {}", dir.display()));
                }
            };
            if !diffs.is_empty() {
                eprintln!(
                    "warning: the config differs from the checkpoint's in {} field(s) that do not change the \
                     model's tensors; the given values apply: {}",
                    diffs.len(),
                    listed(&diffs)
                );
            }
            let classes = if state.classes.is_empty() {
                val_classes(&prepared.cfg)
            } else {
                state.classes.clone()
            };
            Ok(Loaded {
                model,
                prepared,
                classes,
                path: dir,
            })
        }
    }
}

/// Class names from the config's val annotations when they can be read; empty otherwise.
fn val_classes(cfg: &ExperimentConfig) -> Vec<String> {
    load_split(cfg, false)
        .map(|(_, d)| d.category_names)
        .unwrap_or_default()
}
