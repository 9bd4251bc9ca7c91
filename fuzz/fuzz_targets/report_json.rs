//! The report client's decoding of an agent's answer, then its terminal
//! rendering: any body decodes or fails cleanly, and what decodes renders
//! without a raw control character.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshdrift::cli::report::{decode, render_table};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(report) = decode(body) {
        let text = render_table(&report);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
    }
});
