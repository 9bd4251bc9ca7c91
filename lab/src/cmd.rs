//! Running short host-side helper commands (`ip`, `openssl`, `nginx -t`, …)
//! and turning a failure into an error that carries the command line and its
//! stderr, which is what one needs to fix a broken lab.

use std::process::{Command, Stdio};

use crate::error::{LabError, Result};

/// The command line as a user could paste it into a shell.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        out.push(' ');
        if arg.is_empty()
            || arg.contains(|c: char| c.is_whitespace() || "\"'$()*[]{};|&<>".contains(c))
        {
            out.push('\'');
            out.push_str(&arg.replace('\'', r"'\''"));
            out.push('\'');
        } else {
            out.push_str(&arg);
        }
    }
    out
}

/// Runs `cmd` to completion and returns its stdout; non-zero exit is an error
/// carrying stderr (or stdout when stderr is empty, as `haproxy -c` does).
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let command = describe(cmd);
    tracing::debug!(%command, "run");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = if stderr.trim().is_empty() {
            stdout.trim().to_owned()
        } else {
            stderr.trim().to_owned()
        };
        return Err(LabError::Command {
            command,
            status: output.status.to_string(),
            stderr,
        });
    }
    Ok(stdout)
}

/// `ip ARGS…`
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// True when the error is the kernel saying the object is already there.
pub(crate) fn is_exists(err: &LabError) -> bool {
    matches!(err, LabError::Command { stderr, .. } if stderr.contains("File exists"))
}

/// True when the error is the kernel saying the object is not there (any more).
pub(crate) fn is_missing(err: &LabError) -> bool {
    matches!(err, LabError::Command { stderr, .. }
        if stderr.contains("Cannot find device")
            || stderr.contains("No such file")
            || stderr.contains("does not exist"))
}
