//! Checkpoint import and export, strict by default.
//!
//! Three sources:
//! - PyTorch files (`.pth`, `.pth.tar`, `.pt`): a bare `state_dict`, or a dict holding one under `state_dict`;
//!   keys with or without DataParallel's `module.` prefix. Read with burn-store's PyTorch reader.
//! - safetensors files written with PyTorch naming (e.g. `safetensors.torch.save_file(model.state_dict())`).
//! - our own format: safetensors written by [`save_safetensors`] (burn's naming: BatchNorm `gamma`/`beta`,
//!   Linear weights `[in, out]`).
//!
//! PyTorch naming is turned into ours by burn's `PyTorchToBurnAdapter` (Linear transposes, norm
//! `weight`/`bias` -> `gamma`/`beta`) plus each family's explicit [`KeyMap`] (regex -> replacement, applied in
//! order), e.g. `downsample.0.` -> `downsample.conv.`. After loading, every tensor the model expects must have
//! been found with the right shape and every tensor of the file must have been used; otherwise the load fails
//! with a [`KeyMismatch`] listing the keys by name.

use std::path::{Path, PathBuf};

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::store::{ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use burn_store::pytorch::PytorchReader;
use burn_store::{ApplyError, ModuleStore};

use crate::error::{BackboneError, KeyMismatch};

/// A family's rename rules from the reference code's key names to our module paths: `(regex, replacement)`
/// pairs applied in order to every key (after the `module.` prefix is stripped).
pub type KeyMap = &'static [(&'static str, &'static str)];

/// Import rules (for a [`KeyMap`]) from literal `(reference, ours)` substring pairs.
pub fn literal_rules(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(reference, ours)| (regex_literal(reference), ours.replace('$', "$$")))
        .collect()
}

/// `s` as a regex matching itself.
pub fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for ch in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// One tensor of a module: burn path (enum variants skipped), the type of the module holding it, its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorShape {
    /// Dotted path, e.g. `layer1.0.bn1.gamma`.
    pub path: String,
    /// burn's container type of the holder, e.g. `Struct:BatchNorm`.
    pub container: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// Walks a module without materialising lazily initialised parameters.
#[derive(Default)]
struct ShapeVisitor {
    path: Vec<String>,
    containers: Vec<String>,
    out: Vec<TensorShape>,
}

impl<B: Backend> ModuleVisitor<B> for ShapeVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push(TensorShape {
            path: self.path.join("."),
            container: self.containers.last().cloned().unwrap_or_default(),
            shape: param.lazy_shape().iter().copied().collect(),
        });
    }
}

/// Every float tensor of `model` (parameters and BatchNorm statistics) with its shape, without initialising
/// lazy parameters.
pub fn tensor_shapes<B: Backend, M: Module<B>>(model: &M) -> Vec<TensorShape> {
    let mut visitor = ShapeVisitor::default();
    model.visit(&mut visitor);
    visitor.out
}

/// The tensors `model` holds, named and shaped as the reference PyTorch `state_dict` would hold them
/// (norm `weight`/`bias`, BatchNorm `num_batches_tracked`, Linear weights `[out, in]`), renamed by literal
/// `(reference, ours)` pairs: per key, the first pair whose `ours` occurs is reversed.
pub fn reference_keys<B: Backend, M: Module<B>>(
    model: &M,
    renames: &[(&str, &str)],
) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for t in tensor_shapes(model) {
        let (stem, leaf) = t.path.rsplit_once('.').unwrap_or(("", t.path.as_str()));
        let norm = matches!(t.container.as_str(), "Struct:BatchNorm" | "Struct:LayerNorm");
        let leaf = match leaf {
            "gamma" if norm => "weight",
            "beta" if norm => "bias",
            other => other,
        };
        let mut shape = t.shape.clone();
        if t.container == "Struct:Linear" && leaf == "weight" {
            shape.reverse();
        }
        let mut key = if stem.is_empty() {
            leaf.to_string()
        } else {
            format!("{stem}.{leaf}")
        };
        // One rename per key, the first rule that applies (import applies at most one to a reference key).
        if let Some((reference, ours)) = renames.iter().find(|(_, ours)| key.contains(ours)) {
            key = key.replacen(ours, reference, 1);
        }
        let is_bn = t.container == "Struct:BatchNorm" && leaf == "running_var";
        out.push((key.clone(), shape));
        if is_bn {
            out.push((key.replace(".running_var", ".num_batches_tracked"), vec![]));
        }
    }
    out
}

