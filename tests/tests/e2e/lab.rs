//! Privileged tests of the lab itself. They need root, network namespaces and
//! cgroup v2, and fail with a message saying so when those are missing: a
//! skipped lab test would hide a broken lab from every test built on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshdrift_lab::{
    Curl, CurlTls, Haproxy, Lab, Nginx, Pod, ProxyMode, Upstream, UpstreamTls, Wrk, cgroup2_root,
    cleanup_stale,
};

const HOST: &str = "frontend.default.svc.cluster.local";

fn require_privileges() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "the lab tests must run as root (uid is {uid}): they create network namespaces, a bridge and cgroups"
    );
    assert!(
        Path::new("/proc/self/ns/net").exists(),
        "the lab tests need network namespace support (/proc/self/ns/net is missing)"
    );
    if let Err(e) = cgroup2_root() {
        panic!("the lab tests need a mounted cgroup v2 hierarchy: {e}");
    }
}

fn lab(name: &str) -> Lab {
    require_privileges();
    Lab::new(name).unwrap_or_else(|e| panic!("creating lab {name}: {e}"))
}

fn pod(lab: &Lab, name: &str) -> Pod {
    lab.add_pod(name)
        .unwrap_or_else(|e| panic!("adding pod {name}: {e}"))
}

fn mtls(lab: &Lab, with_client_cert: bool) -> CurlTls {
    let ca = lab.ca().expect("lab CA");
    let client = with_client_cert.then(|| {
        let id = lab.client_identity("client").expect("client identity");
        (id.cert, id.key)
    });
    CurlTls {
        ca: Some(ca.cert),
        client,
    }
}

#[test]
fn nginx_serves_plaintext_and_mtls_over_ipv4_and_ipv6() {
    let lab = lab("serve");
    let client = pod(&lab, "client");
    let server = pod(&lab, "server");
    let _nginx = Nginx::builder("server-v1")
        .http(8080)
        .tls(8443)
        .verify_client(true)
        .start(&server)
        .expect("nginx starts");

    for v6 in [false, true] {
        let plain = Curl::new(&server.url("http", v6, 8080))
            .count(3)
            .run(&client)
            .expect("curl runs");
        assert!(plain.all(200), "plaintext v6={v6}: {plain:?}");
        assert_eq!(
            plain.body_counts(),
            BTreeMap::from([("server-v1".to_owned(), 3)])
        );
        assert_eq!(
            plain.connections(),
            1,
            "three requests over one kept-alive connection"
        );
        assert_eq!(plain.responses[0].remote, server.ip(v6).to_string());

        let secure = Curl::new(&server.url("https", v6, 8443))
            .count(2)
            .tls(mtls(&lab, true))
            .run(&client)
            .expect("curl runs");
        assert!(secure.all(200), "mTLS v6={v6}: {secure:?}");

        // nginx finishes the handshake, then answers 400 "No required SSL
        // certificate was sent": no request ever reaches the location.
        let refused = Curl::new(&server.url("https", v6, 8443))
            .tls(mtls(&lab, false))
            .run(&client)
            .expect("curl runs");
        assert_eq!(
            refused.count_status(200),
            0,
            "no client cert must not be served, v6={v6}: {refused:?}"
        );
        assert_eq!(refused.count_status(400), 1, "v6={v6}: {refused:?}");
    }
}

