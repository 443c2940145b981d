//! `_base_` resolution, deep merge, `_delete_`, overrides, and a pretty printer that remembers the JSON path
//! of every line (so that serde's line numbers become JSON paths in error messages).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ConfigError;

const BASE_KEY: &str = "_base_";
const DELETE_KEY: &str = "_delete_";

/// Read `path`, resolve its `_base_` chain and return the merged JSON (without `_base_`/`_delete_` keys).
pub fn load_resolved(path: &Path) -> Result<Value, ConfigError> {
    let mut value = load_with_bases(path, &mut Vec::new())?;
    strip_delete_markers(&mut value);
    Ok(value)
}

/// The largest config file read (16 MiB; configs are a few KB): a bigger file is refused before reading.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

fn load_with_bases(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Value, ConfigError> {
    let canonical = path.canonicalize().map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if chain.contains(&canonical) {
        return Err(ConfigError::Base {
            path: path.to_path_buf(),
            message: format!("`_base_` cycle: {}", describe_chain(chain, &canonical)),
        });
    }
    let io_err = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io_err)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(io_err(std::io::Error::other(format!(
            "{size} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes"
        ))));
    }
    // a device or pipe reports size 0 (`"_base_": "/dev/zero"`): the read itself stops past the limit
    let bytes = attndet_coco::dataset::read_at_most(path, MAX_CONFIG_BYTES)
        .map_err(io_err)?
        .ok_or_else(|| {
            io_err(std::io::Error::other(format!(
                "more than {MAX_CONFIG_BYTES} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes"
            )))
        })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    let mut value: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let Value::Object(obj) = &mut value else {
        return Err(ConfigError::Base {
            path: path.to_path_buf(),
            message: "the top level must be an object".into(),
        });
    };
    let bases = match obj.remove(BASE_KEY) {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(ConfigError::Base {
                    path: path.to_path_buf(),
                    message: format!("`_base_` entries must be strings (relative paths), found {other}"),
                }),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ConfigError::Base {
                path: path.to_path_buf(),
                message: format!("`_base_` must be a path or a list of paths, found {other}"),
            });
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    chain.push(canonical);
    let mut merged = Value::Object(Map::new());
    for base in bases {
        let base_path = dir.join(&base);
        if !base_path.exists() {
            return Err(ConfigError::Base {
                path: path.to_path_buf(),
                message: format!("`_base_` file {} does not exist", base_path.display()),
            });
        }
        let base_value = load_with_bases(&base_path, chain)?;
        deep_merge(&mut merged, base_value);
    }
    chain.pop();
    deep_merge(&mut merged, value);
    Ok(merged)
}

fn describe_chain(chain: &[PathBuf], again: &Path) -> String {
    chain
        .iter()
        .chain(std::iter::once(&again.to_path_buf()))
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Merge `over` into `base`: objects merge key by key (recursively), everything else is replaced.
/// An object in `over` holding `"_delete_": true` replaces `base`'s subtree instead.
pub fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let replace = matches!(o.get(DELETE_KEY), Some(Value::Bool(true)));
            if replace {
                b.clear();
            }
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if !replace => deep_merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, o) => *slot = o,
    }
}

/// Remove every `_delete_` key (they only steer merging).
pub fn strip_delete_markers(value: &mut Value) {
    match value {
        Value::Object(o) => {
            o.remove(DELETE_KEY);
            o.values_mut().for_each(strip_delete_markers);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_delete_markers),
        _ => {}
    }
}

/// Parse the VALUE of an override: JSON when it is JSON, a list when it holds commas, else a string.
pub fn parse_override_value(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return v;
    }
    if text.contains(',') {
        return Value::Array(
            text.split(',')
                .map(|item| parse_override_value(item.trim()))
                .collect(),
        );
    }
    Value::String(text.to_string())
}

