//! The repository keeps the top-level layout that DESIGN.md fixes.

#[test]
fn top_level_layout_is_present() {
    let root = stoker_tests::workspace_root();
    for path in ["agent", "collector", "tui", "policies", "tests", "README.md", ".ci/run"] {
        assert!(root.join(path).exists(), "missing {path} at the workspace root");
    }
}