#[test]
fn haproxy_http_mode_splits_requests_by_weight_over_reused_tls_connections() {
    let lab = lab("http-split");
    let client = pod(&lab, "client");
    let v1 = pod(&lab, "frontend-v1");
    let v2 = pod(&lab, "frontend-v2");
    let n1 = Nginx::builder("v1")
        .tls(8443)
        .verify_client(true)
        .access_log(true)
        .start(&v1)
        .expect("nginx v1");
    let n2 = Nginx::builder("v2")
        .tls(8443)
        .verify_client(true)
        .access_log(true)
        .start(&v2)
        .expect("nginx v2");
    let proxy = Haproxy::builder(15001, ProxyMode::Http)
        .server(
            Upstream::new("v1", SocketAddr::new(v1.ip(false), 8443), 80)
                .tls(UpstreamTls::istio_http(80, "v1", HOST, "client")),
        )
        .server(
            Upstream::new("v2", SocketAddr::new(v2.ip(true), 8443), 20)
                .tls(UpstreamTls::istio_http(80, "v2", HOST, "client").tls13_only(true)),
        )
        .start(&client)
        .expect("haproxy starts");

    let report = Curl::new(&proxy.url(false))
        .count(500)
        .run(&client)
        .expect("curl runs");
    assert!(report.all(200), "{:?}", report.status_counts());
    assert_eq!(
        report.connections(),
        1,
        "the client keeps one connection to its proxy"
    );

    let stats = proxy.stats().expect("stats");
    let (s1, s2) = (
        stats.server("v1").expect("v1 row"),
        stats.server("v2").expect("v2 row"),
    );
    assert_eq!(s1.stot + s2.stot, 500, "{stats:?}");
    assert!(
        (390..=410).contains(&s1.stot),
        "v1 got {} of 500 requests (want ~400): {stats:?}",
        s1.stot
    );
    assert_eq!(s1.hrsp_2xx, s1.stot);
    // The bodies say who served each request: they must agree with HAProxy.
    let bodies = report.body_counts();
    assert_eq!(bodies.get("v1").copied().unwrap_or(0) as u64, s1.stot);
    assert_eq!(bodies.get("v2").copied().unwrap_or(0) as u64, s2.stot);
    // The servers saw the Istio-style SNI and the client's SPIFFE identity.
    let log1 = n1.access_log();
    assert_eq!(log1.len() as u64, s1.stot);
    assert!(
        log1.iter().all(
            |l| l.contains(&format!("sni=outbound_.80_.v1_.{HOST}")) && l.contains("CN=client")
        ),
        "{:?}",
        log1.first()
    );
    let log2 = n2.access_log();
    assert!(
        log2.iter()
            .all(|l| l.contains("TLSv1.3") && l.contains(&format!("sni=outbound_.80_.v2_.{HOST}"))),
        "{:?}",
        log2.first()
    );
    // nginx's view of the same connections: as many as HAProxy opened, and
    // their requests add up to HAProxy's count.
    let conns = n1.requests_by_connection().expect("access log parses");
    assert_eq!(conns.len() as u64, s1.connect, "{conns:?}");
    assert_eq!(conns.values().sum::<u64>(), s1.stot);
    assert!(
        conns.keys().all(|a| a.ip() == client.ip(false)),
        "{conns:?}"
    );
    // Keep-alive towards the servers: a handful of connections, the rest reuse.
    for s in [s1, s2] {
        assert!(
            s.connect >= 1 && s.connect <= 3,
            "{}: {} upstream connections",
            s.name,
            s.connect
        );
        assert!(s.reuse + s.connect >= s.stot, "{s:?}");
    }
}

#[test]
fn haproxy_tcp_mode_balances_connections() {
    let lab = lab("tcp-split");
    let client = pod(&lab, "client");
    let a = pod(&lab, "backend-a");
    let b = pod(&lab, "backend-b");
    let _na = Nginx::builder("a").http(8080).start(&a).expect("nginx a");
    let _nb = Nginx::builder("b").http(8080).start(&b).expect("nginx b");
    let proxy = Haproxy::builder(9000, ProxyMode::Tcp)
        .server(Upstream::new("a", SocketAddr::new(a.ip(false), 8080), 3))
        .server(Upstream::new("b", SocketAddr::new(b.ip(false), 8080), 1))
        .start(&client)
        .expect("haproxy starts");

    let report = Curl::new(&proxy.url(true))
        .count(40)
        .new_connection_per_request(true)
        .run(&client)
        .expect("curl runs");
    assert!(report.all(200), "{:?}", report.status_counts());
    assert_eq!(
        report.connections(),
        40,
        "Connection: close opens one connection per request"
    );

    let stats = proxy.stats().expect("stats");
    let (sa, sb) = (
        stats.server("a").expect("a row"),
        stats.server("b").expect("b row"),
    );
    assert_eq!((sa.stot, sb.stot), (30, 10), "{stats:?}");
    assert_eq!(
        (sa.connect, sb.connect),
        (30, 10),
        "one upstream connection per client connection"
    );
    let bodies = report.body_counts();
    assert_eq!((bodies.get("a"), bodies.get("b")), (Some(&30), Some(&10)));
}

