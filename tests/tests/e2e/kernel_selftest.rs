//! The kernel packet path driven with `BPF_PROG_TEST_RUN` on synthetic IPv4 and
//! IPv6 frames: payload offsets, byte counts, request turns with TLS control
//! records skipped, TLS record counting across packet boundaries, the
//! first-bytes capture, and no lost counts when both CPUs drive one flow at
//! once. Needs root.

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, RingBuf},
    programs::{CgroupSkb, TestRun, TestRunOptions},
};
use meshdrift::probe::{ProbeEvent, decode, ebpf_object};
use meshdrift_ebpf::{
    FlowAddrs, FlowState, PAYLOAD_CAPTURE_LEN, Role, SELFTEST_COOKIE,
    direction::{FROM_CLIENT, FROM_SERVER},
    flow_flags, names,
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
    /// The next TCP sequence number of each direction (egress, ingress).
    next_seq: std::sync::Mutex<[u32; 2]>,
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
        Self {
            ebpf,
            next_seq: std::sync::Mutex::new([1_000, 9_000]),
        }
    }

    fn start_flow(&mut self, flow_role: Role) {
        let mut flows: HashMap<&mut MapData, u64, FlowState> =
            HashMap::try_from(self.ebpf.map_mut(names::FLOWS).unwrap()).unwrap();
        let addrs = FlowAddrs {
            local_addr: [0; 4],
            remote_addr: [0; 4],
            local_port: 40000,
            remote_port: 8443,
            family: 4,
            role: flow_role as u8,
            _pad: [0; 2],
        };
        let state = FlowState::new(addrs, 0, 0);
        flows.insert(SELFTEST_COOKIE, state, 0).unwrap();
    }

    fn flow(&self) -> FlowState {
        let flows: HashMap<&MapData, u64, FlowState> =
            HashMap::try_from(self.ebpf.map(names::FLOWS).unwrap()).unwrap();
        flows.get(&SELFTEST_COOKIE, 0).unwrap()
    }

    /// Sends `frame` as the next segment of its direction: its sequence
    /// number follows the previous segment's.
    fn send(&self, egress: bool, frame: &[u8]) {
        let direction = usize::from(!egress);
        let frame = {
            let mut seqs = self.next_seq.lock().unwrap();
            let (frame, payload_len) = with_seq(frame, seqs[direction]);
            seqs[direction] = seqs[direction].wrapping_add(payload_len);
            frame
        };
        self.send_repeated(egress, &frame, 1);
    }

    /// Sends `frame` again with the sequence number it went with: a
    /// retransmission.
    fn resend(&self, egress: bool, frame: &[u8]) {
        let seqs = *self.next_seq.lock().unwrap();
        let direction = usize::from(!egress);
        let (_, payload_len) = with_seq(frame, 0);
        let (frame, _) = with_seq(frame, seqs[direction].wrapping_sub(payload_len));
        self.send_repeated(egress, &frame, 1);
    }

    /// Runs the program `repeat` times on `frame`, on the calling thread's CPU.
    fn send_repeated(&self, egress: bool, frame: &[u8], repeat: u32) {
        let name = if egress {
            names::SELFTEST_EGRESS
        } else {
            names::SELFTEST_INGRESS
        };
        let program: &CgroupSkb = self.ebpf.program(name).unwrap().try_into().unwrap();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
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

/// `frame` with its TCP sequence number set to `seq`, and its payload length.
fn with_seq(frame: &[u8], seq: u32) -> (Vec<u8>, u32) {
    let mut frame = frame.to_vec();
    let ip = 14;
    let (tcp, ip_len) = if frame[ip] >> 4 == 4 {
        (
            ip + usize::from(frame[ip] & 0x0f) * 4,
            usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]])),
        )
    } else {
        (
            ip + 40,
            40 + usize::from(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]])),
        )
    };
    frame[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    let payload = ip + ip_len - (tcp + usize::from(frame[tcp + 12] >> 4) * 4);
    (frame, payload as u32)
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

fn tls_records(sizes: &[(u8, usize)]) -> Vec<u8> {
    sizes
        .iter()
        .flat_map(|&(content_type, len)| tls_record(content_type, len))
        .collect()
}

#[test]
fn ipv4_tls_flow_counts_bytes_turns_and_records_and_captures_the_hello_prefix() {
    let mut kernel = Kernel::load();
    kernel.start_flow(Role::Client);
    let hello = tls_record(0x16, 700);
    kernel.send(true, &ipv4_frame(&hello, 0, 12));
    let state = kernel.flow();
    assert_eq!(state.bytes[FROM_CLIENT], hello.len() as u64);
    assert_eq!(state.pushes[FROM_CLIENT], 1);
    assert_eq!(state.requests, 0, "a ClientHello is not a request");
    assert_ne!(state.flags & flow_flags::TLS, 0);
    let captured = kernel.payload_records();
    assert_eq!(captured, vec![hello[..PAYLOAD_CAPTURE_LEN].to_vec()]);

    // Server handshake, client CCS + Finished, then the first request.
    kernel.send(false, &ipv4_frame(&tls_record(0x16, 90), 0, 12));
    kernel.send(
        true,
        &ipv4_frame(&tls_records(&[(0x14, 1), (0x17, 53)]), 0, 12),
    );
    let state = kernel.flow();
    assert_eq!(state.requests, 0);
    assert_eq!(state.client_records, 0, "the Finished travels behind a CCS");
    kernel.send(true, &ipv4_frame(&tls_record(0x17, 120), 0, 12));
    assert_eq!(kernel.flow().requests, 1);
    // More request data without a response in between is the same turn,
    // but its own record.
    kernel.send(true, &ipv4_frame(&tls_record(0x17, 40), 0, 12));
    assert_eq!(kernel.flow().requests, 1);
    kernel.send(false, &ipv4_frame(&tls_record(0x17, 300), 0, 12));
    kernel.send(true, &ipv4_frame(&tls_record(0x17, 120), 0, 12));
    let state = kernel.flow();
    assert_eq!(state.requests, 2);
    assert_eq!(state.client_records, 3);
    assert_eq!(state.bytes[FROM_SERVER], (95 + 305) as u64);
    assert!(
        kernel.payload_records().is_empty(),
        "the first bytes are captured once per flow"
    );

    // Closing an idle connection: TLS 1.3's encrypted close_notify (a 19-byte
    // application-data record) and a TLS 1.2 alert record are not requests.
    kernel.send(false, &ipv4_frame(&tls_record(0x17, 300), 0, 12));
    kernel.send(true, &ipv4_frame(&tls_record(0x17, 19), 0, 12));
    kernel.send(true, &ipv4_frame(&tls_record(0x15, 26), 0, 12));
    let state = kernel.flow();
    assert_eq!(state.requests, 2, "alerts are not requests");
    assert_eq!(state.client_records, 3, "nor records of requests");
    // A 19-byte record with more data behind it is a request.
    kernel.send(
        true,
        &ipv4_frame(&tls_records(&[(0x17, 19), (0x17, 100)]), 0, 12),
    );
    let state = kernel.flow();
    assert_eq!(state.requests, 3);
    assert_eq!(state.client_records, 5);
}

#[test]
fn records_are_counted_across_packet_boundaries() {
    let mut kernel = Kernel::load();
    kernel.start_flow(Role::Client);
    kernel.send(true, &ipv4_frame(&tls_record(0x16, 200), 0, 0));
    kernel.send(false, &ipv4_frame(&tls_record(0x16, 90), 0, 0));
    // Three records (one of 3000 bytes) and the first 3 bytes of a fourth's
    // header, cut over three packets; then the rest of that header and record.
    let stream = tls_records(&[(0x17, 100), (0x17, 3000), (0x17, 50), (0x17, 80)]);
    let cut = 105 + 3005 + 55 + 3;
    let (first, rest) = stream.split_at(1400);
    let (second, third) = rest.split_at(cut - 1400 - 20);
    let (third, fourth) = third.split_at(20);
    for (i, chunk) in [first, second, third, fourth].into_iter().enumerate() {
        kernel.send(true, &ipv4_frame(chunk, 0, 0));
        if i == 1 {
            // A retransmission of the segment just sent is not walked again.
            kernel.resend(true, &ipv4_frame(chunk, 0, 0));
        }
    }
    let state = kernel.flow();
    assert_eq!(state.client_records, 4, "{state:?}");
    assert_eq!(state.record_left, 0);
    assert_eq!(state.record_partial, 0);
    assert_eq!(state.flags & flow_flags::RECORDS_LOST, 0);
    assert_eq!(
        state.bytes[FROM_CLIENT],
        205 + stream.len() as u64 + second.len() as u64,
        "bytes on the wire include the retransmission"
    );
}

#[test]
fn a_packet_of_more_records_than_the_parser_walks_marks_them_lost() {
    let mut kernel = Kernel::load();
    kernel.start_flow(Role::Client);
    kernel.send(true, &ipv4_frame(&tls_record(0x16, 200), 0, 0));
    // Beyond the 256 units the walker follows in one packet.
    let many: Vec<(u8, usize)> = (0..260).map(|_| (0x17, 4)).collect();
    kernel.send(true, &ipv4_frame(&tls_records(&many), 0, 0));
    let state = kernel.flow();
    assert_ne!(state.flags & flow_flags::RECORDS_LOST, 0);
    assert_eq!(state.bytes[FROM_CLIENT], 205 + 260 * 9);
}

/// Both directions of one flow driven from both CPUs at once, and the same
/// direction from both CPUs: every byte and burst is counted, and a turn is
/// counted once however many CPUs see it.
#[test]
fn concurrent_runs_on_both_cpus_lose_no_counts() {
    const REPEAT: u32 = 1_000_000;
    let mut kernel = Kernel::load();
    kernel.start_flow(Role::Client);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
    let run_on = |cpu: usize, egress: bool, frame: &[u8], kernel: &Kernel| {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).expect("cpu index");
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .expect("pinning the thread to one CPU");
        kernel.send_repeated(egress, frame, REPEAT);
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        cpus >= 2,
        "the concurrency self-test needs two CPUs, this machine has {cpus}"
    );
    let client_frame = ipv4_frame(&request, 0, 0);
    let server_frame = ipv4_frame(&response, 0, 0);
    // Opposite directions at once.
    std::thread::scope(|scope| {
        scope.spawn(|| run_on(0, true, &client_frame, &kernel));
        scope.spawn(|| run_on(1, false, &server_frame, &kernel));
    });
    let state = kernel.flow();
    let repeat = u64::from(REPEAT);
    assert_eq!(state.bytes[FROM_CLIENT], repeat * request.len() as u64);
    assert_eq!(state.bytes[FROM_SERVER], repeat * response.len() as u64);
    assert_eq!(state.pushes, [repeat, repeat]);
    assert!(
        (1..=repeat).contains(&state.requests),
        "turns are at most the client packets: {}",
        state.requests
    );
    let turns_before = state.requests;
    // The same direction from both CPUs, with no server data in between:
    // twice the bytes, and not one new turn.
    std::thread::scope(|scope| {
        scope.spawn(|| run_on(0, true, &client_frame, &kernel));
        scope.spawn(|| run_on(1, true, &client_frame, &kernel));
    });
    let state = kernel.flow();
    assert_eq!(state.bytes[FROM_CLIENT], 3 * repeat * request.len() as u64);
    assert_eq!(state.pushes[FROM_CLIENT], 3 * repeat);
    assert!(
        state.requests <= turns_before + 1,
        "client data with no server data between is one turn at most: {} after {turns_before}",
        state.requests
    );
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
    assert_eq!(state.bytes[FROM_CLIENT], request.len() as u64);
    assert_eq!(state.requests, 1, "plaintext data starts a turn");
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
        (state.bytes, state.pushes, state.requests),
        ([0, 0], [0, 0], 0)
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
    assert_eq!(state.bytes[FROM_CLIENT], request.len() as u64);
    assert_eq!(state.requests, 1);
    assert_eq!(kernel.payload_records(), vec![request.to_vec()]);
    kernel.send(true, &ipv6_frame(b"HTTP/1.1 200 OK\r\n\r\n"));
    kernel.send(false, &ipv6_frame(request));
    assert_eq!(kernel.flow().requests, 2);
}
