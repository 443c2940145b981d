//! Training checkpoints: one directory per saved epoch holding the model record, the optimizer record
//! (momentum buffers, keyed by the ParamIds the model record restores) and `state.json` (schedule position,
//! seed, best AP, resolved config). Each directory is written under a temporary name and renamed into place,
//! so a crash never leaves a half-written checkpoint behind.
//!
//! Layout of a work dir: `epoch_N/`, `best/`, `latest` (a text file naming the newest `epoch_N`).

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

const MODEL_FILE: &str = "model";
const OPTIM_FILE: &str = "optim";
const STATE_FILE: &str = "state.json";

/// Where training stands; everything besides the tensors that an exact resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Completed epochs.
    pub epoch: usize,
    /// Completed iterations over all epochs (the warmup position).
    pub global_iter: usize,
    /// The run's seed. Every random choice of epoch `e` derives from `(seed, e)`, so the seed and the epoch
    /// are the whole RNG state.
    pub seed: u64,
    /// Learning rate after `--auto-scale-lr`.
    pub base_lr: f64,
    /// Best validation bbox AP so far and its epoch.
    pub best: Option<(f64, usize)>,
    /// The resolved config of the run.
    pub config: serde_json::Value,
}

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// burn's recorder failed (missing file, or a record of another model).
    #[error("checkpoint {path}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// The recorder's message.
        message: String,
    },
    /// `state.json` is unreadable.
    #[error("checkpoint {path}: bad state.json: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

/// Write the model, the optimizer and `state` into `dir` atomically (temp dir + rename; an existing `dir` is
/// replaced only once the new one is complete).
pub fn save<B, M, O>(dir: &Path, model: &M, optim: &O, state: &TrainState) -> Result<(), CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    write_dir(dir, |tmp| {
        write_model_and_state(tmp, model, state)?;
        let optim_path = tmp.join(OPTIM_FILE);
        recorder()
            .record(optim.to_record(), optim_path.clone())
            .map_err(|e| CheckpointError::Record {
                path: optim_path,
                message: e.to_string(),
            })
    })
}

/// Write a checkpoint without optimizer state (e.g. converted weights) into `dir` atomically: enough for
/// [`load_model`] and [`load_state`] (`attndet test`, `infer`), not for an exact resume.
pub fn save_model<B: burn::prelude::Backend, M: burn::module::Module<B>>(
    dir: &Path,
    model: &M,
    state: &TrainState,
) -> Result<(), CheckpointError> {
    write_dir(dir, |tmp| write_model_and_state(tmp, model, state))
}

fn write_model_and_state<B: burn::prelude::Backend, M: burn::module::Module<B>>(
    dir: &Path,
    model: &M,
    state: &TrainState,
) -> Result<(), CheckpointError> {
    let model_path = dir.join(MODEL_FILE);
    model
        .clone()
        .save_file(&model_path, &recorder())
        .map_err(|e| CheckpointError::Record {
            path: model_path.clone(),
            message: e.to_string(),
        })?;
    let state_path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).expect("TrainState serializes");
    std::fs::write(&state_path, text).map_err(io(&state_path))
}

/// Fill a temporary directory beside `dir` with `fill`, then rename it to `dir` (replacing an old one only
/// once the new one is complete).
fn write_dir(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "ckpt".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(io(dir))?;
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
    }
    Ok(())
}

/// Point `work_dir/latest` at `dir` (atomically).
pub fn mark_latest(work_dir: &Path, dir: &Path) -> Result<(), CheckpointError> {
    let latest = work_dir.join("latest");
    let tmp = work_dir.join(format!(".latest.tmp-{}", std::process::id()));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    std::fs::write(&tmp, name).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &latest).map_err(io(&latest))
}

/// The checkpoint `work_dir/latest` names, if any.
pub fn latest(work_dir: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(work_dir.join("latest")).ok()?;
    let dir = work_dir.join(name.trim());
    dir.join(STATE_FILE).exists().then_some(dir)
}

/// Read `state.json` of a checkpoint.
pub fn load_state(dir: &Path) -> Result<TrainState, CheckpointError> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|source| CheckpointError::State { path, source })
}

/// Load the model record of a checkpoint into `model` (which must have the same structure). The record's
/// ParamIds are restored, so the optimizer record of the same checkpoint matches.
pub fn load_model<B: burn::prelude::Backend, M: burn::module::Module<B>>(
    dir: &Path,
    model: M,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    let path = dir.join(MODEL_FILE);
    model
        .load_file(&path, &recorder(), device)
        .map_err(|e| CheckpointError::Record {
            path: path.with_extension("mpk"),
            message: e.to_string(),
        })
}

/// Load the optimizer record of a checkpoint into `optim`.
pub fn load_optimizer<B, M, O>(dir: &Path, optim: O, device: &B::Device) -> Result<O, CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let path = dir.join(OPTIM_FILE);
    let record =
        Recorder::<B>::load(&recorder(), path.clone(), device).map_err(|e| CheckpointError::Record {
            path: path.with_extension("mpk"),
            message: e.to_string(),
        })?;
    Ok(optim.load_record(record))
}