#[test]
fn processes_run_in_the_pod_netns_and_cgroup() {
    let lab = lab("placement");
    let p = pod(&lab, "probe");
    assert!(lab.add_pod("probe").is_err(), "duplicate pod name");
    assert!(lab.add_pod("Not A Name").is_err(), "invalid pod name");
    let fixed = lab.add_pod_at("fixed", 199).expect("explicit host number");
    assert_eq!(fixed.ipv4().octets()[3], 199);
    assert_eq!(
        fixed.ipv6().segments()[7],
        0x199,
        "fd00:213:<id>::199 mirrors .199"
    );
    assert!(lab.add_pod_at("clash", 199).is_err(), "host number taken");
    assert!(
        lab.add_pod_at("svc", 200).is_err(),
        "cluster IPs are not pods'"
    );
    assert!(lab.add_pod_at("gw", 1).is_err(), ".1 is the node's");
    assert!(lab.add_pod("node").is_err(), "the node's namespace name");
    assert_eq!(lab.pods().len(), 2);
    assert!(p.cgroup_path().starts_with(lab.cgroup_path()));
    let ino = std::fs::metadata(p.cgroup_path())
        .map(|m| m.ino())
        .expect("stat");
    assert_eq!(p.cgroup_id(), ino);

    let out = p.exec(&["cat", "/proc/self/cgroup"]).expect("cat runs");
    let root = cgroup2_root().expect("cgroup2");
    let rel = p.cgroup_path().strip_prefix(&root).expect("under root");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == format!("0::/{}", rel.display())),
        "want cgroup /{}: {}",
        rel.display(),
        out.stdout
    );

    let addrs = p
        .exec(&["ip", "-o", "addr", "show", "dev", "eth0"])
        .expect("ip runs")
        .stdout;
    // Routed like Calico: the address alone, everything through the node.
    assert!(addrs.contains(&format!("{}/32", p.ipv4())), "{addrs}");
    assert!(addrs.contains(&format!("{}/128", p.ipv6())), "{addrs}");
    let routes = p
        .exec(&["ip", "route", "show", "default"])
        .expect("ip runs")
        .stdout;
    assert!(routes.contains("via 169.254.1.1 dev eth0"), "{routes}");
    assert!(
        !addrs.contains("tentative"),
        "IPv6 must be usable at once: {addrs}"
    );

    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
    let out = p.run(cmd, Duration::from_secs(5)).expect("runs");
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.status.code()),
        ("out\n", "err\n", Some(3))
    );
    let err = p.exec(&["false"]).expect_err("non-zero exit is an error");
    assert!(err.to_string().contains("false"), "{err}");
}

#[test]
fn long_held_connection_carries_spaced_requests() {
    let lab = lab("held");
    let client = pod(&lab, "client");
    let server = pod(&lab, "server");
    let _nginx = Nginx::builder("held")
        .http(8080)
        .start(&server)
        .expect("nginx");
    let started = std::time::Instant::now();
    let report = Curl::new(&server.url("http", false, 8080))
        .count(3)
        .interval(Duration::from_secs(1))
        .run(&client)
        .expect("curl runs");
    assert!(report.all(200), "{report:?}");
    assert_eq!(
        report.connections(),
        1,
        "one connection held across the pauses"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "requests were spaced: {:?}",
        started.elapsed()
    );
}

