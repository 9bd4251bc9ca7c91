//! External programs some tests run. A test that needs one fails (never
//! skips) when it is missing, saying how to install it.

use std::path::Path;
use std::process::Command;

/// The Debian `prometheus` package's promtool; tests that need it fail (never skip)
/// without it.
pub fn promtool() -> Command {
    let path = "/usr/bin/promtool";
    let found =
        Path::new(path).exists() || Command::new("promtool").arg("--version").output().is_ok();
    assert!(
        found,
        "promtool not found: install the Debian `prometheus` package (apt-get install -y prometheus); \
         `cargo xtask setup` installs it"
    );
    Command::new(if Path::new(path).exists() {
        path
    } else {
        "promtool"
    })
}
