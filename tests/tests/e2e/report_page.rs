//! The report page rendered by a real browser (headless Chromium): it shows the
//! drift and the violation, and a screenshot is kept in
//! `target/test-artifacts/report-page.png` for people to look at.

use std::path::{Path, PathBuf};

use meshdrift_lab::browser;
use meshdrift_testkit::{Server, drift_report};

fn artifacts_dir() -> PathBuf {
    // Always the workspace's target/, whatever CARGO_TARGET_DIR says, so people and
    // CI find the screenshot in one known place.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

#[test]
fn browser_renders_the_drift_and_the_violation() {
    let server = Server::start(drift_report());
    let url = server.url("/");
    let dom = browser::render_dom(&url).unwrap_or_else(|err| panic!("{err}"));
    for expected in [
        "DRIFT",
        "default/loadgen",
        "frontend.default.svc.cluster.local:80",
        ">v1<",
        ">v2<",
        "80.0%",
        "20.0%",
        "50.0%",
        "+30.0 pp",
        "subset v2 received 20.0% of requests, declared 50.0%",
        "VIOLATION",
        "default/frontend-v3-7d9f",
        "IST0101",
        "lab-node-1",
    ] {
        assert!(
            dom.contains(expected),
            "rendered page lacks {expected:?}:\n{dom}"
        );
    }
    assert!(
        dom.contains(r#"class="num cell-violation">57<"#),
        "plaintext cell not highlighted"
    );
    // The bars are laid out: the observed v1 bar is drawn at 80 % of 400 units.
    assert!(
        dom.contains(r#"class="obs off" x="0" y="14" width="320.0""#),
        "{dom}"
    );
}

#[test]
fn screenshot_of_the_page_is_kept_as_an_artifact() {
    let server = Server::start(drift_report());
    let png = browser::screenshot(&server.url("/"), &artifacts_dir().join("report-page.png"))
        .unwrap_or_else(|err| panic!("{err}"));
    let bytes = std::fs::read(&png)
        .unwrap_or_else(|err| panic!("no screenshot at {}: {err}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank 1200×1600 page compresses to a few kilobytes; a rendered report does not.
    assert!(
        bytes.len() > 40_000,
        "screenshot suspiciously small: {} bytes",
        bytes.len()
    );
    let width = u32::from_be_bytes(bytes[16..20].try_into().expect("IHDR width"));
    let height = u32::from_be_bytes(bytes[20..24].try_into().expect("IHDR height"));
    assert_eq!((width, height), browser::WINDOW, "screenshot size");
    eprintln!("screenshot: {}", png.display());
}
