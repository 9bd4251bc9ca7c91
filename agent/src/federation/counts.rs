//! From cumulative counters to counts per step: each series' increments with
//! its resets, summed per split key and subset across agents, and kept per
//! node for the node rows.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::observation::Workload;

use super::prometheus::Series;

/// The evaluation times of a range query: `t₀ = start` (the baseline just
/// before the range) and `tₖ = start + k·step` up to `tₙ = end`. Batch `k`
/// (from 1) is the traffic in `(tₖ₋₁, tₖ]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub start: f64,
    pub step: Duration,
    /// Batches in the range (`n`).
    pub batches: usize,
}

impl Grid {
    /// The grid ending at `end` and covering `range` in whole steps (at least one).
    pub fn ending_at(end: f64, range: Duration, step: Duration) -> Grid {
        let steps = (range.as_secs_f64() / step.as_secs_f64()).floor().max(1.0);
        // A range of millions of steps is refused by Prometheus before it
        // matters here; the cast saturates rather than wraps.
        let batches = steps as usize;
        Grid {
            start: end - steps * step.as_secs_f64(),
            step,
            batches,
        }
    }

    pub fn end(&self) -> f64 {
        self.time(self.batches)
    }

    pub fn time(&self, point: usize) -> f64 {
        self.start + point as f64 * self.step.as_secs_f64()
    }

    /// The grid point a sample's timestamp falls on, if it is one.
    fn point(&self, at: f64) -> Option<usize> {
        let index = ((at - self.start) / self.step.as_secs_f64()).round();
        (index >= 0.0 && index <= self.batches as f64).then_some(index as usize)
    }

    /// A series' values on the grid's points (`None` where it was absent).
    pub fn values(&self, series: &Series) -> Vec<Option<f64>> {
        let mut values = vec![None; self.batches + 1];
        for &(at, value) in &series.points {
            if let Some(slot) = self.point(at).and_then(|k| values.get_mut(k)) {
                *slot = Some(value);
            }
        }
        values
    }
}

/// A counter's increment in each batch of `grid`.
///
/// A drop is a restart of the agent: the new value is the increment since.
/// A series present at the baseline counts nothing there (its history before
/// the range is not the range's); one that appears later was born in the
/// batch where it appears, so its first value counts in full. One that
/// vanishes and returns is compared with its last value, as a reset if lower.
pub fn increments(values: &[Option<f64>]) -> Vec<u64> {
    let mut out = vec![0; values.len().saturating_sub(1)];
    let mut last: Option<f64> = None;
    for (point, value) in values.iter().enumerate() {
        let Some(value) = value.filter(|v| v.is_finite() && *v >= 0.0) else {
            continue;
        };
        let increment = match last {
            Some(previous) if value >= previous => value - previous,
            Some(_) => value,
            None if point == 0 => 0.0,
            None => value,
        };
        if let Some(slot) = point.checked_sub(1).and_then(|batch| out.get_mut(batch)) {
            // Counters count whole requests; a float sum may be a hair off.
            *slot = increment.round() as u64;
        }
        last = Some(value);
    }
    out
}

/// A split: a source workload's traffic to one host and Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SplitKey {
    pub source: Workload,
    pub host: String,
    pub port: u16,
}

impl SplitKey {
    /// The key a series is labelled with; `None` without a usable port.
    pub fn of(series: &Series) -> Option<SplitKey> {
        Some(SplitKey {
            source: Workload {
                namespace: series.label("source_namespace").to_owned(),
                name: series.label("source_workload").to_owned(),
            },
            host: series.label("destination_host").to_owned(),
            port: series.label("destination_port").parse().ok()?,
        })
    }
}

/// The agent a series came from: the `node` label the scrape sets, else the
/// scrape target.
pub fn node_of(series: &Series) -> String {
    match series.label("node") {
        "" => series.label("instance").to_owned(),
        node => node.to_owned(),
    }
}

/// One counter's increments for one key, summed across series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Per batch, by `destination_subset` label ("" as exported).
    pub by_subset: BTreeMap<String, Vec<u64>>,
    /// Over the whole range, by node and subset label.
    pub by_node: BTreeMap<(String, String), u64>,
    /// Some series of this counter exists for the key (with or without traffic).
    pub present: bool,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.by_subset.values().flatten().sum()
    }
}

