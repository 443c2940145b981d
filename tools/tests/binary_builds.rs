//! The end-to-end tests live in the `attndet-tests` crate (top-level `tests/`) and run the built binary.
//! This integration test exists so that `cargo test --workspace` builds the `attndet` binary (cargo builds a
//! package's binaries only for that package's integration tests) before any test runs.

#[test]
fn binary_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attndet"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: attndet"));
}
