//! Training checkpoints: one directory per saved epoch holding the model record, the optimizer record
//! (momentum buffers, keyed by the ParamIds the model record restores) and `state.json` (schedule position,
//! seed, best AP, resolved config). Each directory is written under a temporary name and renamed into place,
//! so a crash never leaves a half-written checkpoint behind.
//!
//! A checkpoint knows itself: `state.json` holds the resolved config of the run and the class names, so
//! `attndet test CKPT` and `attndet infer CKPT IMAGE...` need nothing else.
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
    /// The resolved config of the run (`null` in checkpoints that predate it).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Class names in label order (empty when unknown: older checkpoints, or converted weights whose
    /// annotations could not be read).
    #[serde(default)]
    pub classes: Vec<String>,
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
    /// The checkpoint's tensors do not fit the model they are loaded into.
    #[error("checkpoint {path}: {mismatch}")]
    Mismatch {
        /// The model file.
        path: PathBuf,
        /// What differs.
        mismatch: TensorMismatch,
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
///
/// Strict: the tensors stored in the file are compared with those of `model` before burn reads the record
/// (burn takes a record's shapes as they are, and panics on a list of another length), and every missing,
/// unexpected and mis-shaped tensor is named ([`CheckpointError::Mismatch`]).
pub fn load_model<B: burn::prelude::Backend, M: burn::module::Module<B>>(
    dir: &Path,
    model: M,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    let path = dir.join(MODEL_FILE);
    let file = path.with_extension("mpk");
    let expected: Vec<(String, Vec<usize>)> = attndet_backbones::checkpoint::tensor_shapes(&model)
        .into_iter()
        .map(|t| (t.path, t.shape))
        .collect();
    let stored = record_shapes(&file)?;
    let mismatch = TensorMismatch::between(&stored, &expected);
    if !mismatch.is_empty() {
        return Err(CheckpointError::Mismatch { path: file, mismatch });
    }
    let trains = Trainable::of(&model);
    let loaded = model
        .load_file(&path, &recorder(), device)
        .map_err(|e| CheckpointError::Record {
            path: file,
            message: e.to_string(),
        })?;
    Ok(trains.restore(loaded))
}

/// Whether each float tensor of a module trains (`require_grad`), in visiting order; [`Self::restore`] gives
/// every tensor of a loaded module a handle of its own with the module's flag.
///
/// Why: without it, a module loaded from a record misbehaved in two ways, both with frozen BatchNorm
/// statistics (`norm_eval`, every COCO config's setting) and both gone with it (`dist_train_e2e.rs`):
/// `dist-train --resume` with two replicas in one process panicked in the first backward ("Node should
/// have a step registered": one replica's backward freed the other's graph, so the replicas' graphs shared
/// a node; clones of a module share their BatchNorm running states, which each replica's load wrote into),
/// and `train` resumed from a `dist-train` checkpoint moved the stem's running mean (1e-6 from its 0 after
/// four iterations, 8.4e-4 relative in the weights against the uninterrupted run). The flags themselves
/// were already right; which shared handle carried the gradient was not pinned down.
struct Trainable(Vec<bool>);

impl Trainable {
    fn of<B: burn::prelude::Backend, M: burn::module::Module<B>>(model: &M) -> Self {
        struct Flags(Vec<bool>);
        impl<B: burn::prelude::Backend> burn::module::ModuleVisitor<B> for Flags {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<burn::prelude::Tensor<B, D>>) {
                self.0.push(p.val().is_require_grad());
            }
        }
        let mut f = Flags(Vec::new());
        model.visit(&mut f);
        Trainable(f.0)
    }

    fn restore<B: burn::prelude::Backend, M: burn::module::Module<B>>(self, model: M) -> M {
        struct Restore(std::vec::IntoIter<bool>);
        impl<B: burn::prelude::Backend> burn::module::ModuleMapper<B> for Restore {
            fn map_float<const D: usize>(
                &mut self,
                p: burn::module::Param<burn::prelude::Tensor<B, D>>,
            ) -> burn::module::Param<burn::prelude::Tensor<B, D>> {
                let trains = self.0.next().unwrap_or(false);
                let (id, value, mapper) = p.consume();
                let value = if trains {
                    value
                } else {
                    // an untracked tensor of the same values: no node in any graph
                    value.detach()
                };
                burn::module::Param::from_mapped_value(id, value.set_require_grad(trains), mapper)
            }
        }
        model.map(&mut Restore(self.0.into_iter()))
    }
}

