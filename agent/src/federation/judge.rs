//! Turning the cluster's series into split verdicts: the declared weights
//! over time (a change starts a new policy generation, as in the agent), and
//! each step's summed counts fed as one batch into the agent's sequential
//! detector.

use std::collections::BTreeMap;

use crate::drift::{
    SequentialConfig, SequentialDetector, SequentialError, evidence_of, undeclared_traffic,
    wilson_interval,
};
use crate::observation::Unit;
use crate::report::format::{duration, p_in_words, plural, share_in_words, unit as unit_noun};
use crate::report::{SplitVerdict, SubsetShare};

use super::counts::{Grid, SplitKey, Tally, node_of};
use super::prometheus::Series;

/// Weights by `destination_subset` label ("" is the whole host).
pub type Weights = BTreeMap<String, f64>;

/// What the agents declared for one key at each point of the grid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    /// Per grid point (baseline included): the largest weight any agent
    /// exported for each subset, `None` where no agent exported the key.
    pub points: Vec<Option<Weights>>,
    /// The unit, when the gauge carries a `unit` label.
    pub unit: Option<Unit>,
}

impl Declared {
    /// The weights in force at the end.
    pub fn last(&self) -> Option<&Weights> {
        self.points.iter().rev().find_map(Option::as_ref)
    }
}

/// The declared weights per key, the largest over agents at every point.
pub fn declared(series: &[Series], grid: &Grid) -> BTreeMap<SplitKey, Declared> {
    let mut out: BTreeMap<SplitKey, Declared> = BTreeMap::new();
    for one in series {
        let Some(key) = SplitKey::of(one) else {
            continue;
        };
        let entry = out.entry(key).or_insert_with(|| Declared {
            points: vec![None; grid.batches + 1],
            unit: None,
        });
        if let Some(unit) = unit_label(one.label("unit")) {
            entry.unit = Some(unit);
        }
        let subset = one.label("destination_subset");
        for (point, value) in grid.values(one).into_iter().enumerate() {
            let (Some(value), Some(slot)) = (value, entry.points.get_mut(point)) else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            let weight = slot
                .get_or_insert_with(Weights::new)
                .entry(subset.to_owned())
                .or_insert(value);
            *weight = weight.max(value);
        }
    }
    out
}

fn unit_label(text: &str) -> Option<Unit> {
    match text {
        "request" | "requests" => Some(Unit::Request),
        "connection" | "connections" => Some(Unit::Connection),
        _ => None,
    }
}

/// The agents behind a set of series, by node.
pub fn agents<'a>(series: impl IntoIterator<Item = &'a Series>) -> usize {
    series
        .into_iter()
        .map(node_of)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// How splits are judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Judging {
    /// The sequential detector's practical tolerance (absolute share).
    pub tolerance: f64,
    /// Normal quantile of the Wilson intervals (the agent's).
    pub z: f64,
}

/// The key's unit: the gauge's label if any, else requests when the key
/// has any (http routes count both), else connections when it has those.
pub fn unit_of(declared: &Declared, requests: Option<&Tally>, connections: Option<&Tally>) -> Unit {
    if let Some(unit) = declared.unit {
        return unit;
    }
    if requests.is_some_and(|t| t.total() > 0) {
        Unit::Request
    } else if connections.is_some_and(|t| t.present) {
        Unit::Connection
    } else {
        Unit::Request
    }
}

