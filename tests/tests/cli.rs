//! The binary's global behaviour: version, help, device option, exit codes.

use attndet_tests::run;

#[test]
fn version_says_whether_cuda_is_compiled_in() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(concat!("attndet ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("cuda: "), "{text}");
}

#[test]
fn help_lists_devices_option() {
    let out = run(&["train", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--device"), "{text}");
}

#[test]
fn bad_device_is_a_usage_error() {
    let out = run(&["devices", "--device", "tpu:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown device `tpu:0`"), "{err}");
}

#[test]
fn cuda_device_without_cuda_support_exits_2() {
    let version = String::from_utf8_lossy(&run(&["--version"]).stdout).to_string();
    if version.contains("cuda: yes") {
        return; // a CUDA build: the device may well exist
    }
    let out = run(&["devices", "--device", "cuda:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without CUDA support"), "{err}");
}

#[test]
fn wgpu_device_without_wgpu_support_exits_2() {
    let version = String::from_utf8_lossy(&run(&["--version"]).stdout).to_string();
    assert!(version.contains("wgpu: "), "{version}");
    if version.contains("wgpu: yes") {
        return; // a wgpu build: tests/gpu_path.rs covers it
    }
    let out = run(&["devices", "--device", "wgpu:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without wgpu support"), "{err}");
}

#[test]
fn amp_is_refused_with_the_reason() {
    // refused before the config is read: the missing config does not matter
    for cmd in [
        &["train", "no-such.json"][..],
        &["test", "no-such.json", "no-such-ckpt"][..],
    ] {
        let mut args = cmd.to_vec();
        args.push("--amp");
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--amp") && err.contains("no autocast"), "{err}");
    }
}
