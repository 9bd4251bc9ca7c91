//! The data path's cost as tracked flows grow: the flow map filled with 1 k,
//! 10 k and 100 k synthetic flows, then the kernel's per-packet path timed
//! with `BPF_PROG_TEST_RUN` on one of them, and user space's sweep of the
//! whole map (read and joined) timed as the agent runs it once per update
//! interval. Needs root. Prints one JSON object per size.

// The benchmark links the package's dependencies; it names only some.
#![allow(unused_crate_dependencies)]
// A panic is a benchmark's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use aya::{
    EbpfLoader,
    maps::{HashMap, MapData},
    programs::{CgroupSkb, TestRun, TestRunOptions},
};
use meshdrift::{
    pipeline::FlowJoiner,
    probe::{FlowKind, FlowRecord, Sweeper, ebpf_object},
};
use meshdrift_ebpf::{FlowAddrs, FlowState, Role, SELFTEST_COOKIE, addr_words, flow_flags, names};

const SIZES: [u64; 3] = [1_000, 10_000, 100_000];
const REPEAT: u32 = 1_000_000;

fn addrs(i: u64) -> FlowAddrs {
    let mut local = [0u8; 16];
    local[..4].copy_from_slice(&[10, 213, (i >> 8) as u8, i as u8]);
    let mut remote = [0u8; 16];
    remote[..4].copy_from_slice(&[10, 213, 0, 11]);
    FlowAddrs {
        local_addr: addr_words(local),
        remote_addr: addr_words(remote),
        local_port: 30_000 + (i % 30_000) as u16,
        remote_port: 8443,
        family: 4,
        role: Role::Client as u8,
        _pad: [0; 2],
    }
}

/// An IPv4 TCP segment (behind an Ethernet header) carrying one TLS
/// application-data record from the client.
fn client_record() -> Vec<u8> {
    let payload: Vec<u8> = [0x17, 0x03, 0x03, 0x00, 0x60]
        .into_iter()
        .chain(std::iter::repeat_n(0xab, 0x60))
        .collect();
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&8443u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    let total = 20 + tcp.len() + payload.len();
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    let eth = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00];
    [&eth[..], &ip, &tcp, &payload].concat()
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kernel benchmark loads eBPF programs: run it as root (cargo xtask bench)"
    );
    assert!(
        !ebpf_object().is_empty(),
        "meshdrift was built without its eBPF object"
    );
    for size in SIZES {
        let mut ebpf = EbpfLoader::new()
            .load(ebpf_object())
            .expect("loading the eBPF object");
        let program: &mut CgroupSkb = ebpf
            .program_mut(names::SELFTEST_EGRESS)
            .unwrap()
            .try_into()
            .unwrap();
        program.load().expect("verifying the self-test program");
        {
            let mut flows: HashMap<&mut MapData, u64, FlowState> =
                HashMap::try_from(ebpf.map_mut(names::FLOWS).unwrap()).unwrap();
            for cookie in 1..size {
                let mut state = FlowState::new(addrs(cookie), 0, flow_flags::PAYLOAD_CAPTURED);
                state.bytes = [cookie, cookie * 2];
                flows.insert(cookie, state, 0).unwrap();
            }
            // The timed flow: TLS, its first bytes captured already.
            let state = FlowState::new(addrs(0), 0, flow_flags::PAYLOAD_CAPTURED | flow_flags::TLS);
            flows.insert(SELFTEST_COOKIE, state, 0).unwrap();
        }
        let program: &CgroupSkb = ebpf
            .program(names::SELFTEST_EGRESS)
            .unwrap()
            .try_into()
            .unwrap();
        let frame = client_record();
        let run = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: REPEAT,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");

        let map = match ebpf.map(names::FLOWS).unwrap() {
            aya::maps::Map::HashMap(data) => data,
            _ => panic!("FLOWS is not a hash map"),
        };
        let mut sweeper = Sweeper::default();
        let mut joiner = FlowJoiner::new(1 << 20);
        let mut records = Vec::with_capacity(size as usize);
        let mut sweeps = Vec::new();
        let mut out = Vec::new();
        for round in 0..5u64 {
            records.clear();
            let started = Instant::now();
            sweeper
                .sweep(map, |cookie, state| {
                    if let Ok(record) =
                        FlowRecord::from_state(FlowKind::Update, cookie, round, state)
                    {
                        records.push(record);
                    }
                })
                .expect("sweeping the flow map");
            out.clear();
            joiner.sweep(records.drain(..), std::iter::empty(), true, &mut out);
            sweeps.push(started.elapsed().as_secs_f64());
        }
        // The first sweep makes the joiner's entries; the later ones are the steady state.
        let mut steady = sweeps[1..].to_vec();
        steady.sort_by(f64::total_cmp);
        let sweep_s = steady[steady.len() / 2];
        println!(
            "{}",
            serde_json::json!({
                "flows": size,
                "egress_ns_per_packet": run.duration.as_nanos(),
                "sweep_ms": sweep_s * 1e3,
                "sweep_ns_per_flow": sweep_s * 1e9 / size as f64,
                "joiner_flows": joiner.tracked(),
            })
        );
    }
}