/// Apply one `a.b.c=VALUE` override in place. Missing objects on the way are created; a numeric key indexes
/// an existing list.
pub fn apply_override(root: &mut Value, option: &str) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Override {
        option: option.to_string(),
        message,
    };
    let (key, raw) = option
        .split_once('=')
        .ok_or_else(|| err("expected KEY=VALUE, e.g. optimizer.lr=0.02".into()))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(format!("`{key}` is not a dotted key like a.b.c")));
    }
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            Value::Object(o) => {
                if last {
                    o.insert(part.to_string(), parse_override_value(raw.trim()));
                    return Ok(());
                }
                o.entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()))
            }
            Value::Array(a) => {
                let idx: usize = part
                    .parse()
                    .map_err(|_| err(format!("`{part}` indexes a list, so it must be a number")))?;
                let len = a.len();
                let slot = a
                    .get_mut(idx)
                    .ok_or_else(|| err(format!("index {idx} out of range (list of {len})")))?;
                if last {
                    *slot = parse_override_value(raw.trim());
                    return Ok(());
                }
                slot
            }
            other => {
                return Err(err(format!(
                    "`{}` is a {} value, not an object",
                    parts[..i].join("."),
                    kind(other)
                )));
            }
        };
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Pretty JSON text with one scalar or key per line, and the JSON path of every line (closing brackets carry
/// the path of their container).
pub(crate) fn pretty_with_line_paths(value: &Value) -> (String, Vec<String>) {
    let mut out = Printer {
        text: String::new(),
        paths: Vec::new(),
    };
    out.value(value, "", 0);
    out.text.push('\n');
    (out.text, out.paths)
}

struct Printer {
    text: String,
    paths: Vec<String>,
}

impl Printer {
    fn newline(&mut self, path: &str, indent: usize) {
        self.text.push('\n');
        self.paths.push(path.to_string());
        self.text.extend(std::iter::repeat_n(' ', indent * 2));
    }

    fn value(&mut self, v: &Value, path: &str, indent: usize) {
        if self.paths.is_empty() {
            self.paths.push(path.to_string());
        }
        match v {
            Value::Object(o) => {
                self.text.push('{');
                for (i, (k, child)) in o.iter().enumerate() {
                    let child_path = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.newline(&child_path, indent + 1);
                    self.text.push_str(&Value::String(k.clone()).to_string());
                    self.text.push_str(": ");
                    self.value(child, &child_path, indent + 1);
                    if i + 1 < o.len() {
                        self.text.push(',');
                    }
                }
                self.newline(path, indent);
                self.text.push('}');
            }
            Value::Array(a) => {
                self.text.push('[');
                for (i, child) in a.iter().enumerate() {
                    let child_path = if path.is_empty() {
                        i.to_string()
                    } else {
                        format!("{path}.{i}")
                    };
                    self.newline(&child_path, indent + 1);
                    self.value(child, &child_path, indent + 1);
                    if i + 1 < a.len() {
                        self.text.push(',');
                    }
                }
                self.newline(path, indent);
                self.text.push(']');
            }
            scalar => self.text.push_str(&scalar.to_string()),
        }
    }
}

/// Paths (under `under`) of object keys named `key`: used to point an "unknown field" error, which serde
/// reports at the end of a buffered (tagged) object, at the field itself.
pub(crate) fn find_key_paths(value: &Value, under: &str, key: &str) -> Vec<String> {
    let mut node = value;
    if !under.is_empty() && under != "<root>" {
        for part in under.split('.') {
            node = match node {
                Value::Object(o) => match o.get(part) {
                    Some(v) => v,
                    None => return Vec::new(),
                },
                Value::Array(a) => match part.parse::<usize>().ok().and_then(|i| a.get(i)) {
                    Some(v) => v,
                    None => return Vec::new(),
                },
                _ => return Vec::new(),
            };
        }
    }
    let mut found = Vec::new();
    collect_key_paths(node, if under == "<root>" { "" } else { under }, key, &mut found);
    found
}

fn collect_key_paths(v: &Value, path: &str, key: &str, found: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if k == key {
                    found.push(join(k));
                }
                collect_key_paths(child, &join(k), key, found);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_key_paths(child, &join(&i.to_string()), key, found);
            }
        }
        _ => {}
    }
}
