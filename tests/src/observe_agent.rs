//! `meshdrift observe` run as a child process, and the JSON lines it prints.

use std::time::Duration;

use meshdrift_lab::{AgentProcess, meshdrift_bin};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A running `meshdrift observe --output json`.
pub struct Agent {
    process: AgentProcess,
}

/// What the agent printed: flow records and its closing summary.
#[derive(Debug)]
pub struct Observed {
    pub flows: Vec<Value>,
    pub summary: Value,
    pub stderr: Vec<String>,
}

impl Agent {
    pub fn observe(extra_args: &[&str]) -> Agent {
        let mut args = vec!["observe", "--output", "json"];
        args.extend_from_slice(extra_args);
        let process = AgentProcess::start(
            &meshdrift_bin(),
            &args,
            "observing TCP flows",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|err| panic!("meshdrift observe did not start: {err}"));
        Agent { process }
    }

    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal);
    }

    /// SIGINT, then everything it printed.
    pub fn stop(self) -> Observed {
        let output = self
            .process
            .stop(Duration::from_secs(30))
            .expect("meshdrift exits on SIGINT");
        assert!(
            output.status.success(),
            "meshdrift exited with {}:\n{}",
            output.status,
            output.stderr.join("\n")
        );
        let mut flows = Vec::new();
        let mut summary = Value::Null;
        for line in &output.stdout {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            if value["event"] == "summary" {
                summary = value;
            } else {
                flows.push(value);
            }
        }
        assert!(
            !summary.is_null(),
            "meshdrift printed no summary on exit:\n{}",
            output.stderr.join("\n")
        );
        Observed {
            flows,
            summary,
            stderr: output.stderr,
        }
    }
}

impl Observed {
    /// Close records of client sockets from `src_ip` to `dst_port`.
    pub fn client_closes(&self, src_ip: &str, dst_port: u16) -> Vec<&Value> {
        self.flows
            .iter()
            .filter(|flow| {
                flow["event"] == "close"
                    && flow["role"] == "client"
                    && host_of(&flow["src"]) == src_ip
                    && port_of(&flow["dst"]) == dst_port
            })
            .collect()
    }

    pub fn lost_total(&self) -> u64 {
        self.summary["lost_total"].as_u64().expect("lost_total")
    }
}

/// `ip` of an `ip:port` or `[ip]:port` string.
pub fn host_of(addr: &Value) -> String {
    let text = addr.as_str().expect("address string");
    let host = text.rsplit_once(':').map_or(text, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

pub fn port_of(addr: &Value) -> u16 {
    addr.as_str()
        .and_then(|text| text.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .expect("address with a port")
}

pub fn count(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {value}"))
}
