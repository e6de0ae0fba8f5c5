//! `concord check --html`: a non-linearizable history gets a picture of its failing key, a
//! linearizable one a picture of the order found.

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
    assert!(html.contains("in the order found"));
}

#[test]
fn a_linearizable_history_is_drawn_with_the_order_found() {
    let (code, html) = check_with_picture("etcd_002");
    assert_eq!(code, Some(0));
    let html = html.expect("the picture was written");
    assert!(html.contains("<h1>Linearizable</h1>"), "{}", &html[..400]);
    assert!(html.contains("#1 in the order found"));
    assert!(html.contains(r#"class="point""#), "linearization points");
    assert!(html.contains("state after: "), "model states on hover");
}