#[test]
fn wrk_reports_rate_and_latency() {
    let lab = lab("wrk");
    let client = pod(&lab, "client");
    let server = pod(&lab, "server");
    let _nginx = Nginx::builder("bench")
        .http(8080)
        .bulk(1 << 20)
        .start(&server)
        .expect("nginx");
    let report = Wrk::new(&server.url("http", false, 8080))
        .connections(2)
        .duration(Duration::from_secs(1))
        .run(&client)
        .expect("wrk runs");
    assert!(
        report.requests > 100 && report.requests_per_sec > 100.0,
        "{report:?}"
    );
    assert!(
        report.latency_p99 > Duration::ZERO && report.latency_p99 >= report.latency_p50,
        "{report:?}"
    );
    assert_eq!(
        (report.non_2xx_3xx, report.socket_errors),
        (0, 0),
        "{report:?}"
    );

    let short = Wrk::new(&server.url("http", true, 8080))
        .new_connection_per_request(true)
        .duration(Duration::from_secs(1))
        .run(&client)
        .expect("wrk runs");
    assert!(short.requests > 50 && short.non_2xx_3xx == 0, "{short:?}");

    let bulk = format!("{}bulk", server.url("http", false, 8080));
    let size = client
        .exec(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &bulk,
        ])
        .expect("curl");
    assert_eq!(size.stdout, (1u64 << 20).to_string());
}

