//! The report page rendered by a real browser (headless Chromium): it shows the
//! drift and the violation, and a screenshot is kept in
//! `target/test-artifacts/report-page.png` for people to look at.

#[path = "http_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Server, drift_report};

fn chromium() -> &'static str {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return candidate;
        }
    }
    panic!(
        "chromium not found: install the Debian `chromium` package (apt-get install -y chromium); \
         `cargo xtask setup` installs it"
    );
}

/// Runs headless Chromium with `mode` (`--dump-dom` or `--screenshot=…`) on `url`,
/// with a throwaway profile and everything that phones home turned off.
fn run_chromium(profile: &Path, mode: &str, url: &str) -> Output {
    let mut child = Command::new(chromium())
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
            "--hide-scrollbars",
            "--window-size=1200,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("poll chromium").is_some() {
            return child.wait_with_output().expect("chromium output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("chromium output");
            panic!(
                "chromium did not finish within 90 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
    let profile = tempfile_dir("meshdrift-chromium-dom");

    let out = run_chromium(profile.path(), "--dump-dom", &url);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
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
    let profile = tempfile_dir("meshdrift-chromium-shot");
    let png = artifacts_dir().join("report-page.png");
    let _ = std::fs::remove_file(&png);

    let out = run_chromium(
        profile.path(),
        &format!("--screenshot={}", png.display()),
        &server.url("/"),
    );
    assert!(
        out.status.success(),
        "chromium --screenshot failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert_eq!((width, height), (1200, 1600), "screenshot size");
    eprintln!("screenshot: {}", png.display());
}

/// A fresh, empty Chromium profile directory, removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(prefix: &str) -> Profile {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create profile dir");
    Profile(dir)
}
