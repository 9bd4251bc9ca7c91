//! The agent as it runs in a cluster, at 150 000 pods: the release
//! `meshdrift run` watching the stand-in Kubernetes API server
//! (`meshdrift_testkit::apiserver`, the real list/watch protocol) that serves
//! the synthetic benchmark mesh (`SyntheticMesh::BENCHMARK`: 150 000 pods,
//! 20 000 Services, VirtualServices and DestinationRules, 200
//! PeerAuthentications).
//!
//! The agent finds the server through a kubeconfig, as it would outside a
//! cluster. Its eBPF programs attach to an empty cgroup made for the run
//! (`--cgroup`), so the measurement leaves the machine's other traffic alone
//! while the agent does all it does in a cluster.
//!
//! Printed (`BENCH {json}` lines): the time to readiness (`/readyz`), the
//! peak (`VmHWM`) and steady (`VmRSS`) resident memory once the inventory is
//! loaded, and the CPU one pod change costs: a pod added (then deleted)
//! through the watch, measured from the kernel's per-thread run times
//! (`/proc/PID/task/*/schedstat`, nanoseconds) over a window after the
//! change, less the same window without a change; the median of several.
//! Needs root (the eBPF programs); without it, it says so and prints nothing.

// The benchmark links the library's dependencies; it names only some.
#![allow(unused_crate_dependencies)]
// A panic is a benchmark's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshdrift_testkit::SyntheticMesh;
use meshdrift_testkit::apiserver::{ApiServer, CORE, ISTIO, PODS};
use serde_json::{Value, json};

#[path = "kube_agent/real.rs"]
mod real;

/// How long the agent is given to list 150 000 pods and become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// CPU is read over this long after a change (and without one).
const WINDOW: Duration = Duration::from_millis(1500);
/// Pod changes measured (each an add, then its delete).
const CHANGES: usize = 5;