/// How a checkpoint must fit the model.
///
/// [`Fit::STRICT`]: every tensor of the model found, every tensor of the file used. [`Fit::backbone`]: the same
/// for the backbone, but the classifier head may be absent (detection checkpoints have none), and a detector's
/// checkpoint (mmdetection's `backbone.*`, `neck.*`, `*_head.*` keys) contributes its `backbone.` tensors only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// Model paths (prefixes, e.g. `"fc."`) that the checkpoint may leave unset.
    pub optional: &'static [&'static str],
    /// Accept a whole detector's checkpoint: when the file has `backbone.`-prefixed keys, read those (prefix
    /// removed) and ignore the others.
    pub detector: bool,
}

impl Fit {
    /// Everything must match.
    pub const STRICT: Fit = Fit {
        optional: &[],
        detector: false,
    };

    /// A backbone without its classifier `head` (model path prefixes), possibly inside a detector checkpoint.
    pub fn backbone(head: &'static [&'static str]) -> Self {
        Fit {
            optional: head,
            detector: true,
        }
    }
}

/// Marks the keys of a detector checkpoint that lie outside its backbone (they stay unused and are ignored).
const FOREIGN: &str = "<detector>.";

/// The remapping rules that select a detector checkpoint's backbone: prefix every key with [`FOREIGN`], then
/// strip `FOREIGN` + `backbone.` again, so that only the backbone's tensors can match the model.
fn detector_rules(fit: &Fit, keys: &[String]) -> Vec<(String, String)> {
    let is_detector = fit.detector && keys.iter().any(|k| k.starts_with("backbone."));
    if !is_detector {
        return Vec::new();
    }
    vec![
        ("^".to_string(), FOREIGN.to_string()),
        (format!("^{}backbone\\.", regex_literal(FOREIGN)), String::new()),
    ]
}

/// What a successful load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    /// Number of tensors written into the model.
    pub applied: usize,
}

/// Load a PyTorch checkpoint (`.pth` / `.pth.tar`) into `model` as `fit` says ([`Fit::STRICT`]: strictly).
///
/// `model_name` only labels errors.
pub fn load_pytorch<B: Backend, M: ModuleSnapshot<B>>(
    model: &mut M,
    path: &Path,
    key_map: KeyMap,
    model_name: &str,
    fit: &Fit,
) -> Result<LoadSummary, BackboneError> {
    let read_err = |reason: String| BackboneError::CheckpointRead {
        path: path.to_path_buf(),
        reason,
    };
    let reader = guarded(path, || {
        PytorchReader::new(path).map_err(|e| read_err(e.to_string()))
    })?;
    let nested = reader.keys().iter().any(|k| k.starts_with("state_dict."));
    let keys: Vec<String> = reader
        .keys()
        .iter()
        .map(|k| {
            let k = if nested {
                k.strip_prefix("state_dict.").unwrap_or(k)
            } else {
                k
            };
            k.strip_prefix("module.").unwrap_or(k).to_string()
        })
        .collect();
    let mut store = PytorchStore::from_file(path)
        .with_key_remapping(r"^module\.", "")
        .allow_partial(true)
        .validate(false)
        .map_indices_contiguous(false);
    if nested {
        store = store.with_top_level_key("state_dict");
    }
    for (from, to) in detector_rules(fit, &keys) {
        store = store.with_key_remapping(&from, &to);
    }
    for (from, to) in key_map {
        store = store.with_key_remapping(*from, *to);
    }
    apply_store(model, &mut store, path, model_name, fit)
}

/// Load safetensors bytes written with PyTorch naming into `model`, strictly. `origin` labels errors.
pub fn load_torch_safetensors_bytes<B: Backend, M: ModuleSnapshot<B>>(
    model: &mut M,
    bytes: Vec<u8>,
    origin: &Path,
    key_map: KeyMap,
    model_name: &str,
) -> Result<LoadSummary, BackboneError> {
    load_torch_bytes(model, bytes, origin, key_map, model_name, &Fit::STRICT)
}

