//! `concord check --html` pages, loaded in headless Chromium: the inline script runs and numbers
//! one `data-op` element per drawn operation, so the operations render in a real browser.
//!
//! Needs Debian's `chromium` package (`/usr/bin/chromium`, or set `CHROMIUM`). Without it the
//! tests fail, unless `CONCORD_SKIP_BROWSER=1` is set.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chromium-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The browser to run, or `None` when it is missing and the run may skip it.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CONCORD_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!(
            "skipped: {} not found and CONCORD_SKIP_BROWSER=1",
            path.display()
        );
        return None;
    }
    panic!(
        "{} not found: install Debian's chromium package (apt-get install -y chromium), point \
         CHROMIUM at a Chromium binary, or set CONCORD_SKIP_BROWSER=1 to skip browser tests",
        path.display()
    );
}

/// The DOM of `page` after Chromium has loaded it and run its scripts.
fn rendered_dom(browser: &Path, page: &Path, name: &str) -> String {
    let profile = scratch(&format!("{name}-profile"));
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes the `--html` page of a Porcupine etcd history; returns the page and the exit code.
fn picture(name: &str, extra: &[&str]) -> (PathBuf, Option<i32>) {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../../shared/data/porcupine/jepsen/{name}.log"));
    let page = scratch(&format!("{name}.html"));
    let _ = std::fs::remove_file(&page);
    let output = Command::new(env!("CARGO_BIN_EXE_concord"))
        .arg("check")
        .arg(&data)
        .args(extra)
        .arg("--html")
        .arg(&page)
        .output()
        .unwrap();
    assert!(page.exists(), "{}", String::from_utf8_lossy(&output.stderr));
    (page, output.status.code())
}

/// Every drawn operation gets its `data-op` number from the page's script.
fn assert_every_operation_renders(name: &str, extra: &[&str], expected_code: i32) {
    let Some(browser) = chromium() else {
        return;
    };
    let (page, code) = picture(name, extra);
    assert_eq!(code, Some(expected_code));
    let source = std::fs::read_to_string(&page).unwrap();
    let drawn = source.matches(r#"<g class="op""#).count();
    assert!(drawn > 0, "the page draws operations");
    assert_eq!(
        source.matches("data-op=").count(),
        0,
        "only the script sets data-op"
    );
    let dom = rendered_dom(&browser, &page, name);
    assert_eq!(
        dom.matches("data-op=\"").count(),
        drawn,
        "one data-op element per operation after the script ran"
    );
    assert!(
        dom.contains(&format!("{drawn} operations drawn")),
        "the script reports what it rendered"
    );
}

#[test]
fn a_linearizable_history_renders_every_operation_in_chromium() {
    assert_every_operation_renders("etcd_002", &[], 0);
}

#[test]
fn a_linearizability_violation_renders_in_chromium() {
    assert_every_operation_renders("etcd_000", &[], 1);
}
