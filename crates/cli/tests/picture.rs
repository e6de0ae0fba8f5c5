//! `concord check --html`: a non-linearizable history gets a picture of its failing key.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn a_violation_is_drawn_as_an_html_timeline() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/porcupine/jepsen/etcd_000.log");
    let page = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("etcd_000.html");
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
    assert_eq!(
        output.status.code(),
        Some(1),
        "etcd_000 is not linearizable"
    );
    let html = std::fs::read_to_string(&page).expect("the picture was written");
    assert!(html.contains("<svg") && html.contains("Not linearizable"));
    assert!(
        html.contains("cannot be placed"),
        "the stuck operation is marked"
    );
    assert!(html.contains("in the longest linearizable prefix"));
}

#[test]
fn a_linearizable_history_writes_no_picture() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/porcupine/jepsen/etcd_002.log");
    let page = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("etcd_002.html");
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
    assert_eq!(output.status.code(), Some(0));
    assert!(!page.exists());
}
