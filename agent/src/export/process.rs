//! The agent's own cost, in the standard process metrics every Prometheus
//! client library exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_start_time_seconds`), read from
//! `/proc/self` at each scrape so dashboards and alerts written for other
//! exporters work unchanged.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads `/proc/self` when encoded; a file it cannot read leaves its metric out.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What `/proc/self/stat` and `/proc/self/statm` tell, in base units.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessSample {
    cpu_seconds: f64,
    resident_bytes: f64,
    start_time_seconds: f64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = sample() else {
            return Ok(());
        };
        encode_one(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time the agent spent, in seconds.",
            &ConstCounter::new(sample.cpu_seconds),
        )?;
        encode_one(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size of the agent, in bytes.",
            &ConstGauge::new(sample.resident_bytes),
        )?;
        encode_one(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the agent process since the Unix epoch, in seconds.",
            &ConstGauge::new(sample.start_time_seconds),
        )?;
        Ok(())
    }
}

fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn sample() -> Option<ProcessSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    parse(&stat, &statm, &uptime, ticks as f64, page as f64, now)
}

/// `stat`'s fields after the command name (which may hold spaces and
/// parentheses, so the last `)` ends it): utime and stime are the 14th and
/// 15th fields, starttime the 22nd, in clock ticks since boot; `statm`'s
/// second field is the resident set in pages.
fn parse(
    stat: &str,
    statm: &str,
    uptime: &str,
    ticks_per_second: f64,
    page_bytes: f64,
    now: f64,
) -> Option<ProcessSample> {
    if ticks_per_second <= 0.0 || page_bytes <= 0.0 {
        return None;
    }
    let after_name = &stat[stat.rfind(')')? + 1..];
    // The first field after the name is the 3rd (state).
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let cpu_ticks = field(14)? + field(15)?;
    let started_ticks = field(22)?;
    let resident_pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let uptime_seconds: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let boot = now - uptime_seconds;
    Some(ProcessSample {
        cpu_seconds: cpu_ticks / ticks_per_second,
        resident_bytes: resident_pages * page_bytes,
        start_time_seconds: (boot + started_ticks / ticks_per_second).round(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime ...
        let stat = "4242 (mesh drift) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 3 0 1000 123456 789";
        let sample = parse(
            stat,
            "5000 1024 300 10 0 400 0\n",
            "100.00 180.0\n",
            100.0,
            4096.0,
            1_000_100.0,
        )
        .unwrap();
        assert_eq!(sample.cpu_seconds, 3.0);
        assert_eq!(sample.resident_bytes, 4_194_304.0);
        // Booted at 1 000 000, started 10 s later.
        assert_eq!(sample.start_time_seconds, 1_000_010.0);
    }

    #[test]
    fn this_process_has_a_sample() {
        let sample = sample().unwrap();
        assert!(sample.resident_bytes > 0.0);
        assert!(sample.start_time_seconds > 1.0e9);
    }

    #[test]
    fn garbage_gives_no_sample() {
        assert_eq!(parse("no parens", "1 2", "1 1", 100.0, 4096.0, 0.0), None);
        assert_eq!(parse("1 (x) S 1", "1 2", "1 1", 100.0, 4096.0, 0.0), None);
    }
}