/// The tensor names of a safetensors file (in memory).
fn safetensors_keys(bytes: &[u8], origin: &Path) -> Result<Vec<String>, BackboneError> {
    let read_err = |reason: String| BackboneError::CheckpointRead {
        path: origin.to_path_buf(),
        reason,
    };
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
        .ok_or_else(|| read_err("not a safetensors file: shorter than its header length".into()))?;
    let header = bytes
        .get(8..8usize.saturating_add(len))
        .ok_or_else(|| read_err(format!("truncated safetensors header ({len} bytes announced)")))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| read_err(format!("bad safetensors header: {e}")))?;
    Ok(header
        .keys()
        .filter(|k| *k != "__metadata__")
        .map(|k| k.strip_prefix("module.").unwrap_or(k).to_string())
        .collect())
}

/// Load safetensors bytes written with PyTorch naming into `model` as `fit` says. `origin` labels errors.
fn load_torch_bytes<B: Backend, M: ModuleSnapshot<B>>(
    model: &mut M,
    bytes: Vec<u8>,
    origin: &Path,
    key_map: KeyMap,
    model_name: &str,
    fit: &Fit,
) -> Result<LoadSummary, BackboneError> {
    let rules = detector_rules(fit, &safetensors_keys(&bytes, origin)?);
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(PyTorchToBurnAdapter)
        .with_key_remapping(r"^module\.", "")
        .skip_enum_variants(true)
        .map_indices_contiguous(false)
        .allow_partial(true)
        .validate(false);
    for (from, to) in &rules {
        store = store.with_key_remapping(from, to);
    }
    for (from, to) in key_map {
        store = store.with_key_remapping(*from, *to);
    }
    apply_store(model, &mut store, origin, model_name, fit)
}