/// The verdict of one key over the grid, from its declared weights and its
/// counts in `unit`.
pub fn verdict(
    key: &SplitKey,
    declared: &Declared,
    unit: Unit,
    counts: Option<&Tally>,
    grid: &Grid,
    judging: &Judging,
) -> Result<SplitVerdict, SequentialError> {
    let empty = Tally::default();
    let counts = counts.unwrap_or(&empty);
    let at = |subset: &str, batch: usize| {
        counts
            .by_subset
            .get(subset)
            .and_then(|per_batch| per_batch.get(batch))
            .copied()
            .unwrap_or(0)
    };
    let config = SequentialConfig {
        batch: grid.step,
        tolerance: judging.tolerance,
        ..SequentialConfig::default()
    };

    // The generation in force at the baseline carries into the range.
    let mut weights: Option<Weights> = declared.points.first().cloned().flatten();
    let mut generation = weights
        .as_ref()
        .map(|w| Generation::new(w, &config, 0))
        .transpose()?;
    let mut changed = false;
    for batch in 0..grid.batches {
        if let Some(now) = declared.points.get(batch + 1).cloned().flatten()
            && weights.as_ref().is_none_or(|w| !same(w, &now))
        {
            changed |= weights.is_some();
            generation = Some(Generation::new(&now, &config, batch)?);
            weights = Some(now);
        }
        if let Some(Generation {
            detector: Some(detector),
            tested,
            ..
        }) = generation.as_mut()
        {
            let batch_counts: Vec<u64> = tested.iter().map(|s| at(s, batch)).collect();
            detector.observe_batch(&batch_counts)?;
        }
    }

    let weights = weights.unwrap_or_default();
    let first = generation.as_ref().map_or(0, |g| g.first_batch);
    let total_of = |subset: &str| -> u64 { (first..grid.batches).map(|b| at(subset, b)).sum() };
    let observed: BTreeMap<&str, u64> = counts
        .by_subset
        .keys()
        .map(|s| (s.as_str(), total_of(s)))
        .collect();
    let samples: u64 = observed.values().sum();
    let share = |count: u64| {
        if samples == 0 {
            0.0
        } else {
            count as f64 / samples as f64
        }
    };
    let positive: f64 = weights.values().filter(|w| **w > 0.0).sum();
    let declared_share = |w: f64| {
        if positive > 0.0 {
            w.max(0.0) / positive
        } else {
            0.0
        }
    };

    let mut subsets = Vec::new();
    let mut immediate = Vec::new();
    let names = weights.keys().map(String::as_str).chain(
        observed
            .iter()
            .filter(|(name, count)| {
                !weights.contains_key(**name) && **count > 0 && !name.is_empty()
            })
            .map(|(name, _)| *name),
    );
    for name in names {
        let count = observed.get(name).copied().unwrap_or(0);
        let weight = weights.get(name).copied();
        let (ci_low, ci_high) = wilson_interval(count, samples, judging.z);
        subsets.push(SubsetShare {
            subset: (!name.is_empty()).then(|| name.to_owned()),
            declared: declared_share(weight.unwrap_or(0.0)),
            observed: share(count),
            count,
            ci_low,
            ci_high,
        });
        if weight.unwrap_or(0.0) <= 0.0 && count > 0 {
            immediate.push(undeclared_traffic(
                label(name),
                weight.is_some(),
                &amount(unit, count),
            ));
        }
    }
    // Without a declared whole-host share, "" is where the agents count
    // traffic that reached no declared destination.
    let unexpected = if weights.contains_key("") {
        0
    } else {
        observed.get("").copied().unwrap_or(0)
    };
    if unexpected > 0 {
        immediate.push(format!(
            "{} went to unexpected destinations",
            amount(unit, unexpected)
        ));
    }

    let mut verdict = SplitVerdict {
        source: key.source.clone(),
        host: key.host.clone(),
        port: key.port,
        unit,
        samples,
        estimated: false,
        p_value: None,
        drift: !immediate.is_empty(),
        reason: String::new(),
        subsets,
        evidence: None,
    };
    let mut parts = Vec::new();
    match generation
        .as_ref()
        .and_then(|g| g.detector.as_ref().map(|d| (g, d)))
    {
        Some((generation, detector)) => {
            verdict.drift |= detector.alarm();
            verdict.p_value = Some(detector.p_value());
            verdict.evidence = Some(evidence_of(detector));
            if detector.alarm() || immediate.is_empty() {
                parts.push(statistical_reason(
                    detector, generation, &observed, samples, unit, grid, judging,
                ));
            }
        }
        None if immediate.is_empty() => parts.push(if weights.is_empty() {
            "split not compared: no declared weights in the range".to_owned()
        } else {
            "one destination subset: no split to test".to_owned()
        }),
        None => {}
    }
    parts.extend(immediate);
    if changed {
        parts.push(format!(
            "the declared weights changed within the range: judged over the last {} only",
            duration((grid.batches - first) as u64 * grid.step.as_secs())
        ));
    }
    verdict.reason = parts.join("; ");
    Ok(verdict)
}

/// One policy generation: its weights, the subsets its test covers and the
/// detector judging them (none with fewer than two positive weights).
struct Generation {
    tested: Vec<String>,
    tested_weights: Vec<f64>,
    detector: Option<SequentialDetector>,
    first_batch: usize,
}

impl Generation {
    fn new(
        weights: &Weights,
        config: &SequentialConfig,
        first_batch: usize,
    ) -> Result<Self, SequentialError> {
        let (tested, tested_weights): (Vec<String>, Vec<f64>) = weights
            .iter()
            .filter(|(_, w)| **w > 0.0)
            .map(|(name, w)| (name.clone(), *w))
            .unzip();
        let detector = if tested.len() >= 2 {
            Some(SequentialDetector::new(&tested_weights, config.clone())?)
        } else {
            None
        };
        Ok(Generation {
            tested,
            tested_weights,
            detector,
            first_batch,
        })
    }
}

fn same(a: &Weights, b: &Weights) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((na, wa), (nb, wb))| na == nb && (wa - wb).abs() < 1e-9)
}

