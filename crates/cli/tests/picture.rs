//! `concord check --html`: a non-linearizable history gets a picture of its failing key.

use std::path::PathBuf;
use std::process::Command;

/// Checks one Jepsen etcd history with `--html`; returns the exit code and the page, if written.
fn check_with_picture(name: &str) -> (Option<i32>, Option<String>) {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../../shared/data/porcupine/jepsen/{name}.log"));
    let page = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.html"));
    let _ = std::fs::remove_file(&page);
    let output = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args([
            "check",
            data.to_str().unwrap(),
            "--html",
            page.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    (output.status.code(), std::fs::read_to_string(&page).ok())
}

#[test]
fn a_violation_is_drawn_as_an_html_timeline() {
    let (code, html) = check_with_picture("etcd_000");
    assert_eq!(code, Some(1), "etcd_000 is not linearizable");
    let html = html.expect("the picture was written");
    assert!(html.contains("<svg") && html.contains("Not linearizable"));
    assert!(
        html.contains("cannot be placed"),
        "the stuck operation is marked"
    );
    assert!(html.contains("in the longest linearizable prefix"));
}

#[test]
fn a_linearizable_history_writes_no_picture() {
    let (code, html) = check_with_picture("etcd_002");
    assert_eq!(code, Some(0));
    assert!(html.is_none());
}
