//! The user-space pipeline on one core: kernel records decoded, joined with
//! the classification of each flow's first bytes, attributed against the
//! frontend example's policy, tallied by the drift engine and counted in the
//! metrics — the agent's whole per-event path, fed synthetic records shaped
//! like the ring buffer's. Budget: at least 1 M events/s.

// The benchmark links the library's dependencies; it names only some.
#![allow(unused_crate_dependencies)]
// A panic is a benchmark's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, path::Path, sync::Arc};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshdrift::{
    attribution::Mesh,
    drift::{DriftConfig, DriftEngine},
    export::Metrics,
    inventory::files,
    pipeline::FlowJoiner,
    probe::decode,
    runtime::{Agent, Declared},
};
use meshdrift_ebpf::{
    FlowAddrs, FlowEvent, FlowState, PAYLOAD_CAPTURE_LEN, PayloadEvent, RecordKind, Role,
    flow_flags,
};
use meshdrift_testkit::hex_fixture;

/// Connections per batch: each is four records (both sockets' first bytes
/// and closes), as a connection between two pods of one node produces.
const CONNECTIONS: u64 = 1_000;

fn bytes_of<T>(value: &T) -> Vec<u8> {
    // SAFETY: the records are plain `#[repr(C)]` data.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn client_hello() -> Vec<u8> {
    hex_fixture(include_str!(
        "../tests/fixtures/wire/openssl_tls13_istio_http.hex"
    ))
}

fn addrs(role: Role, client_port: u16) -> FlowAddrs {
    let (client, server) = ([10, 213, 0, 10], [10, 213, 0, 11]);
    let (local, remote, local_port, remote_port) = match role {
        Role::Client => (client, server, client_port, 8443),
        Role::Server => (server, client, 8443, client_port),
    };
    let v4 = |ip: [u8; 4]| [u32::from_ne_bytes(ip), 0, 0, 0];
    FlowAddrs {
        local_addr: v4(local),
        remote_addr: v4(remote),
        local_port,
        remote_port,
        family: 4,
        role: role as u8,
        _pad: [0; 2],
    }
}

/// The records of `CONNECTIONS` short mTLS connections, cookies from `first`.
fn records(first: u64, hello: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..CONNECTIONS {
        let port = 30_000 + (i % 30_000) as u16;
        for (offset, role) in [(0, Role::Client), (1, Role::Server)] {
            let cookie = first + 2 * i + offset;
            let mut data = [0u8; PAYLOAD_CAPTURE_LEN];
            let len = hello.len().min(PAYLOAD_CAPTURE_LEN);
            data[..len].copy_from_slice(&hello[..len]);
            out.push(bytes_of(&PayloadEvent {
                kind: RecordKind::Payload as u8,
                role: role as u8,
                mid_stream: 0,
                _pad: 0,
                len: len as u32,
                cookie,
                data,
            }));
            let mut state = FlowState::new(addrs(role, port), 1_000, flow_flags::TLS);
            state.bytes = [900, 1_200];
            state.requests = 1;
            state.client_records = 2;
            out.push(bytes_of(&FlowEvent {
                kind: RecordKind::Close as u8,
                _pad: [0; 7],
                cookie,
                time_ns: 5_000_000,
                state,
            }));
        }
    }
    out
}

fn agent() -> Agent {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/frontend");
    let outcome = files::load_dir(&example).expect("the frontend example loads");
    let declared = Declared {
        mesh: Arc::new(Mesh::build(&outcome.objects)),
        load_findings: Vec::new(),
    };
    let engine = DriftEngine::new(DriftConfig::default()).unwrap();
    let mut agent = Agent::new("bench".to_owned(), engine, Arc::new(Metrics::new()));
    agent.use_declared(&declared);
    agent
}

fn pipeline(c: &mut Criterion) {
    let hello = client_hello();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(4 * CONNECTIONS));
    let mut agent = agent();
    let mut joiner = FlowJoiner::new(1 << 20).client_classification_only();
    let mut next_cookie = 1;
    let mut flows = Vec::new();
    group.bench_function("record_to_tally", |b| {
        b.iter_batched(
            || {
                let batch = records(next_cookie, &hello);
                next_cookie += 2 * CONNECTIONS;
                batch
            },
            |batch| {
                // A sweep per batch, as the agent runs one per update interval.
                let events = batch.iter().map(|record| decode(record).unwrap());
                flows.clear();
                joiner.sweep(std::iter::empty(), events, true, &mut flows);
                for flow in &flows {
                    agent.consume(black_box(flow));
                }
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