fn statistical_reason(
    detector: &SequentialDetector,
    generation: &Generation,
    observed: &BTreeMap<&str, u64>,
    samples: u64,
    unit: Unit,
    grid: &Grid,
    judging: &Judging,
) -> String {
    let n: u64 = generation
        .tested
        .iter()
        .map(|s| observed.get(s.as_str()).copied().unwrap_or(0))
        .sum();
    if n == 0 {
        return format!("no {} in the range", unit_noun(unit));
    }
    let total_weight: f64 = generation.tested_weights.iter().sum();
    let largest = generation
        .tested
        .iter()
        .zip(&generation.tested_weights)
        .map(|(name, w)| {
            let share = observed.get(name.as_str()).copied().unwrap_or(0) as f64 / n as f64;
            (name, share, w / total_weight)
        })
        // On a tie (to rounding), the subset that receives too much.
        .max_by(|a, b| {
            let (da, db) = (a.1 - a.2, b.1 - b.2);
            tie_free(da)
                .total_cmp(&tie_free(db))
                .then(da.total_cmp(&db))
        });
    let Some((name, share, weight)) = largest else {
        return format!("no {} in the range", unit_noun(unit));
    };
    let comparison = format!(
        "observed {} {} vs declared {}",
        label(name),
        share_in_words(share),
        share_in_words(weight)
    );
    let evidence = format!(
        "anytime {}, n = {samples}, {} batch{} of {}",
        p_in_words(detector.p_value()),
        detector.batches(),
        if detector.batches() == 1 { "" } else { "es" },
        duration(grid.step.as_secs())
    );
    if detector.alarm() {
        format!(
            "{comparison}, beyond the {:.0}-point tolerance ({evidence})",
            judging.tolerance * 100.0
        )
    } else {
        format!(
            "consistent with the declared split within {:.0} points: {comparison} ({evidence})",
            judging.tolerance * 100.0
        )
    }
}

/// A share difference's size, rounded so that floating-point noise makes no tie.
pub(super) fn tie_free(delta: f64) -> f64 {
    (delta.abs() * 1e9).round()
}

fn label(subset: &str) -> &str {
    if subset.is_empty() {
        "(whole host)"
    } else {
        subset
    }
}

