//! The binary's argument errors, as a user sees them: usage errors exit 2 (clap's convention),
//! bad configuration exits 64, a part not built in yet exits 69.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stoker-tui"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn collector_that_is_not_a_url_is_a_usage_error() {
    let o = run(&["--collector", "not-a-url"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("invalid value 'not-a-url' for '--collector <URL>'"),
        "{e}"
    );
    assert!(e.contains("not a URL"), "{e}");
    assert!(
        e.contains("http://127.0.0.1:7700"),
        "the message shows a good example: {e}"
    );
}

#[test]
fn collector_with_another_scheme_is_a_usage_error() {
    let o = run(&["--collector", "ftp://collector:21"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("scheme must be http or https, not ftp"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unknown_flag_and_unknown_scenario_are_usage_errors() {
    let o = run(&["--colector", "http://x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--collector"),
        "clap suggests the right flag: {}",
        stderr(&o)
    );
    let o = run(&["demo", "--scenario", "long"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("[possible values: short, full]"),
        "{}",
        stderr(&o)
    );
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
fn demo_is_not_built_in_yet_and_says_so() {
    let o = run(&["demo", "--headless", "--scenario", "full"]);
    assert_eq!(o.status.code(), Some(69));
    assert_eq!(
        stderr(&o).trim(),
        "stoker-tui: demo is not built into this binary yet"
    );
}