/// Load a safetensors file written with PyTorch naming into `model` as `fit` says.
pub fn load_torch_safetensors<B: Backend, M: ModuleSnapshot<B>>(
    model: &mut M,
    path: &Path,
    key_map: KeyMap,
    model_name: &str,
    fit: &Fit,
) -> Result<LoadSummary, BackboneError> {
    let bytes = std::fs::read(path).map_err(|e| BackboneError::CheckpointRead {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    load_torch_bytes(model, bytes, path, key_map, model_name, fit)
}

/// Load our own safetensors weights (written by [`save_safetensors`]) into `model`, strictly.
pub fn load_safetensors<B: Backend, M: ModuleSnapshot<B>>(
    model: &mut M,
    path: &Path,
    model_name: &str,
) -> Result<LoadSummary, BackboneError> {
    if !path.is_file() {
        return Err(BackboneError::CheckpointRead {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let mut store = SafetensorsStore::from_file(path)
        .skip_enum_variants(true)
        .map_indices_contiguous(false)
        .allow_partial(true)
        .validate(false);
    apply_store(model, &mut store, path, model_name, &Fit::STRICT)
}

/// Apply a configured store to `model`, then check the result against `fit` (the tail every loader shares).
/// `origin` labels errors.
fn apply_store<B: Backend, M: ModuleSnapshot<B>, S: ModuleStore>(
    model: &mut M,
    store: &mut S,
    origin: &Path,
    model_name: &str,
    fit: &Fit,
) -> Result<LoadSummary, BackboneError> {
    let result = guarded(origin, || {
        model.load_from(store).map_err(|e| BackboneError::CheckpointRead {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })
    })?;
    check_fit(result, origin, model_name, fit)
}

/// Run a read of burn-store on a checkpoint file with the panic hook silenced. burn asserts instead of
/// failing on some corrupt files (a tensor whose shape does not fit its data: found by the
/// `torch_checkpoint` fuzz target); burn-store catches that panic and reports a load error, which we name
/// with the file, but the hook would first print a panic report (and libFuzzer's aborts). A panic that
/// escapes becomes a read error naming the file.
fn guarded<T>(path: &Path, read: impl FnOnce() -> Result<T, BackboneError>) -> Result<T, BackboneError> {
    crate::panics::quietly(read).unwrap_or_else(|what| {
        Err(BackboneError::CheckpointRead {
            path: path.to_path_buf(),
            reason: format!("corrupt checkpoint: {}", what.lines().next().unwrap_or_default()),
        })
    })
}

/// Write `model`'s weights in our safetensors format, atomically (temporary file, then rename).
pub fn save_safetensors<B: Backend, M: ModuleSnapshot<B>>(
    model: &M,
    path: &Path,
) -> Result<(), BackboneError> {
    let write_err = |reason: String| BackboneError::CheckpointWrite {
        path: path.to_path_buf(),
        reason,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| write_err("not a file path".into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let mut store = SafetensorsStore::from_file(&tmp)
        .skip_enum_variants(true)
        .overwrite(true)
        .metadata("format", "attndet");
    model
        .save_into(&mut store)
        .map_err(|e| write_err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_err(e.to_string())
    })
}

/// Load weights from any supported file: a `.safetensors` file is our format when it carries our metadata
/// (written by [`save_safetensors`]) and PyTorch-named otherwise; anything else is read as a PyTorch file.
///
/// The checkpoint must fit as `fit` says; our own safetensors files always fit strictly.
pub fn load_any<B: Backend, M: ModuleSnapshot<B>>(
    model: &mut M,
    path: &Path,
    key_map: KeyMap,
    model_name: &str,
    fit: &Fit,
) -> Result<LoadSummary, BackboneError> {
    if !path.is_file() {
        return Err(BackboneError::CheckpointRead {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        if is_our_safetensors(path)? {
            load_safetensors(model, path, model_name)
        } else {
            load_torch_safetensors(model, path, key_map, model_name, fit)
        }
    } else {
        load_pytorch(model, path, key_map, model_name, fit)
    }
}

/// Does this safetensors file carry the `format: attndet` metadata of [`save_safetensors`]?
pub fn is_our_safetensors(path: &Path) -> Result<bool, BackboneError> {
    use std::io::Read;
    let read_err = |reason: String| BackboneError::CheckpointRead {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| read_err(format!("not a safetensors file: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(read_err(format!("not a safetensors file: header length {len}")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| read_err(format!("truncated safetensors header: {e}")))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| read_err(format!("bad safetensors header: {e}")))?;
    Ok(header["__metadata__"]["format"] == "attndet")
}

/// Turn burn-store's lenient report into a verdict: strict, up to what `fit` allows.
fn check_fit(
    result: ApplyResult,
    path: &Path,
    model_name: &str,
    fit: &Fit,
) -> Result<LoadSummary, BackboneError> {
    let mut mismatch = mismatch_of(&result);
    mismatch
        .missing
        .retain(|k| !fit.optional.iter().any(|prefix| k.starts_with(prefix)));
    mismatch.unexpected.retain(|k| !k.starts_with(FOREIGN));
    if mismatch.is_empty() {
        Ok(LoadSummary {
            applied: result.applied.len(),
        })
    } else {
        Err(BackboneError::CheckpointMismatch {
            path: path.to_path_buf(),
            model: model_name.to_string(),
            mismatch,
        })
    }
}

/// The keys at fault in an [`ApplyResult`].
///
/// burn-store lists a norm layer's PyTorch `weight`/`bias` as unused even after applying them to
/// `gamma`/`beta`; those, and PyTorch's `num_batches_tracked` counters (no counterpart in burn), are not
/// unexpected.
pub fn mismatch_of(result: &ApplyResult) -> KeyMismatch {
    let applied: std::collections::HashSet<&str> = result.applied.iter().map(String::as_str).collect();
    let renamed_norm = |key: &str| {
        let alias = |suffix: &str, to: &str| {
            key.strip_suffix(suffix)
                .is_some_and(|stem| applied.contains(format!("{stem}{to}").as_str()))
        };
        alias(".weight", ".gamma") || alias(".bias", ".beta")
    };
    let unexpected = result
        .unused
        .iter()
        .filter(|k| !k.ends_with("num_batches_tracked") && !renamed_norm(k))
        .cloned()
        .collect();
    let mut shape_mismatch = Vec::new();
    let mut unreadable = Vec::new();
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => shape_mismatch.push((path.clone(), expected.to_vec(), found.to_vec())),
            other => unreadable.push(other.to_string()),
        }
    }
    let mut missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
    // Dtype or adapter failures leave the tensor unloaded: report them with the missing ones.
    missing.extend(unreadable);
    KeyMismatch {
        missing,
        unexpected,
        shape_mismatch,
    }
}