/// How a checkpoint's tensors differ from a model's (paths as burn names them, e.g. `bbox_head.retina_cls.weight`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorMismatch {
    /// In the model, not in the checkpoint.
    pub missing: Vec<String>,
    /// In the checkpoint, not in the model.
    pub unexpected: Vec<String>,
    /// In both with other shapes: `(path, checkpoint's shape, model's shape)`.
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl TensorMismatch {
    /// Compare the tensors `stored` in a checkpoint with those a model `expected`.
    pub fn between(stored: &[(String, Vec<usize>)], expected: &[(String, Vec<usize>)]) -> Self {
        use std::collections::BTreeMap;
        let stored_map: BTreeMap<&str, &Vec<usize>> = stored.iter().map(|(p, s)| (p.as_str(), s)).collect();
        let expected_map: BTreeMap<&str, &Vec<usize>> =
            expected.iter().map(|(p, s)| (p.as_str(), s)).collect();
        let mut m = Self::default();
        for (p, want) in &expected_map {
            match stored_map.get(p) {
                None => m.missing.push(p.to_string()),
                Some(got) if got != want => {
                    m.misshaped.push((p.to_string(), (*got).clone(), (*want).clone()))
                }
                Some(_) => {}
            }
        }
        m.unexpected = stored_map
            .keys()
            .filter(|p| !expected_map.contains_key(*p))
            .map(|p| p.to_string())
            .collect();
        m
    }

    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }
}

impl std::fmt::Display for TensorMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // long lists (a whole stage of another backbone) are cut: the first names say enough
        fn list(items: &[String]) -> String {
            const SHOWN: usize = 12;
            let mut s = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
            if items.len() > SHOWN {
                s.push_str(&format!(", ... ({} more)", items.len() - SHOWN));
            }
            s
        }
        write!(
            f,
            "its tensors do not fit the config's model (was it trained with another config?):"
        )?;
        let mut sep = " ";
        if !self.missing.is_empty() {
            write!(f, "{sep}{} missing: {}", self.missing.len(), list(&self.missing))?;
            sep = "; ";
        }
        if !self.unexpected.is_empty() {
            write!(
                f,
                "{sep}{} unexpected: {}",
                self.unexpected.len(),
                list(&self.unexpected)
            )?;
            sep = "; ";
        }
        if !self.misshaped.is_empty() {
            let items: Vec<String> = self
                .misshaped
                .iter()
                .map(|(p, got, want)| format!("{p}: {got:?} in the checkpoint, {want:?} for the config"))
                .collect();
            write!(f, "{sep}{} mis-shaped: {}", items.len(), list(&items))?;
        }
        Ok(())
    }
}

/// The float tensors stored in a model record file (burn's named MessagePack), with their shapes, read
/// without knowing the model: paths as [`attndet_backbones::checkpoint::tensor_shapes`] names them (struct
/// fields and list indices joined by `.`, enum variants left out).
pub fn record_shapes(file: &Path) -> Result<Vec<(String, Vec<usize>)>, CheckpointError> {
    use serde::de::DeserializeSeed;
    let f = std::fs::File::open(file).map_err(io(file))?;
    let mut out = Vec::new();
    let mut de = rmp_serde::Deserializer::new(std::io::BufReader::new(f));
    RecordWalker {
        path: Vec::new(),
        out: &mut out,
        root: true,
    }
    .deserialize(&mut de)
    .map_err(|e| CheckpointError::Record {
        path: file.to_path_buf(),
        message: format!("not a model record: {e}"),
    })?;
    if out.is_empty() {
        // any MessagePack value parses; a record of a detector has tensors
        return Err(CheckpointError::Record {
            path: file.to_path_buf(),
            message: "not a model record: it holds no tensor".into(),
        });
    }
    Ok(out)
}

/// Whether burn's `ParamId::deserialize` takes `id` without a panic: base32 (DNSSEC alphabet, no padding)
/// of at most 8 bytes with zero trailing bits, or a UUID (32 hex digits, hyphenated or not).
fn valid_param_id(id: &str) -> bool {
    let base32 = id
        .bytes()
        .map(|c| match c {
            b'0'..=b'9' => Some(u32::from(c - b'0')),
            b'a'..=b'v' => Some(u32::from(c - b'a') + 10),
            _ => None,
        })
        .collect::<Option<Vec<u32>>>();
    if let Some(digits) = base32 {
        let bits = digits.len() * 5;
        let spare = bits % 8;
        // lengths that end inside a byte with 5 bits or more spare are not valid encodings
        let whole = matches!(digits.len() % 8, 0 | 2 | 4 | 5 | 7);
        let trailing_zero = digits
            .last()
            .is_none_or(|&d| spare == 0 || d & ((1 << spare) - 1) == 0);
        return whole && trailing_zero && bits / 8 <= 8;
    }
    let hex: String = id.chars().filter(|&c| c != '-').collect();
    let hyphens_ok =
        !id.contains('-') || (id.len() == 36 && [8, 13, 18, 23].iter().all(|&i| id.as_bytes()[i] == b'-'));
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) && hyphens_ok
}

