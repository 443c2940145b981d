//! Configs: JSON files with `_base_` inheritance and `--cfg-options` overrides, resolved into one
//! `serde_json::Value` and then deserialized into typed configs that reject unknown fields.
//!
//! Resolution rules (mmdetection's, on JSON):
//! - `"_base_": "a.json"` or `["a.json", "b.json"]`: paths relative to the file naming them; the bases are merged
//!   in order, then the file itself on top.
//! - Merging is deep for objects; anything else (numbers, strings, lists) is replaced.
//! - An object holding `"_delete_": true` replaces the inherited subtree instead of merging into it.
//! - Overrides `a.b.c=VALUE` are applied last; VALUE is parsed as JSON when it is JSON (`2`, `0.01`, `true`,
//!   `[1,2]`, `null`, `"text"`), as a list when it holds commas (`8,11`), and as a plain string otherwise.
//!   A numeric key indexes a list (`data.pipeline.img_scale.0=640`).

mod error;
mod resolve;
mod two_stage;
mod typed;
mod validate;

pub use error::ConfigError;
pub use resolve::{apply_override, deep_merge, load_resolved, parse_override_value, strip_delete_markers};
pub use two_stage::*;
pub use typed::*;
pub use validate::{MAX_IMG_SCALE, MAX_NUM_WORKERS, MAX_PREFETCH, validate_experiment};

use std::path::Path;

/// Load `path` with its bases and `overrides`, and deserialize it into `T`.
///
/// Returns the typed config and the resolved JSON (what `attndet config show` prints and what is saved in the
/// work dir).
pub fn load_typed<T: serde::de::DeserializeOwned>(
    path: &Path,
    overrides: &[String],
) -> Result<(T, serde_json::Value), ConfigError> {
    let mut value = load_resolved(path)?;
    for o in overrides {
        apply_override(&mut value, o)?;
    }
    let typed = from_value_with_path(&value, &path.display().to_string())?;
    Ok((typed, value))
}

/// Deserialize a resolved config into `T`; an error names the JSON path of the offending field
/// (e.g. `model.bbox_head.loss_cls: unknown field `gama``).
pub fn from_value_with_path<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    source: &str,
) -> Result<T, ConfigError> {
    let (text, line_paths) = resolve::pretty_with_line_paths(value);
    serde_json::from_str(&text).map_err(|e| {
        let path = line_paths
            .get(e.line().saturating_sub(1))
            .cloned()
            .unwrap_or_default();
        // serde_json appends " at line L column C", which refers to our internal pretty text: drop it.
        let msg = e.to_string();
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        let mut path = if path.is_empty() {
            "<root>".to_string()
        } else {
            path
        };
        // Tagged enums buffer their object, so serde reports their errors at the object's end: point an unknown
        // field at the field itself when it is unambiguous.
        if let Some(field) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            let found = resolve::find_key_paths(value, &path, field);
            if found.len() == 1 {
                path = found[0].clone();
            }
        }
        // The same for an unknown `"type"` of a nested tagged enum: point at the `type` holding it.
        if let Some(variant) = msg
            .strip_prefix("unknown variant `")
            .and_then(|r| r.split('`').next())
        {
            let found: Vec<String> = resolve::find_key_paths(value, &path, "type")
                .into_iter()
                .filter(|p| lookup(value, p).and_then(|v| v.as_str()) == Some(variant))
                .collect();
            if found.len() == 1 {
                path = found[0].clone();
            }
        }
        ConfigError::Invalid {
            source_name: source.to_string(),
            path,
            message: msg,
        }
    })
}

#[cfg(test)]
mod tests;

/// The value at a dotted path (`a.b.0.c`).
fn lookup<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(value, |node, part| match node {
        serde_json::Value::Object(o) => o.get(part),
        serde_json::Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}
