//! Prometheus metrics: what the agent observed (counters fed per observation) and
//! what it concluded (gauges refreshed from each published [`Report`](crate::report::Report)).
//!
//! Every label set is bounded by workloads × hosts × subsets × transports: never
//! pods, never client-chosen ports, so the series count does not grow with traffic.

mod cumulative;
mod gauges;
mod labels;
mod metrics;
mod process;
pub mod text;

pub use metrics::{Metrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
