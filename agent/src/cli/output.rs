//! Standard output and standard error for every command.
//!
//! `println!` panics when stdout is gone, so nothing prints with it. A reader
//! that closed early (`| head -1`: EPIPE) ends the output quietly — the
//! command still exits with its own status; any other write error (`>
//! /dev/full`: ENOSPC) becomes one error line. Diagnostics on stderr are best
//! effort: a closed stderr loses them rather than stopping the command.

use std::io::{self, IsTerminal, Write};

use super::terminal::escape;

/// Writing to standard output failed for a reason other than a closed reader.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output")]
pub struct OutputError(#[source] io::Error);

/// Buffered standard output that stops writing, without error, once the
/// reader has gone away.
pub struct Stdout {
    /// `None` once nothing more can be written.
    out: Option<io::BufWriter<io::Stdout>>,
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout {
            out: Some(io::BufWriter::new(io::stdout())),
        }
    }
}

impl Stdout {
    pub fn write_str(&mut self, text: &str) -> Result<(), OutputError> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let written = out.write_all(text.as_bytes());
        self.absorb(written)
    }

    pub fn flush(&mut self) -> Result<(), OutputError> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let flushed = out.flush();
        self.absorb(flushed)
    }

    /// True once the reader has gone away: a streaming command may stop.
    pub fn is_closed(&self) -> bool {
        self.out.is_none()
    }

    fn absorb(&mut self, result: io::Result<()>) -> Result<(), OutputError> {
        let Err(err) = result else {
            return Ok(());
        };
        // Nothing more can be written: discard the buffer, which a dropped
        // BufWriter would otherwise try to write again.
        if let Some(out) = self.out.take() {
            let _ = out.into_parts();
        }
        if err.kind() == io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(OutputError(err))
        }
    }
}

/// Writes `text` to standard output and flushes it.
pub fn print(text: &str) -> Result<(), OutputError> {
    let mut out = Stdout::default();
    out.write_str(text)?;
    out.flush()
}

/// One line on standard error, best effort; names in it are escaped like
/// any terminal text.
pub fn warn(line: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(escape(line).as_bytes());
    let _ = err.write_all(b"\n");
}

/// Help or version text from clap, styled when stdout is a terminal.
pub fn print_styled(text: &clap::builder::StyledStr) -> Result<(), OutputError> {
    if io::stdout().is_terminal() {
        print(&text.ansi().to_string())
    } else {
        print(&text.to_string())
    }
}
