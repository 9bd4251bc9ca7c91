//! The kernel packet path driven with `BPF_PROG_TEST_RUN` on synthetic IPv4 and
//! IPv6 frames: payload offsets, byte counts, exchange counting with TLS
//! handshake records skipped, and the first-bytes capture. Needs root.

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, RingBuf},
    programs::{CgroupSkb, TestRun, TestRunOptions},
};
use meshdrift::probe::{ProbeEvent, decode, ebpf_object};
use meshdrift_ebpf::{
    FlowAddrs, FlowState, PAYLOAD_CAPTURE_LEN, Role, SELFTEST_COOKIE, data_dir, flow_flags, names,
};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kernel self-tests load eBPF programs and need root: run `cargo xtask test` as root"
    );
    assert!(
        !ebpf_object().is_empty(),
        "meshdrift was built without its eBPF object (AYA_BUILD_SKIP); rebuild without it"
    );
}

struct Kernel {
    ebpf: Ebpf,
}

impl Kernel {
    fn load() -> Self {
        require_root();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::EVENTS, 1 << 16)
            .load(ebpf_object())
            .expect("loading the eBPF object");
        for name in [names::SELFTEST_EGRESS, names::SELFTEST_INGRESS] {
            let program: &mut CgroupSkb = ebpf.program_mut(name).unwrap().try_into().unwrap();
            program
                .load()
                .unwrap_or_else(|err| panic!("verifier refused {name}: {err:?}"));
        }
        Self { ebpf }
    }

    fn start_flow(&mut self, flow_role: Role) {
        let mut flows: HashMap<&mut MapData, u64, FlowState> =
            HashMap::try_from(self.ebpf.map_mut(names::FLOWS).unwrap()).unwrap();
        let state = FlowState {
            addrs: FlowAddrs {
                local_addr: [0; 16],
                remote_addr: [0; 16],
                local_port: 40000,
                remote_port: 8443,
                family: 4,
                role: flow_role as u8,
                _pad: [0; 2],
            },
            start_ns: 0,
            last_report_ns: u64::MAX / 2,
            cgroup_id: 0,
            bytes_sent: 0,
            bytes_received: 0,
            exchanges: 0,
            last_data: data_dir::NONE,
            flags: 0,
            _pad: [0; 2],
        };
        flows.insert(SELFTEST_COOKIE, state, 0).unwrap();
    }

    fn flow(&self) -> FlowState {
        let flows: HashMap<&MapData, u64, FlowState> =
            HashMap::try_from(self.ebpf.map(names::FLOWS).unwrap()).unwrap();
        flows.get(&SELFTEST_COOKIE, 0).unwrap()
    }

    fn send(&self, egress: bool, frame: &[u8]) {
        let name = if egress {
            names::SELFTEST_EGRESS
        } else {
            names::SELFTEST_INGRESS
        };
        let program: &CgroupSkb = self.ebpf.program(name).unwrap().try_into().unwrap();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            result.return_value, 1,
            "the program must always allow the packet"
        );
    }

    fn payload_records(&mut self) -> Vec<Vec<u8>> {
        let mut ring = RingBuf::try_from(self.ebpf.map_mut(names::EVENTS).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(record) = ring.next() {
            if let Ok(ProbeEvent::Payload(payload)) = decode(&record) {
                out.push(payload.bytes.to_vec());
            }
        }
        out
    }
}

const ETH_HEADER: [u8; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00];
const ETH_HEADER_V6: [u8; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x86, 0xdd];

fn tcp_header(options: usize) -> Vec<u8> {
    let len = 20 + options;
    let mut tcp = vec![0u8; len];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&8443u16.to_be_bytes());
    tcp[12] = ((len / 4) as u8) << 4;
    tcp[13] = 0x18; // PSH, ACK
    tcp
}

fn ipv4_frame(payload: &[u8], ip_options: usize, tcp_options: usize) -> Vec<u8> {
    let ihl = 20 + ip_options;
    let tcp = tcp_header(tcp_options);
    let total = ihl + tcp.len() + payload.len();
    let mut ip = vec![0u8; ihl];
    ip[0] = 0x40 | (ihl / 4) as u8;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 213, 0, 10]);
    ip[16..20].copy_from_slice(&[10, 213, 0, 11]);
    [&ETH_HEADER[..], &ip, &tcp, payload].concat()
}

fn ipv6_frame(payload: &[u8]) -> Vec<u8> {
    let tcp = tcp_header(12);
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((tcp.len() + payload.len()) as u16).to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8] = 0xfd;
    ip[23] = 1;
    ip[24] = 0xfd;
    ip[39] = 2;
    [&ETH_HEADER_V6[..], &ip, &tcp, payload].concat()
}

fn tls_record(content_type: u8, len: usize) -> Vec<u8> {
    let mut record = vec![content_type, 0x03, 0x03, (len >> 8) as u8, len as u8];
    record.extend((0..len).map(|i| (i % 251) as u8));
    record
}

