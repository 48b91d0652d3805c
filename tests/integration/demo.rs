//! The README's first command, small: `ndbridge demo` streams, stores, and prints a summary
//! with the store it wrote and how to open it.

use std::process::Command;
use std::time::Duration;

use crate::common::watchdog;

#[test]
fn demo_stores_every_record_and_points_at_its_store() {
    let _watchdog = watchdog(
        "demo stores every record and points",
        Duration::from_secs(120),
    );
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .args([
            "demo",
            "--workers",
            "2",
            "--seconds",
            "1",
            "--rate",
            "10",
            "--size",
            "64",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} line in\n{stdout}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    let stored = field("records stored");
    assert!(stored >= 2 * 3 * 5, "too few records: {stored}");
    assert_eq!(stored, field("sent by workers"));
    assert_eq!(field("gaps"), 0);
    // The snippet opens this run's store, which holds every record.
    let open = stdout
        .lines()
        .find(|l| l.contains("xr.open_zarr("))
        .unwrap();
    let path = open
        .split("open_zarr('")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let path = path.strip_suffix("/sim-0/temperature").unwrap();
    let store = ndbridge::store::Store::open(path).unwrap();
    let held: u64 = store.groups().iter().map(|g| g.records).sum();
    assert_eq!(held, stored);
    let groups: Vec<(&str, &str)> = store
        .groups()
        .iter()
        .map(|g| (g.source.as_str(), g.record.as_str()))
        .collect();
    assert!(groups.contains(&("sim-0", "temperature")), "{groups:?}");
}

/// The README's first command is `cargo run -- demo` (the test build's binary: dependencies
/// optimized, so the demo needs no second build): with two binaries in the package, that works
/// only if `default-run` names the `ndbridge` binary.
#[test]
fn the_readme_first_command_runs_the_ndbridge_binary() {
    let _watchdog = watchdog(
        "the readme first command runs the",
        Duration::from_secs(120),
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let first_command = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|block| block.lines().next())
        .unwrap();
    assert!(
        first_command.starts_with("cargo run -- demo"),
        "{first_command}"
    );
    let metadata = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let package = &metadata["packages"][0];
    assert_eq!(package["default_run"], "ndbridge");
    let bins: Vec<&str> = package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"][0] == "bin")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(bins.contains(&"ndbridge"), "{bins:?}");
}