/// What a lab created, identified so that a test can tell "removed" from
/// "removed and recreated under the same name by another lab": labs running
/// in parallel may take a freed id at once. Links and cgroups are named by
/// their kernfs inode (never reused); namespaces and directories by a marker
/// the test leaves in them.
struct Remains {
    inodes: Vec<(std::path::PathBuf, u64)>,
    netns: Vec<String>,
    marker: String,
    dir_marker: Option<std::path::PathBuf>,
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn lo_alias(netns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "link", "show", "dev", "lo"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Remains {
    fn record(links: &[&str], cgroup: &Path, netns: &[&str], dir: Option<&Path>) -> Remains {
        let mut inodes = Vec::new();
        for path in links
            .iter()
            .map(|l| Path::new("/sys/class/net").join(l))
            .chain([cgroup.to_path_buf()])
        {
            let ino = inode(&path).unwrap_or_else(|| panic!("{} does not exist", path.display()));
            inodes.push((path, ino));
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let marker = format!(
            "meshdrift-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        for ns in netns {
            let out = Command::new("ip")
                .args(["-n", ns, "link", "set", "dev", "lo", "alias", &marker])
                .output()
                .expect("ip");
            assert!(
                out.status.success(),
                "marking netns {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dir_marker = dir.map(|d| {
            let m = d.join(&marker);
            std::fs::write(&m, "").expect("marker file");
            m
        });
        Remains {
            inodes,
            netns: netns.iter().map(|n| n.to_string()).collect(),
            marker,
            dir_marker,
        }
    }

    fn assert_gone(&self) {
        for (path, ino) in &self.inodes {
            assert_ne!(inode(path), Some(*ino), "{} left behind", path.display());
        }
        for ns in &self.netns {
            assert!(
                !lo_alias(ns).contains(&self.marker),
                "netns {ns} left behind"
            );
        }
        if let Some(m) = &self.dir_marker {
            assert!(
                !m.exists(),
                "work dir {} left behind",
                m.parent().map_or(m.as_path(), |p| p).display()
            );
        }
    }
}

#[test]
fn teardown_leaves_nothing_behind() {
    let lab = lab("teardown");
    let bridge = lab.bridge().to_owned();
    let node = lab.node_netns();
    let cgroup = lab.cgroup_path().to_owned();
    let dir = lab.dir().to_owned();
    let p = pod(&lab, "server");
    let netns = p.netns().to_owned();
    let mut nginx = Nginx::builder("gone").http(8080).start(&p).expect("nginx");
    let pid = nginx.process().pid();
    // A process the lab handle does not track: teardown must still kill it.
    let orphan = p.spawn({
        let mut c = Command::new("sh");
        c.args(["-c", "sleep 300 & echo $!; wait"]);
        c
    });
    let orphan = orphan.expect("sh runs");
    std::thread::sleep(Duration::from_millis(100));
    let sleeper: u32 = orphan.stdout().trim().parse().expect("sleep pid");
    std::mem::forget(orphan);

    let remains = Remains::record(&[&bridge], &cgroup, &[&netns, &node], Some(&dir));
    lab.teardown().expect("teardown succeeds");
    remains.assert_gone();
    for pid in [pid, sleeper] {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Only a zombie (reaped by its parent later) may remain.
        assert!(
            state.is_empty() || state.contains(") Z"),
            "process {pid} still runs: {state}"
        );
    }
    drop(nginx);
}

#[test]
fn labs_side_by_side_get_their_own_ids_and_subnets() {
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| s.spawn(move || lab(&format!("side-{i}"))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut ids: Vec<u8> = labs.iter().map(Lab::id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct ids: {ids:?}");
    let subnets: Vec<String> = labs.iter().map(Lab::ipv4_subnet).collect();
    assert!(
        subnets.iter().all(|s| s.starts_with("10.213.")),
        "{subnets:?}"
    );
}

#[test]
fn leftovers_of_a_dead_owner_are_swept() {
    require_privileges();
    // Fabricate the remains of a crashed lab: a bridge owned by a process
    // that no longer exists, a namespace and a cgroup. Ids are taken from the
    // top, where real labs (allocated from 1) do not go; creating the bridge
    // claims the id even against a copy of this test in another process.
    let id = (200..=250u8)
        .rev()
        .find(|id| {
            Command::new("ip")
                .args([
                    "link",
                    "add",
                    "name",
                    &format!("mdl{id}br"),
                    "type",
                    "bridge",
                ])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("a free lab id between 200 and 250");
    let bridge = format!("mdl{id}br");
    let netns = format!("mdl{id}-ghost");
    let cgroup = cgroup2_root()
        .expect("cgroup2")
        .join(format!("meshdrift-lab-{id}"));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&[
        "link",
        "set",
        "dev",
        &bridge,
        "alias",
        "meshdrift-lab pid=4000000 start=1",
    ]);
    ip(&["netns", "add", &netns]);
    std::fs::create_dir_all(cgroup.join("ghost")).expect("cgroup");
    let remains = Remains::record(&[&bridge], &cgroup, &[&netns], None);

    // Another test process may sweep them first; either way they must go.
    let report = cleanup_stale().expect("sweep");
    eprintln!("{report:?}");
    remains.assert_gone();
}

const SIGNAL_CHILD_ENV: &str = "MESHDRIFT_LAB_SIGNAL_CHILD";

/// Not a test by itself: the child process of
/// `sigterm_tears_down_the_labs_of_the_process` (returns at once otherwise).
#[test]
fn signal_child() {
    if std::env::var_os(SIGNAL_CHILD_ENV).is_none() {
        return;
    }
    let lab = lab("signal-child");
    let p = pod(&lab, "server");
    let _nginx = Nginx::builder("sig").http(8080).start(&p).expect("nginx");
    meshdrift_lab::install_signal_cleanup().expect("signal hook");
    println!(
        "LAB {} {} {}",
        lab.bridge(),
        p.netns(),
        lab.cgroup_path().display()
    );
    std::thread::sleep(Duration::from_secs(30));
    panic!("no signal arrived within 30 s");
}

#[test]
fn sigterm_tears_down_the_labs_of_the_process() {
    use std::io::BufRead;
    require_privileges();
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "lab::signal_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(SIGNAL_CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("re-running the test binary");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // The harness prints "test signal_child ... " on the same line.
            if let Some(at) = line.find("LAB ") {
                let _ = tx.send(line[at + 4..].to_owned());
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            panic!("child lab did not come up: {e}");
        }
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let (bridge, netns, cgroup) = (parts[0], parts[1], Path::new(parts[2]));
    let remains = Remains::record(&[bridge], cgroup, &[netns], None);

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM to the child");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(128 + nix::sys::signal::Signal::SIGTERM as i32),
        "{status}"
    );
    remains.assert_gone();
}
