//! Training checkpoints: one directory per saved epoch holding the model record, the optimizer record
//! (momentum buffers, keyed by the ParamIds the model record restores) and `state.json` (schedule position,
//! seed, best AP, resolved config). Each directory is written under a temporary name and renamed into place,
//! so a crash never leaves a half-written checkpoint behind.
//!
//! Layout of a work dir: `epoch_N/`, `best/`, `latest` (a text file naming the newest `epoch_N`).

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, NamedMpkFileRecorder, Record, Recorder};
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

/// Write `record` to `path` plus burn's `.mpk` extension, in the format of [`recorder`]. The record is encoded in
/// memory and written with one `std::fs::write`, so that a full disk is reported as the operating system's
/// error ("No space left on device") rather than as an encoder failure.
fn write_record<B: burn::prelude::Backend, R: Record<B>>(
    record: R,
    path: &Path,
) -> Result<(), CheckpointError> {
    let path = path.with_extension("mpk");
    let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(record, ())
        .map_err(|e| CheckpointError::Record {
            path: path.clone(),
            message: e.to_string(),
        })?;
    std::fs::write(&path, bytes).map_err(io(&path))
}

/// Write the model, the optimizer and `state` into `dir` atomically (temp dir + rename; an existing `dir` is
/// replaced only once the new one is complete).
pub fn save<B, M, O>(dir: &Path, model: &M, optim: &O, state: &TrainState) -> Result<(), CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "ckpt".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = write_and_swap::<B, M, O>(&tmp, dir, parent, &name, model, optim, state);
    if result.is_err() {
        // a failed save leaves nothing behind (the previous checkpoint, if any, is back in place)
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The body of [`save`]: fill `tmp`, then swap it in as `dir`.
fn write_and_swap<B, M, O>(
    tmp: &Path,
    dir: &Path,
    parent: &Path,
    name: &str,
    model: &M,
    optim: &O,
    state: &TrainState,
) -> Result<(), CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    write_record::<B, _>(model.clone().into_record(), &tmp.join(MODEL_FILE))?;
    write_record::<B, _>(optim.to_record(), &tmp.join(OPTIM_FILE))?;
    let state_path = tmp.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).expect("TrainState serializes");
    std::fs::write(&state_path, text).map_err(io(&state_path))?;
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(io(dir))?;
        if let Err(e) = std::fs::rename(tmp, dir) {
            let _ = std::fs::rename(&old, dir);
            return Err(io(dir)(e));
        }
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(tmp, dir).map_err(io(dir))?;
    }
    Ok(())
}