/// Sums each series' increments per key and subset, and per node.
pub fn tally(series: &[Series], grid: &Grid) -> BTreeMap<SplitKey, Tally> {
    let mut tallies: BTreeMap<SplitKey, Tally> = BTreeMap::new();
    for one in series {
        let Some(key) = SplitKey::of(one) else {
            tracing::debug!(labels = ?one.labels, "series without a usable destination_port");
            continue;
        };
        let increments = increments(&grid.values(one));
        let subset = one.label("destination_subset").to_owned();
        let tally = tallies.entry(key).or_default();
        tally.present = true;
        let sums = tally
            .by_subset
            .entry(subset.clone())
            .or_insert_with(|| vec![0; grid.batches]);
        for (sum, add) in sums.iter_mut().zip(&increments) {
            *sum = sum.saturating_add(*add);
        }
        let node = tally.by_node.entry((node_of(one), subset)).or_default();
        *node = node.saturating_add(increments.iter().sum());
    }
    tallies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], points: &[(f64, f64)]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn the_baseline_counts_nothing_and_steps_count_their_difference() {
        assert_eq!(
            increments(&[Some(1000.0), Some(1010.0), Some(1030.0)]),
            vec![10, 20]
        );
    }

    #[test]
    fn a_drop_is_a_restart_whose_new_value_is_the_increment() {
        assert_eq!(
            increments(&[Some(500.0), Some(520.0), Some(7.0), Some(17.0)]),
            vec![20, 7, 10]
        );
    }

    #[test]
    fn a_series_born_inside_the_range_counts_its_first_value_in_full() {
        assert_eq!(
            increments(&[None, None, Some(12.0), Some(15.0)]),
            vec![0, 12, 3]
        );
    }

    #[test]
    fn a_gap_compares_with_the_last_value_seen() {
        assert_eq!(
            increments(&[Some(10.0), None, Some(25.0), None, Some(4.0)]),
            vec![0, 15, 0, 4]
        );
    }

    #[test]
    fn nonsense_values_are_skipped() {
        assert_eq!(
            increments(&[Some(10.0), Some(f64::NAN), Some(12.0), Some(-1.0)]),
            vec![0, 2, 0]
        );
        assert!(increments(&[]).is_empty());
    }

    #[test]
    fn the_grid_ends_at_the_end_in_whole_steps() {
        let grid = Grid::ending_at(1000.0, Duration::from_secs(100), Duration::from_secs(30));
        assert_eq!(grid.batches, 3);
        assert_eq!(grid.start, 910.0);
        assert_eq!(grid.end(), 1000.0);
        let one = series(&[], &[(910.0, 1.0), (970.001, 3.0), (5000.0, 9.0)]);
        assert_eq!(grid.values(&one), vec![Some(1.0), None, Some(3.0), None]);
    }

    #[test]
    fn series_sum_per_key_and_subset_and_stay_apart_per_node() {
        let grid = Grid::ending_at(60.0, Duration::from_secs(60), Duration::from_secs(30));
        let labels = |node: &str, subset: &str, transport: &str| {
            vec![
                ("source_namespace", "default"),
                ("source_workload", "client"),
                ("destination_host", "backend"),
                ("destination_port", "80"),
                ("destination_subset", subset),
                ("transport", transport),
                ("node", node),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<Vec<_>>()
        };
        let make = |node: &str, subset: &str, transport: &str, points: &[(f64, f64)]| {
            let owned = labels(node, subset, transport);
            let refs: Vec<(&str, &str)> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            series(&refs, points)
        };
        let all = vec![
            make(
                "n1",
                "v1",
                "http",
                &[(0.0, 100.0), (30.0, 110.0), (60.0, 130.0)],
            ),
            make("n1", "v1", "istio_mtls", &[(30.0, 5.0), (60.0, 6.0)]),
            make("n2", "v1", "http", &[(0.0, 0.0), (30.0, 1.0), (60.0, 2.0)]),
            make(
                "n2",
                "v2",
                "http",
                &[(0.0, 50.0), (30.0, 90.0), (60.0, 130.0)],
            ),
            make("n2", "v2", "http", &[(0.0, 1.0)]).tap_port("not-a-port"),
        ];
        let tallies = tally(&all, &grid);
        assert_eq!(tallies.len(), 1);
        let t = tallies.values().next().unwrap();
        assert_eq!(t.by_subset["v1"], vec![10 + 5 + 1, 20 + 1 + 1]);
        assert_eq!(t.by_subset["v2"], vec![40, 40]);
        assert_eq!(t.by_node[&("n1".to_owned(), "v1".to_owned())], 36);
        assert_eq!(t.by_node[&("n2".to_owned(), "v2".to_owned())], 80);
        assert_eq!(t.total(), 118);
    }

    trait TapPort {
        fn tap_port(self, port: &str) -> Self;
    }

    impl TapPort for Series {
        fn tap_port(mut self, port: &str) -> Self {
            self.labels
                .insert("destination_port".to_owned(), port.to_owned());
            self
        }
    }

    #[test]
    fn node_falls_back_to_the_instance() {
        assert_eq!(
            node_of(&series(&[("instance", "10.0.0.1:9477")], &[])),
            "10.0.0.1:9477"
        );
        assert_eq!(
            node_of(&series(&[("instance", "x"), ("node", "node-1")], &[])),
            "node-1"
        );
    }
}
