//! The manifest loader on arbitrary text, as YAML and as JSON, then the
//! inventory, the policy index and `check` on whatever loaded: a broken or
//! hostile manifest becomes problems and findings, never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use meshdrift::inventory::Index;
use meshdrift::inventory::files::{self, LoadOutcome};
use meshdrift::policy::{Policies, check};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["fuzz.yaml", "fuzz.json"] {
        let mut outcome = LoadOutcome::default();
        files::load_str(Path::new(name), text, &mut outcome);
        let index = Index::build(&outcome.objects);
        let policies = Policies::build(&outcome.objects);
        let _ = check(&index, &policies);
    }
});
