//! `meshdrift report --prometheus`: the options of a cluster report, and the
//! Prometheus client it reads through (the same token and certificates as an
//! agent's URL).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use super::agent_url::AgentUrl;
use super::report::{AgentAccess, ReportArgs, http_agent};
use crate::federation::{self, Client, Options};
use crate::report::Report;

/// The default per-query timeout: a range query over an hour of a large
/// cluster takes Prometheus a while.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn fetch(args: &ReportArgs, prometheus: &AgentUrl) -> anyhow::Result<Report> {
    let access = AgentAccess::from_args(args)?;
    let timeout = args.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let agent = http_agent(timeout, access.ca_pem.as_deref())?;
    let client = Client::new(agent, &prometheus.endpoint(""), access.token, timeout);
    let end = match args.at {
        Some(at) => at,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs_f64(),
    };
    let mut options = Options::new(&args.job, args.range, args.step, end);
    if let Some(tolerance) = args.tolerance {
        options.tolerance = tolerance;
    }
    if options.step > options.range {
        anyhow::bail!(
            "--step ({:?}) is longer than --range ({:?}): a range holds at least one step",
            options.step,
            options.range
        );
    }
    Ok(federation::cluster_report(&client, &options)?)
}

/// `--at`: an RFC 3339 time, as unix seconds.
pub fn parse_time(text: &str) -> Result<f64, String> {
    let at =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|err| {
                format!("`{text}` is not an RFC 3339 time such as 2026-01-31T12:00:00Z ({err})")
            })?;
    Ok(at.unix_timestamp_nanos() as f64 / 1e9)
}

/// `--tolerance`: an absolute share in `[0, 1)`.
pub fn parse_tolerance(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number (example: 0.05)"))?;
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "the tolerance is a share of traffic, at least 0 and below 1 (0.05 = 5 points), got {value}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339() {
        assert_eq!(parse_time("1970-01-01T00:01:00Z"), Ok(60.0));
        assert_eq!(parse_time("1970-01-01T01:00:00.5+01:00"), Ok(0.5));
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    fn parse(args: &[&str]) -> Result<crate::cli::Cli, clap::Error> {
        use clap::Parser as _;
        crate::cli::Cli::try_parse_from(["meshdrift", "report"].iter().chain(args))
    }

    #[test]
    fn prometheus_excludes_the_agent_url_and_owns_its_options() {
        let cli = parse(&[
            "--prometheus",
            "prom:9090",
            "--range",
            "30m",
            "--at",
            "2026-01-01T00:00:00Z",
        ])
        .unwrap();
        let crate::cli::Command::Report(args) = cli.command else {
            panic!("not report");
        };
        assert_eq!(args.prometheus.unwrap().to_string(), "http://prom:9090");
        assert_eq!(args.range, Duration::from_secs(1800));
        assert_eq!(args.step, Duration::from_secs(30));
        assert_eq!(args.job, "meshdrift");
        assert!(args.at.is_some());
        assert!(parse(&["--prometheus", "prom:9090", "--url", "agent:9477"]).is_err());
        assert!(parse(&["--at", "2026-01-01T00:00:00Z"]).is_err());
        assert!(parse(&["--prometheus", "prom:9090", "--tolerance", "2"]).is_err());
    }

    #[test]
    fn the_tolerance_is_a_share() {
        assert_eq!(parse_tolerance("0.1"), Ok(0.1));
        for bad in ["1", "-0.1", "five", "NaN"] {
            assert!(parse_tolerance(bad).is_err(), "{bad}");
        }
    }
}
