//! Headless Chromium (Debian's `chromium` package) rendering a page served on
//! loopback: its DOM after scripts and layout, or a screenshot. Used to check
//! the report page as a person would see it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::error::{LabError, Result};

const CHROMIUM_CANDIDATES: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const RENDER_TIMEOUT: Duration = Duration::from_secs(90);
/// The window every render uses, so screenshots are comparable.
pub const WINDOW: (u32, u32) = (1200, 1600);

fn chromium() -> Result<&'static str> {
    CHROMIUM_CANDIDATES
        .iter()
        .copied()
        .find(|candidate| Path::new(candidate).exists())
        .ok_or_else(|| {
            LabError::invalid(
                "browser",
                "chromium not found: install the Debian `chromium` package (`cargo xtask setup` does)",
            )
        })
}

/// The page's DOM as Chromium rendered it.
pub fn render_dom(url: &str) -> Result<String> {
    let output = run(&["--dump-dom"], url)?;
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    if !dom.contains("</html>") {
        return Err(LabError::invalid(
            "browser",
            format!("chromium rendered no page for {url}"),
        ));
    }
    Ok(dom)
}

/// A PNG screenshot of the page at `path` (parent directories are created).
pub fn screenshot(url: &str, path: &Path) -> Result<PathBuf> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io("creating", dir, e))?;
    }
    let _ = std::fs::remove_file(path);
    run(&[&format!("--screenshot={}", path.display())], url)?;
    if !path.exists() {
        return Err(LabError::invalid(
            "browser",
            format!("chromium wrote no screenshot for {url}"),
        ));
    }
    Ok(path.to_path_buf())
}

fn run(mode: &[&str], url: &str) -> Result<Output> {
    let program = chromium()?;
    let profile = Profile::new()?;
    let command = format!("{program} {} {url}", mode.join(" "));
    let mut child = Command::new(program)
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
        ])
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    let deadline = Instant::now() + RENDER_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout {
                    command,
                    timeout: RENDER_TIMEOUT,
                });
            }
        }
    }
    let output = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(LabError::Command {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(output)
}

/// A fresh, empty Chromium profile, removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("meshdrift-chromium-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io("creating", &dir, e))?;
        Ok(Self(dir))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