/// Write a checkpoint without optimizer state (e.g. converted weights) into `dir` atomically: enough for
/// [`load_model`] and [`load_state`] (`attndet test`, `infer`), not for an exact resume. A failed save leaves
/// nothing behind (a previous `dir` stays in place).
pub fn save_model<B: burn::prelude::Backend, M: burn::module::Module<B>>(
    dir: &Path,
    model: &M,
    state: &TrainState,
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
    let result = (|| {
        write_record::<B, _>(model.clone().into_record(), &tmp.join(MODEL_FILE))?;
        let state_path = tmp.join(STATE_FILE);
        let text = serde_json::to_string_pretty(state).expect("TrainState serializes");
        std::fs::write(&state_path, text).map_err(io(&state_path))?;
        if dir.exists() {
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            std::fs::rename(dir, &old).map_err(io(dir))?;
            if let Err(e) = std::fs::rename(&tmp, dir) {
                let _ = std::fs::rename(&old, dir);
                return Err(io(dir)(e));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, dir).map_err(io(dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Rewrite `state.json` of the checkpoint `dir` (atomically), e.g. with the best AP of an evaluation that
/// ran after the checkpoint was saved.
pub fn update_state(dir: &Path, state: &TrainState) -> Result<(), CheckpointError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
    let text = serde_json::to_string_pretty(state).expect("TrainState serializes");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Remove what interrupted saves left in `work_dir`: `.NAME.tmp-PID` and `.NAME.old-PID` entries (checkpoint
/// directories being written or replaced, `.latest.tmp-PID`) and `config.tmp-PID`. Only the work dir's owner
/// (the holder of its lock) may call this. Returns the paths removed.
pub fn remove_stale_temps(work_dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let entries = match std::fs::read_dir(work_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(work_dir)(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(work_dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !is_temp_name(&name) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let r = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(io(&path))?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// `.X.tmp-PID`, `.X.old-PID`, `config.tmp-PID`: the temporary names of this module and of the trainer.
fn is_temp_name(name: &str) -> bool {
    let pid_suffix = |rest: &str, marker: &str| {
        rest.rsplit_once(marker).is_some_and(|(stem, pid)| {
            !stem.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
    };
    match name.strip_prefix('.') {
        Some(rest) => pid_suffix(rest, ".tmp-") || pid_suffix(rest, ".old-"),
        None => pid_suffix(name, ".tmp-") && name.starts_with("config."),
    }
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
    let expected = attndet_backbones::checkpoint::tensor_shapes(&model);
    let loaded = model
        .load_file(&path, &recorder(), device)
        .map_err(|e| CheckpointError::Record {
            path: path.with_extension("mpk"),
            message: e.to_string(),
        })?;
    // burn's recorder takes a record's shapes as they are: a checkpoint of another config (other class
    // counts, widths) would load and fail later, deep in a forward pass. Compare every tensor with the model
    // the config builds.
    let got = attndet_backbones::checkpoint::tensor_shapes(&loaded);
    let differing: Vec<String> = expected
        .iter()
        .zip(&got)
        .filter(|(e, g)| e.shape != g.shape)
        .map(|(e, g)| {
            format!(
                "{}: {:?} in the checkpoint, {:?} for the config",
                e.path, g.shape, e.shape
            )
        })
        .collect();
    if !differing.is_empty() {
        return Err(CheckpointError::Record {
            path: path.with_extension("mpk"),
            message: format!(
                "{} tensor(s) do not fit the config's model (was it trained with another config?): {}",
                differing.len(),
                differing.join("; ")
            ),
        });
    }
    Ok(loaded)
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::SgdConfig;

    type A = Autodiff<Flex>;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("attndet-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn state(epoch: usize) -> TrainState {
        TrainState {
            epoch,
            global_iter: epoch * 10,
            seed: 1,
            base_lr: 0.01,
            best: None,
            config: serde_json::json!({}),
        }
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let d = dir("stale");
        for sub in [
            ".epoch_3.tmp-123",
            ".best.old-77",
            "epoch_1",
            "best",
            ".epoch_2.tmp-x",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
            std::fs::write(d.join(sub).join("model.mpk"), b"x").unwrap();
        }
        for f in [
            ".latest.tmp-5",
            "config.tmp-9",
            "config.json",
            "latest",
            "log.jsonl",
            ".lock",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let removed = remove_stale_temps(&d).unwrap();
        assert_eq!(removed.len(), 4, "{removed:?}");
        assert_eq!(
            names(&d),
            [
                ".epoch_2.tmp-x",
                ".lock",
                "best",
                "config.json",
                "epoch_1",
                "latest",
                "log.jsonl"
            ]
        );
        assert!(remove_stale_temps(&d.join("missing")).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_and_keeps_the_old_checkpoint() {
        let d = dir("failed");
        let device = Default::default();
        let model: Linear<A> = LinearConfig::new(2, 1).init(&device);
        let optim = SgdConfig::new().init::<A, Linear<A>>();
        let ckpt = d.join("epoch_1");
        save::<A, _, _>(&ckpt, &model, &optim, &state(1)).unwrap();
        // the old checkpoint cannot be moved aside (its parking place is a non-empty directory): save fails late,
        // after the temporary was fully written
        let parking = d.join(format!(".epoch_1.old-{}", std::process::id()));
        std::fs::create_dir_all(parking.join("blocker")).unwrap();
        let err = save::<A, _, _>(&ckpt, &model, &optim, &state(2)).unwrap_err();
        assert!(err.to_string().contains("epoch_1"), "{err}");
        std::fs::remove_dir_all(&parking).unwrap();
        assert_eq!(names(&d), ["epoch_1"], "no temporary left behind");
        assert_eq!(
            load_state(&ckpt).unwrap().epoch,
            1,
            "the old checkpoint is intact"
        );
        // a later save works, and the state can be updated in place
        save::<A, _, _>(&ckpt, &model, &optim, &state(2)).unwrap();
        let mut s = state(2);
        s.best = Some((0.5, 2));
        update_state(&ckpt, &s).unwrap();
        assert_eq!(load_state(&ckpt).unwrap(), s);
        assert_eq!(names(&ckpt), ["model.mpk", "optim.mpk", "state.json"]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_checkpoint_without_optimizer_loads_its_model_and_state() {
        let d = dir("model-only");
        let device = Default::default();
        // materialised: clones of a lazily initialised module would draw their own weights
        let model: Linear<Flex> = LinearConfig::new(2, 3).init(&device).fork(&device);
        let ckpt = d.join("converted");
        save_model(&ckpt, &model, &state(0)).unwrap();
        save_model(&ckpt, &model, &state(0)).unwrap();
        assert_eq!(names(&ckpt), ["model.mpk", "state.json"]);
        assert_eq!(names(&d), ["converted"], "no temporary left behind");
        let fresh: Linear<Flex> = LinearConfig::new(2, 3).init(&device);
        let loaded = load_model(&ckpt, fresh, &device).unwrap();
        assert_eq!(loaded.weight.val().into_data(), model.weight.val().into_data());
        assert_eq!(load_state(&ckpt).unwrap(), state(0));
        let _ = std::fs::remove_dir_all(d);
    }
}