/// Walks any serde value, recording `(path, shape)` of every `ParamSerde { id, param: TensorData { bytes,
/// shape, dtype } }` below the record's `item`; tensor bytes are skipped, not kept.
struct RecordWalker<'a> {
    path: Vec<String>,
    out: &'a mut Vec<(String, Vec<usize>)>,
    /// At `BurnRecord { metadata, item }`: only `item` is walked, and adds no path segment.
    root: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for RecordWalker<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RecordWalker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a burn record")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let in_param = self.path.last().is_some_and(|p| p == "param");
        while let Some(key) = map.next_key::<String>()? {
            if self.root {
                if key == "item" {
                    map.next_value_seed(RecordWalker {
                        path: Vec::new(),
                        out: &mut *self.out,
                        root: false,
                    })?;
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            } else if !in_param && key == "id" {
                // `ParamSerde { id, param }`: burn parses the id with a panic on a bad one
                let id: String = map.next_value()?;
                if !valid_param_id(&id) {
                    return Err(serde::de::Error::custom(format!(
                        "invalid parameter id {id:?} at `{}`",
                        self.path.join(".")
                    )));
                }
            } else if in_param && key == "shape" {
                let shape: Vec<usize> = map.next_value()?;
                let owner = self.path[..self.path.len() - 1].join(".");
                self.out.push((owner, shape));
            } else if in_param {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                // an enum's record is `{Variant: record}`: variants are CamelCase, fields snake_case
                let mut path = self.path.clone();
                if !key.starts_with(|c: char| c.is_ascii_uppercase()) {
                    path.push(key);
                }
                map.next_value_seed(RecordWalker {
                    path,
                    out: &mut *self.out,
                    root: false,
                })?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let mut path = self.path.clone();
            path.push(i.to_string());
            let seed = RecordWalker {
                path,
                out: &mut *self.out,
                root: false,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// One field in which two resolved configs differ: its JSON path and both values (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDifference {
    /// Dotted JSON path, e.g. `model.bbox_head.num_classes`.
    pub path: String,
    /// The checkpoint's value.
    pub checkpoint: Option<serde_json::Value>,
    /// The value of the config given now.
    pub given: Option<serde_json::Value>,
}

impl std::fmt::Display for ConfigDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<serde_json::Value>| match v {
            Some(v) => v.to_string(),
            None => "(absent)".into(),
        };
        write!(
            f,
            "{}: {} in the checkpoint, {} now",
            self.path,
            show(&self.checkpoint),
            show(&self.given)
        )
    }
}

/// The leaf fields in which two resolved configs differ, in path order (objects are compared field by field,
/// lists and scalars as whole values).
pub fn config_diff(checkpoint: &serde_json::Value, given: &serde_json::Value) -> Vec<ConfigDifference> {
    fn walk(
        path: &str,
        a: Option<&serde_json::Value>,
        b: Option<&serde_json::Value>,
        out: &mut Vec<ConfigDifference>,
    ) {
        match (a, b) {
            (Some(serde_json::Value::Object(x)), Some(serde_json::Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&p, x.get(k), y.get(k), out);
                }
            }
            (a, b) if a != b => out.push(ConfigDifference {
                path: path.to_string(),
                checkpoint: a.cloned(),
                given: b.cloned(),
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(checkpoint), Some(given), &mut out);
    out
}

/// The `epoch_N` checkpoints of a work dir, oldest first.
pub fn epoch_checkpoints(work_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return Vec::new();
    };
    let mut v: Vec<(usize, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("epoch_")?.parse::<usize>().ok()?;
            e.path().join(STATE_FILE).exists().then(|| (n, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Keep the `keep` newest `epoch_N` checkpoints of `work_dir` (`checkpoint_config.max_keep_ckpts`) and
/// remove the older ones, except `protected` (the checkpoint a run resumed from). `best/` is not an epoch
/// checkpoint and stays. Each is first renamed to `.epoch_N.old-PID`, so an interrupted removal leaves a
/// temporary that the next start cleans, never a half-deleted `epoch_N`. Returns the removed paths.
pub fn prune_epochs(
    work_dir: &Path,
    keep: usize,
    protected: &[PathBuf],
) -> Result<Vec<PathBuf>, CheckpointError> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    };
    let all = epoch_checkpoints(work_dir);
    let excess = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (_, dir) in all.into_iter().take(excess) {
        if protected.iter().any(|p| same(p, &dir)) {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let parked = work_dir.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(&dir, &parked).map_err(io(&dir))?;
        std::fs::remove_dir_all(&parked).map_err(io(&parked))?;
        removed.push(dir);
    }
    Ok(removed)
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
            classes: vec!["a".into()],
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

    /// burn parses parameter ids with a panic on a bad one (found by the `record` fuzz target: a changed
    /// byte in an id): such a record is refused naming the id and where it is. The ids burn writes pass.
    #[test]
    fn bad_parameter_ids_are_refused_before_burn_reads_them() {
        let device = Default::default();
        let d = dir("ids");
        let m = LinearConfig::new(2, 3).init::<A>(&device);
        save_model(&d.join("epoch_1"), &m, &state(1)).unwrap();
        let file = d.join("epoch_1/model.mpk");
        let good = std::fs::read(&file).unwrap();
        assert!(record_shapes(&file).is_ok());
        // burn's ids: 13 base32 characters (8 bytes)
        let id = burn::module::ParamId::new().serialize();
        assert!(valid_param_id(&id), "{id}");
        assert!(valid_param_id("6f2b7f0e-8d42-4a3c-9c1e-2d3b4a5c6d7e"));
        for bad in ["", "w", "0123456789abcdefg", "zz", "a"] {
            assert!(!valid_param_id(bad) || bad.is_empty(), "{bad:?}");
        }
        // one id's first character replaced by one outside the alphabet
        let at = good
            .windows(13)
            .position(|w| w.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'v').contains(c)))
            .unwrap();
        let mut bad = good.clone();
        bad[at] = b'~';
        std::fs::write(&file, &bad).unwrap();
        let e = load_model::<A, _>(&d.join("epoch_1"), m, &device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid parameter id") && e.contains("model.mpk"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[derive(burn::module::Module, Debug)]
    struct WithNorm<B: burn::prelude::Backend> {
        fc: Linear<B>,
        frozen: Linear<B>,
        bn: burn::nn::BatchNorm<B>,
    }

    /// `(require_grad, values)` of every float tensor in visiting order: fc weight and bias, frozen
    /// weight and bias, bn gamma, beta, running mean, running var.
    fn tracked(m: &WithNorm<A>) -> Vec<(bool, Vec<f32>)> {
        struct V(Vec<(bool, Vec<f32>)>);
        impl burn::module::ModuleVisitor<A> for V {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<burn::prelude::Tensor<A, D>>) {
                let t = p.val();
                self.0
                    .push((t.is_require_grad(), t.into_data().to_vec().unwrap()));
            }
        }
        let mut v = V(Vec::new());
        m.visit(&mut v);
        v.0
    }

    /// A loaded checkpoint has the saved values and the module's trainability: trainable weights train,
    /// frozen ones and BatchNorm's running statistics do not (the resume cases that needed
    /// [`Trainable::restore`] are end-to-end tests in `dist_train_e2e.rs`). Running statistics set by hand,
    /// not the initial 0 / 1.
    #[test]
    fn loading_keeps_running_statistics_untracked() {
        use burn::nn::BatchNormConfig;
        let device = Default::default();
        let fresh = || {
            let m = WithNorm::<A> {
                fc: LinearConfig::new(2, 3).init(&device),
                frozen: LinearConfig::new(3, 1).init(&device),
                bn: BatchNormConfig::new(3).init(&device),
            };
            WithNorm {
                frozen: m.frozen.no_grad(),
                ..m
            }
        };
        let saved = fresh();
        saved
            .bn
            .running_mean
            .update(burn::prelude::Tensor::from_floats([0.5, -1.0, 2.0], &device));
        // materialise the lazily initialised weights before saving (a clone would draw its own)
        let want = tracked(&saved);
        let d = dir("trainable");
        save_model(&d.join("epoch_1"), &saved, &state(1)).unwrap();
        let loaded = load_model::<A, _>(&d.join("epoch_1"), fresh(), &device).unwrap();
        let got = tracked(&loaded);
        let flags: Vec<bool> = got.iter().map(|(g, _)| *g).collect();
        assert_eq!(
            flags,
            [true, true, false, false, true, true, false, false],
            "fc trains, frozen does not, bn's affine trains, its running statistics do not"
        );
        assert_eq!(got[6].1, vec![0.5, -1.0, 2.0], "the saved running mean");
        assert_eq!(got[7].1, vec![1.0; 3], "the saved running var");
        // (the running mean's update is visible to a visitor only after the save's sync: compared above)
        for (i, ((_, a), (_, b))) in got.iter().zip(&want).enumerate().take(6) {
            assert_eq!(a, b, "tensor {i}: the saved values");
        }
        let _ = std::fs::remove_dir_all(&d);
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
