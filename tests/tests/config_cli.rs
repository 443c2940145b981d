//! `attndet config show`: resolution, overrides and typo errors through the binary.

use attndet_tests::{run, workspace_root};

fn config(name: &str) -> String {
    workspace_root()
        .join("configs/retinanet")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn show_prints_the_resolved_config() {
    let out = run(&["config", "show", &config("retinanet_se-r50_fpn_2x_coco.json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"]["backbone"]["name"], "se_resnet50");
    assert_eq!(v["runner"]["max_epochs"], 24);
    assert_eq!(v["lr_config"]["step"], serde_json::json!([16, 22]));
    assert_eq!(v["optimizer"]["grad_clip"]["max_norm"], 35);
    assert!(v.get("_base_").is_none());
    assert!(v["optimizer"]["grad_clip"].get("_delete_").is_none());
}

#[test]
fn overrides_apply_with_types() {
    let out = run(&[
        "config",
        "show",
        &config("retinanet_r50_fpn_1x_coco.json"),
        "--cfg-options",
        "optimizer.lr=0.02",
        "data.batch_size=4",
        "lr_config.step=7,10",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["optimizer"]["lr"], 0.02);
    assert_eq!(v["data"]["batch_size"], 4);
    assert_eq!(v["lr_config"]["step"], serde_json::json!([7, 10]));
}

#[test]
fn typo_exits_2_naming_the_json_path() {
    let out = run(&[
        "config",
        "show",
        &config("retinanet_r50_fpn_1x_coco.json"),
        "--cfg-options",
        "model.neck.num_out=5",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.neck.num_out") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn missing_file_exits_2_naming_it() {
    let out = run(&["config", "show", "no/such/config.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/config.json"));
}