fn report(what: &str, value: String) {
    println!(
        "BENCH {}",
        serde_json::json!({ "what": what, "value": value })
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `VmHWM` or `VmRSS` from `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// CPU time of every thread of the process, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// utime + stime from `/proc/PID/stat`, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at the state.
    let rest = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// The agent's count of pods, from its report.
fn reported_pods(base: &str) -> Option<u64> {
    let (_, body) = get(&format!("{base}/report"))?;
    let report: Value = serde_json::from_str(&body).ok()?;
    report["agent"]["inventory"]["Pod"].as_u64()
}

/// A cgroup of its own under the v2 root, removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn create() -> Cgroup {
        let root = meshdrift_host::cgroup2_root().expect("cgroup v2 is mounted");
        let dir = root.join(format!("meshdrift-bench-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create a cgroup (needs root)");
        Cgroup(dir)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The agent process, stopped with SIGTERM (it detaches its programs) on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the child's pid, which we own and have not reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn extra_pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-extra-{i}"), "namespace": "ns-7",
            "labels": {"app": "svc-700", "version": "v1",
                       "security.istio.io/tlsMode": "istio"}},
        "spec": {"containers": [{"name": "app",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": format!("10.250.0.{}", i + 1)}
    })
}

/// CPU over one window without a change, then over one after `change`:
/// the difference, in nanoseconds.
fn change_cost(pid: u32, change: impl FnOnce()) -> i64 {
    let idle_start = cpu_ns(pid);
    std::thread::sleep(WINDOW);
    let change_start = cpu_ns(pid);
    change();
    std::thread::sleep(WINDOW);
    let end = cpu_ns(pid);
    (end - change_start) as i64 - (change_start - idle_start) as i64
}

fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Where the agent lists and watches the mesh.
#[derive(Clone, Copy)]
enum Source {
    /// testkit's stand-in API server, in this process.
    StandIn,
    /// kube-apiserver and etcd built from their modules (`cargo xtask cluster up`).
    KubeApiserver,
}

impl Source {
    /// How the printed lines name the source; the stand-in's wording is
    /// what `cargo xtask bench` reads its budgets from.
    fn via(self) -> &'static str {
        match self {
            Source::StandIn => "the Kubernetes API",
            Source::KubeApiserver => "kube-apiserver (real control plane)",
        }
    }
}

/// A pod change the measurement makes: add extra pod `i`, or delete it.
enum Change {
    Add(usize),
    Delete(usize),
}

/// An admin kubeconfig of a cluster made by `cargo xtask cluster up`: the
/// mesh is loaded into it and the agent measured against kube-apiserver too.
const REAL_CLUSTER_ENV: &str = "MESHDRIFT_BENCH_KUBECONFIG";

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("kube_agent: needs root (the agent attaches eBPF programs); skipped");
        return;
    }
    let mesh = SyntheticMesh::BENCHMARK;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collections: Vec<&str> = CORE.iter().chain(ISTIO.iter()).copied().collect();
    let server = runtime.block_on(ApiServer::start(&collections));
    for n in 0..mesh.namespaces {
        server.preload(mesh.namespace_json(n));
    }
    let dir = std::env::temp_dir().join(format!("meshdrift-kube-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    measure(Source::StandIn, &kubeconfig, &mesh, |change| match change {
        Change::Add(i) => server.apply(extra_pod(i)),
        Change::Delete(i) => server.delete(PODS, "ns-7", &format!("bench-extra-{i}")),
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let Some(kubeconfig) = std::env::var_os(REAL_CLUSTER_ENV) else {
        eprintln!(
            "kube_agent: {REAL_CLUSTER_ENV} is not set: no measurement against kube-apiserver (`cargo xtask bench` starts a cluster and sets it)"
        );
        return;
    };
    let kubeconfig = PathBuf::from(kubeconfig);
    let cluster = runtime
        .block_on(real::Cluster::connect(&kubeconfig))
        .expect("connecting to the cluster");
    let written = runtime
        .block_on(cluster.load(&mesh))
        .expect("loading the mesh into kube-apiserver");
    if let Some(took) = written {
        report(
            "150 k pods, 20 k Services, VirtualServices and DestinationRules written through kube-apiserver in",
            format!("{took:.0?}"),
        );
    }
    // Let the controllers' work on what was written (EndpointSlices) settle.
    std::thread::sleep(Duration::from_secs(10));
    let rss = |name| {
        real::process_id(name).map_or_else(|| "?".to_owned(), |pid| mib(status_kib(pid, "VmRSS")))
    };
    report(
        "kube-apiserver and etcd RSS holding 150 k pods",
        format!("{}, {}", rss("kube-apiserver"), rss("etcd")),
    );
    measure(Source::KubeApiserver, &kubeconfig, &mesh, |change| {
        let done = match change {
            Change::Add(i) => {
                let mut pod = extra_pod(i);
                pod["status"]["podIP"] = json!(format!("10.250.0.{}", i + 1));
                runtime.block_on(cluster.run_pod(pod))
            }
            Change::Delete(i) => {
                runtime.block_on(cluster.delete_pod("ns-7", &format!("bench-extra-{i}")))
            }
        };
        done.expect("a pod change through kube-apiserver");
    });
}

/// Starts the agent on `kubeconfig`, reports its time to readiness, its
/// memory and the CPU of pod changes made by `change`.
fn measure(
    source: Source,
    kubeconfig: &Path,
    mesh: &SyntheticMesh,
    mut change: impl FnMut(Change),
) {
    let via = source.via();
    let cgroup = Cgroup::create();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let started = Instant::now();
    let agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_meshdrift"))
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--node-name", "bench", "--cgroup"])
            .arg(&cgroup.0)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start meshdrift run"),
    );
    let pid = agent.0.id();
    wait_ready(&base, started);
    let ready_after = started.elapsed();
    // Let the first report and any work the load started settle.
    std::thread::sleep(Duration::from_secs(3));
    let peak = status_kib(pid, "VmHWM");
    let steady = status_kib(pid, "VmRSS");
    let pods = reported_pods(&base).expect("the agent's report");
    assert_eq!(pods, mesh.pods as u64, "every pod reached the agent");
    report(
        &format!("agent at 150 k pods via {via}: ready after"),
        format!("{ready_after:.1?}"),
    );
    report(
        &format!("agent RSS at 150 k pods via {via} (peak, steady)"),
        format!("{}, {}", mib(peak), mib(steady)),
    );

    let ticks_before = cpu_ticks(pid);
    let mut added = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..CHANGES {
        added.push(change_cost(pid, || change(Change::Add(i))));
        deleted.push(change_cost(pid, || change(Change::Delete(i))));
    }
    let ticks = cpu_ticks(pid) - ticks_before;
    wait_for_pods(&base, mesh.pods as u64);
    report(
        &format!("agent CPU for one pod change at 150 k pods via {via} (added, deleted)"),
        format!(
            "{:.2} ms, {:.2} ms (median of {CHANGES}; utime+stime over all {} windows: {} ticks)",
            median(&mut added) as f64 / 1e6,
            median(&mut deleted) as f64 / 1e6,
            4 * CHANGES,
            ticks
        ),
    );
    report(
        &match source {
            Source::StandIn => "agent RSS after the pod changes".to_owned(),
            Source::KubeApiserver => format!("agent RSS after the pod changes via {via}"),
        },
        format!(
            "{} (peak {})",
            mib(status_kib(pid, "VmRSS")),
            mib(status_kib(pid, "VmHWM"))
        ),
    );
    drop(agent);
    drop(cgroup);
}

/// The extra pods came and went: the agent's count is the mesh's again
/// (a watch delivers the last delete a moment after it was made).
fn wait_for_pods(base: &str, pods: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = reported_pods(base).expect("the agent's report");
        if now == pods {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent holds {now} pods, not {pods}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_ready(base: &str, started: Instant) {
    let url = format!("{base}/readyz");
    while started.elapsed() < READY_TIMEOUT {
        if let Some((200, _)) = get(&url) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the agent was not ready within {READY_TIMEOUT:?}");
}
