//! Writes a synthetic mesh as manifests, for a `meshdrift check` or
//! `meshdrift run --manifests` by hand:
//!
//! ```text
//! synthetic-mesh DIR [PODS [NAMESPACES [SERVICES_PER_NAMESPACE]]]
//! ```
//!
//! The default is the benchmark mesh: 150 000 pods, 200 namespaces of 100
//! services.

// The binary links the library's dependencies; it names only some.
#![allow(unused_crate_dependencies)]

use std::path::PathBuf;
use std::process::ExitCode;

use meshdrift_testkit::SyntheticMesh;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: synthetic-mesh DIR [PODS [NAMESPACES [SERVICES_PER_NAMESPACE]]]");
        return ExitCode::from(2);
    };
    let mut mesh = SyntheticMesh::BENCHMARK;
    let sizes = [
        &mut mesh.pods,
        &mut mesh.namespaces,
        &mut mesh.services_per_namespace,
    ];
    for (size, arg) in sizes.into_iter().zip(args) {
        match arg.parse() {
            Ok(number) => *size = number,
            Err(err) => {
                eprintln!("{arg:?} is not a number: {err}");
                return ExitCode::from(2);
            }
        }
    }
    match mesh.write_manifests(&dir) {
        Ok(bytes) => {
            eprintln!(
                "{} pods, {} services in {}: {:.1} MB of manifests",
                mesh.pods,
                mesh.services(),
                dir.display(),
                bytes as f64 / 1e6
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cannot write {}: {err}", dir.display());
            ExitCode::FAILURE
        }
    }
}
