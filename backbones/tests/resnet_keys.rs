//! Our ResNet-family models hold exactly the reference `state_dict`: same key names (through the key map,
//! reversed), same shapes, same parameter count, for every ResNet-family model of the reference list
//! (`fixtures/resnet_key_digests.json`, made by `scripts/reference_key_digests.py` from
//! `shared/reference/backbone_state_dicts.json`). When that reference file is present beside the workspace, a
//! failure also prints the differing keys.

use attndet_backbones::BackboneArch;
use attndet_backbones::checkpoint::reference_keys;
use attndet_backbones::cost::parameter_count;
use attndet_backbones::resnet::renames;
use burn::backend::Flex;

type B = Flex;

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn lines(keys: &[(String, Vec<usize>)]) -> Vec<String> {
    let mut l: Vec<String> = keys
        .iter()
        .map(|(k, s)| {
            format!(
                "{k}:{}",
                s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    l.sort();
    l
}

/// Reference model name -> our zoo name; `None` for variants outside this family's scope.
fn our_name(reference: &str) -> Option<String> {
    let (_, name) = reference.split_once('/')?;
    if name.starts_with("sge_") || name.starts_with("sk_") {
        return None; // SGE and the repository's other SK variant are not part of the zoo.
    }
    Some(
        name.replace("old_", "")
            .replace("getheta_", "ge_")
            .replace("sk2_", "sk_"),
    )
}

fn reference_detail(reference: &str) -> Option<Vec<String>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/backbone_state_dicts.json");
    let text = std::fs::read_to_string(path).ok()?;
    let all: serde_json::Value = serde_json::from_str(&text).ok()?;
    let sd = all[reference]["state_dict"].as_array()?;
    let keys: Vec<(String, Vec<usize>)> = sd
        .iter()
        .map(|e| {
            let k = e[0].as_str().unwrap_or_default().to_string();
            let s = e[1]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_u64()).map(|d| d as usize).collect());
            (k, s.unwrap_or_default())
        })
        .collect();
    Some(lines(&keys))
}

#[test]
fn state_dicts_match_the_reference_keys_shapes_and_params() {
    let digests: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/resnet_key_digests.json")).expect("fixture parses");
    let device = Default::default();
    let mut failures = Vec::new();
    let mut pending = Vec::new();
    let mut checked = 0;
    for (reference, want) in digests.as_object().expect("object") {
        let Some(name) = our_name(reference) else { continue };
        let arch = BackboneArch::parse(&name).unwrap_or_else(|e| panic!("{reference}: {e}"));
        let model = match arch.build_lazy::<B>(&device) {
            Ok(m) => m,
            Err(e) if e.to_string().contains("not built yet") => {
                pending.push(name);
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        let BackboneArch::ResNet(cfg) = &arch else {
            panic!("{name} is a ResNet")
        };
        let keys = reference_keys(&model, &renames(cfg));
        let ours = lines(&keys);
        let digest = format!("{:016x}", fnv1a64(ours.join("\n").as_bytes()));
        let params = parameter_count(&model) as u64;
        if digest != want["fnv1a64"].as_str().unwrap_or_default()
            || params != want["params"].as_u64().unwrap_or(0)
        {
            let mut msg = format!(
                "{name} ({reference}): {} keys vs {}, params {params} vs {}",
                ours.len(),
                want["keys"],
                want["params"]
            );
            if let Some(theirs) = reference_detail(reference) {
                let only_ours: Vec<_> = ours.iter().filter(|l| !theirs.contains(l)).take(8).collect();
                let only_theirs: Vec<_> = theirs.iter().filter(|l| !ours.contains(l)).take(8).collect();
                msg.push_str(&format!(
                    "\n  only ours: {only_ours:?}\n  only reference: {only_theirs:?}"
                ));
            }
            failures.push(msg);
        }
        checked += 1;
    }
    eprintln!("checked {checked}; not built yet: {pending:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 10);
}
