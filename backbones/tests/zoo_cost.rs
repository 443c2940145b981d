//! Parameter counts (exact) and FLOPs (within 1%) against the reference table
//! (`fixtures/backbone_flops.json`, a copy of `shared/reference/backbone_flops.json`: counts measured on the
//! authors' PyTorch code with the DCANet repository's flops_counter.py at 224x224).

use attndet_backbones::BackboneArch;
use attndet_backbones::cost::parameter_count;
use burn::backend::Flex;

type B = Flex;

/// Reference key -> our zoo name, for the networks of the ResNet family.
fn our_name(reference: &str) -> Option<String> {
    let (repo, name) = reference.split_once('/')?;
    if !name.contains("resnet") || repo == "sda" {
        return None;
    }
    let name = name
        .replace("old_", "")
        .replace("getheta_", "ge_")
        .replace("sk2_", "sk_");
    Some(name)
}

#[test]
fn params_and_flops_match_the_reference_table() {
    let table: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/backbone_flops.json")).expect("fixture parses");
    let device = Default::default();
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    let mut pending = Vec::new();
    for (reference, figures) in table.as_object().expect("object") {
        let Some(name) = our_name(reference) else { continue };
        let arch = match BackboneArch::parse(&name) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let model = match arch.build_lazy::<B>(&device) {
            Ok(m) => m,
            // Families still being written are listed, not silently passed.
            Err(e) if e.to_string().contains("not built yet") => {
                pending.push(name);
                continue;
            }
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let want_params = figures["params"].as_u64().expect("params") as usize;
        let want_flops = figures["flops_ptflops"].as_u64().expect("flops") as f64;
        let cost = model.cost(224, 224);
        let params = parameter_count(&model);
        let rel = (cost.flops as f64 - want_flops).abs() / want_flops;
        if params != want_params || cost.params != params || rel > 0.01 {
            failures.push(format!(
                "{name}: params {params} (rows {}) vs {want_params}, flops {} vs {want_flops} ({:.3}%)",
                cost.params,
                cost.flops,
                rel * 100.0
            ));
        }
        checked.push(name);
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    assert!(checked.len() >= 5, "{checked:?}");
    eprintln!("checked {checked:?}; not built yet: {pending:?}");
}
