//! The binary's argument errors, as a user sees them: usage errors exit 2 (clap's convention),
//! bad configuration exits 64, a part not built in yet exits 69, the demo's hidden child
//! subcommands refuse bad flags with 64.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stoker-tui")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn collector_that_is_not_a_url_is_a_usage_error() {
    let o = run(&["--collector", "not-a-url"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("invalid value 'not-a-url' for '--collector <URL>'"), "{e}");
    assert!(e.contains("not a URL"), "{e}");
    assert!(e.contains("http://127.0.0.1:7700"), "the message shows a good example: {e}");
}

#[test]
fn collector_with_another_scheme_is_a_usage_error() {
    let o = run(&["--collector", "ftp://collector:21"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("scheme must be http or https, not ftp"), "{}", stderr(&o));
}

#[test]
fn unknown_flag_and_unknown_scenario_are_usage_errors() {
    let o = run(&["--colector", "http://x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--collector"), "clap suggests the right flag: {}", stderr(&o));
    let o = run(&["demo", "--scenario", "long"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("[possible values: short, full]"), "{}", stderr(&o));
}

#[test]
fn unreadable_token_file_is_bad_configuration() {
    let o = run(&["--token-file", "/nonexistent/stoker/token"]);
    assert_eq!(o.status.code(), Some(64));
    let e = stderr(&o);
    assert!(
        e.starts_with("stoker-tui: /nonexistent/stoker/token: cannot read the token file"),
        "{e}"
    );
}

#[test]
fn hidden_child_subcommands_refuse_bad_flags_with_64() {
    let o = run(&["__cnn-serve", "--listen", "not-an-address", "--model-dir", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("--listen"), "{}", stderr(&o));
    let o = run(&["__cnn-train"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("--model-dir"), "{}", stderr(&o));
}

#[test]
fn hidden_trainer_publishes_a_version() {
    let dir = std::env::temp_dir().join(format!("stoker-tui-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let o = run(&[
        "__cnn-train",
        "--model-dir",
        d,
        "--train-samples",
        "200",
        "--test-samples",
        "50",
        "--epochs",
        "1",
        "--min-accuracy",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(meta["version"], 1, "{meta}");
    assert!(dir.join("v1/model.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
