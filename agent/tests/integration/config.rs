//! The command line and the configuration file: the printed default, bad configuration.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stoker-agent"))
}

#[test]
fn printed_default_config_matches_the_checked_in_example() {
    let out = agent().arg("--print-default-config").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/stoker-agent.example.toml");
    let file = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        printed, file,
        "regenerate with: stoker-agent --print-default-config > {path}"
    );
}

#[test]
fn unknown_key_exits_64_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[export]\nqueue_batchez = 3\n").unwrap();
    let out = agent().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: export", path.display())),
        "{err}"
    );
    assert!(err.contains("queue_batchez"), "{err}");
}

#[test]
fn invalid_values_exit_64_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "collector = \"nope\"\ninterval = \"10ms\"\n").unwrap();
    let out = agent().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: collector:", path.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: interval:", path.display())),
        "{err}"
    );
}

#[test]
fn bad_flag_value_exits_64_naming_the_flag() {
    let out = agent().args(["--interval", "often"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--interval"), "{err}");
    let out = agent()
        .args(["--metrics-listen", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn help_lists_the_design_flags() {
    let out = agent().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--collector",
        "--interval",
        "--nvml-lib",
        "--metrics-listen",
        "--otlp-grpc-listen",
        "--otlp-http-listen",
        "--print-default-config",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