fn amount(unit: Unit, count: u64) -> String {
    let word = match unit {
        Unit::Request => "request",
        Unit::Connection => "connection",
    };
    format!("{count} {word}{}", plural(count))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::observation::Workload;

    fn key() -> SplitKey {
        SplitKey {
            source: Workload {
                namespace: "shop".into(),
                name: "web".into(),
            },
            host: "api.shop.svc.cluster.local".into(),
            port: 80,
        }
    }

    fn grid(batches: usize) -> Grid {
        Grid {
            start: 0.0,
            step: Duration::from_secs(30),
            batches,
        }
    }

    fn weights(pairs: &[(&str, f64)]) -> Weights {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn declared_all(batches: usize, w: &Weights) -> Declared {
        Declared {
            points: vec![Some(w.clone()); batches + 1],
            unit: None,
        }
    }

    /// `per_batch` counts per subset in every batch.
    fn tally(batches: usize, per_batch: &[(&str, u64)]) -> Tally {
        Tally {
            by_subset: per_batch
                .iter()
                .map(|(s, n)| ((*s).to_owned(), vec![*n; batches]))
                .collect(),
            by_node: BTreeMap::new(),
            present: true,
        }
    }

    fn judging() -> Judging {
        Judging {
            tolerance: 0.05,
            z: 3.29,
        }
    }

    #[test]
    fn a_split_far_off_its_weights_drifts_with_sequential_evidence() {
        let g = grid(60);
        let declared = declared_all(60, &weights(&[("v1", 0.5), ("v2", 0.5)]));
        let counts = tally(60, &[("v1", 210), ("v2", 90)]);
        let v = verdict(
            &key(),
            &declared,
            Unit::Request,
            Some(&counts),
            &g,
            &judging(),
        )
        .unwrap();
        assert!(v.drift, "{}", v.reason);
        assert_eq!(v.samples, 18_000);
        assert_eq!(v.subsets.len(), 2);
        assert!((v.subsets[0].observed - 0.7).abs() < 1e-9);
        assert_eq!(v.subsets[0].declared, 0.5);
        assert!(v.subsets[0].ci_low < 0.7 && v.subsets[0].ci_high > 0.7);
        let evidence = v.evidence.as_ref().unwrap();
        assert_eq!(evidence.batch_seconds, 30);
        assert!(v.p_value.unwrap() < 1e-6);
        assert!(
            v.reason.contains("v1 70.0 % vs declared 50.0 %"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn a_split_on_its_weights_does_not_drift() {
        let g = grid(60);
        let declared = declared_all(60, &weights(&[("v1", 0.5), ("v2", 0.5)]));
        let counts = tally(60, &[("v1", 151), ("v2", 149)]);
        let v = verdict(
            &key(),
            &declared,
            Unit::Request,
            Some(&counts),
            &g,
            &judging(),
        )
        .unwrap();
        assert!(!v.drift, "{}", v.reason);
        assert!(v.reason.starts_with("consistent"), "{}", v.reason);
        assert_eq!(v.evidence.as_ref().unwrap().batches, 60);
    }

    #[test]
    fn a_weight_change_restarts_the_detector_at_the_change() {
        let g = grid(60);
        let before = weights(&[("v1", 0.9), ("v2", 0.1)]);
        let after = weights(&[("v1", 0.5), ("v2", 0.5)]);
        let mut declared = declared_all(60, &before);
        for point in 31..=60 {
            declared.points[point] = Some(after.clone());
        }
        // 90/10 before the change, 50/50 after: each generation follows its weights.
        let mut counts = tally(60, &[("v1", 0), ("v2", 0)]);
        for batch in 0..60 {
            let (a, b) = if batch < 30 { (270, 30) } else { (150, 150) };
            counts.by_subset.get_mut("v1").unwrap()[batch] = a;
            counts.by_subset.get_mut("v2").unwrap()[batch] = b;
        }
        let v = verdict(
            &key(),
            &declared,
            Unit::Request,
            Some(&counts),
            &g,
            &judging(),
        )
        .unwrap();
        assert!(!v.drift, "{}", v.reason);
        assert_eq!(v.evidence.as_ref().unwrap().batches, 30);
        assert_eq!(v.samples, 30 * 300);
        assert!(
            v.reason.contains("changed within the range"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn traffic_to_a_zero_weight_or_undeclared_subset_drifts_at_once() {
        let g = grid(2);
        let declared = declared_all(2, &weights(&[("v1", 1.0), ("v2", 0.0)]));
        let counts = tally(2, &[("v1", 100), ("v2", 1), ("v3", 2), ("", 3)]);
        let v = verdict(
            &key(),
            &declared,
            Unit::Connection,
            Some(&counts),
            &g,
            &judging(),
        )
        .unwrap();
        assert!(v.drift);
        assert!(
            v.reason
                .contains("subset v2 has declared weight 0 but received 2 connections"),
            "{}",
            v.reason
        );
        assert!(
            v.reason.contains("subset v3 is not in the declared split"),
            "{}",
            v.reason
        );
        assert!(
            v.reason
                .contains("6 connections went to unexpected destinations"),
            "{}",
            v.reason
        );
        assert!(v.evidence.is_none(), "one positive weight: no test");
        let names: Vec<_> = v.subsets.iter().map(|s| s.subset.clone()).collect();
        assert_eq!(
            names,
            [Some("v1".into()), Some("v2".into()), Some("v3".into())]
        );
    }

    #[test]
    fn the_unit_is_requests_when_the_key_has_any() {
        let declared = Declared::default();
        let requests = tally(1, &[("v1", 1)]);
        let connections = tally(1, &[("v1", 1)]);
        let idle = tally(1, &[("v1", 0)]);
        assert_eq!(
            unit_of(&declared, Some(&requests), Some(&connections)),
            Unit::Request
        );
        assert_eq!(
            unit_of(&declared, Some(&idle), Some(&connections)),
            Unit::Connection
        );
        assert_eq!(unit_of(&declared, None, None), Unit::Request);
        let labelled = Declared {
            unit: Some(Unit::Connection),
            ..Declared::default()
        };
        assert_eq!(unit_of(&labelled, Some(&requests), None), Unit::Connection);
    }

    #[test]
    fn declared_weights_are_the_largest_over_agents_per_point() {
        let g = grid(1);
        let labels = |node: &str, subset: &str| -> BTreeMap<String, String> {
            [
                ("source_namespace", "shop"),
                ("source_workload", "web"),
                ("destination_host", "api.shop.svc.cluster.local"),
                ("destination_port", "80"),
                ("destination_subset", subset),
                ("node", node),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
        };
        let series = vec![
            Series {
                labels: labels("n1", "v1"),
                points: vec![(0.0, 0.5), (30.0, 0.5)],
            },
            Series {
                labels: labels("n2", "v1"),
                points: vec![(30.0, 0.6)],
            },
            Series {
                labels: labels("n2", "v2"),
                points: vec![(30.0, 0.4)],
            },
        ];
        let d = declared(&series, &g);
        let d = &d[&key()];
        assert_eq!(d.points[0], Some(weights(&[("v1", 0.5)])));
        assert_eq!(d.last(), Some(&weights(&[("v1", 0.6), ("v2", 0.4)])));
        assert_eq!(agents(&series), 2);
    }
}
