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
    assert_eq!(printed, file, "regenerate with: stoker-agent --print-default-config > {path}");
}

#[test]
fn unknown_key_exits_64_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[export]\nqueue_batchez = 3\n").unwrap();
    let out = agent().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}: export", path.display())), "{err}");
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
    assert!(err.contains(&format!("{}: collector:", path.display())), "{err}");
    assert!(err.contains(&format!("{}: interval:", path.display())), "{err}");
}

#[test]
fn bad_flag_value_exits_64_naming_the_flag() {
    let out = agent().args(["--interval", "often"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--interval"), "{err}");
    let out = agent().args(["--metrics-listen", "localhost"]).output().unwrap();
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

#[test]
fn unreadable_token_and_ca_files_exit_64_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "  \n").unwrap();
    std::fs::write(
        &path,
        format!(
            "collector = \"https://127.0.0.1:4417\"\n[export]\ntoken_file = {:?}\nca_file = \"/nonexistent/ca.pem\"\n",
            empty.display().to_string()
        ),
    )
    .unwrap();
    let out = agent().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: export.token_file: {} is empty",
            path.display(),
            empty.display()
        )),
        "{err}"
    );
    assert!(err.contains("export.ca_file: cannot read /nonexistent/ca.pem"), "{err}");
}

#[test]
fn a_ca_file_for_a_plain_http_collector_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "collector = \"http://127.0.0.1:4417\"\n[export]\nca_file = {:?}\n",
            ca.display().to_string()
        ),
    )
    .unwrap();
    let out = agent().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("export.ca_file:") && err.contains("is not an https:// URL"), "{err}");
}