#[test]
fn ipv4_tls_flow_counts_bytes_and_exchanges_and_captures_the_hello_prefix() {
    let mut kernel = Kernel::load();
    kernel.start_flow(Role::Client);
    let hello = tls_record(0x16, 700);
    kernel.send(true, &ipv4_frame(&hello, 0, 12));
    let state = kernel.flow();
    assert_eq!(state.bytes_sent, hello.len() as u64);
    assert_eq!(state.exchanges, 0, "a ClientHello is not a request");
    assert_ne!(state.flags & flow_flags::TLS, 0);
    let captured = kernel.payload_records();
    assert_eq!(captured, vec![hello[..PAYLOAD_CAPTURE_LEN].to_vec()]);

    // Server handshake, client Finished (handshake record), then the first request.
    kernel.send(false, &ipv4_frame(&tls_record(0x16, 90), 0, 12));
    kernel.send(true, &ipv4_frame(&tls_record(0x14, 1), 0, 12));
    assert_eq!(kernel.flow().exchanges, 0);
    kernel.send(true, &ipv4_frame(&tls_record(0x17, 120), 0, 12));
    assert_eq!(kernel.flow().exchanges, 1);
    // More request data without a response in between is the same exchange.
    kernel.send(true, &ipv4_frame(&tls_record(0x17, 40), 0, 12));
    assert_eq!(kernel.flow().exchanges, 1);
    kernel.send(false, &ipv4_frame(&tls_record(0x17, 300), 0, 12));
    kernel.send(true, &ipv4_frame(&tls_record(0x17, 120), 0, 12));
    let state = kernel.flow();
    assert_eq!(state.exchanges, 2);
    assert_eq!(state.bytes_received, (95 + 305) as u64);
    assert!(
        kernel.payload_records().is_empty(),
        "the first bytes are captured once per flow"
    );

    // Closing an idle connection: TLS 1.3's encrypted close_notify (a 19-byte
    // application-data record) and a TLS 1.2 alert record are not requests.
    kernel.send(false, &ipv4_frame(&tls_record(0x17, 300), 0, 12));
    kernel.send(true, &ipv4_frame(&tls_record(0x17, 19), 0, 12));
    kernel.send(true, &ipv4_frame(&tls_record(0x15, 26), 0, 12));
    assert_eq!(kernel.flow().exchanges, 2, "alerts are not requests");
    // A 19-byte record with more data behind it is a request.
    let mut request = tls_record(0x17, 19);
    request.extend(tls_record(0x17, 100));
    kernel.send(true, &ipv4_frame(&request, 0, 12));
    assert_eq!(kernel.flow().exchanges, 3);
}

#[test]
fn ipv4_options_and_short_payloads_are_parsed_exactly() {
    let mut kernel = Kernel::load();
    kernel.start_flow(Role::Client);
    // 127 = 64 + 32 + 16 + 8 + 4 + 2 + 1: one load of every size the capture uses.
    let mut request = b"GET /x HTTP/1.1\r\nHost: frontend\r\n".to_vec();
    request.resize(125, b'a');
    request.extend_from_slice(b"\r\n");
    assert_eq!(request.len(), 127);
    let request = request.as_slice();
    kernel.send(true, &ipv4_frame(request, 8, 0));
    let state = kernel.flow();
    assert_eq!(state.bytes_sent, request.len() as u64);
    assert_eq!(state.exchanges, 1, "plaintext data starts an exchange");
    assert_eq!(state.flags & flow_flags::TLS, 0);
    assert_eq!(kernel.payload_records(), vec![request.to_vec()]);
}

#[test]
fn pure_acks_and_non_tcp_packets_change_nothing() {
    let mut kernel = Kernel::load();
    kernel.start_flow(Role::Client);
    kernel.send(true, &ipv4_frame(&[], 0, 12));
    let mut udp = ipv4_frame(b"not tcp at all", 0, 0);
    udp[14 + 9] = 17;
    kernel.send(true, &udp);
    let state = kernel.flow();
    assert_eq!(
        (state.bytes_sent, state.exchanges, state.last_data),
        (0, 0, data_dir::NONE)
    );
    assert!(kernel.payload_records().is_empty());
}

#[test]
fn ipv6_server_side_sees_client_bytes_on_ingress() {
    let mut kernel = Kernel::load();
    kernel.start_flow(Role::Server);
    let request = b"POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    kernel.send(false, &ipv6_frame(request));
    let state = kernel.flow();
    assert_eq!(state.bytes_received, request.len() as u64);
    assert_eq!(state.exchanges, 1);
    assert_eq!(kernel.payload_records(), vec![request.to_vec()]);
    kernel.send(true, &ipv6_frame(b"HTTP/1.1 200 OK\r\n\r\n"));
    kernel.send(false, &ipv6_frame(request));
    assert_eq!(kernel.flow().exchanges, 2);
}
