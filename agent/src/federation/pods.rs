//! The per-pod rows: the agents' own verdicts on each client pod's split, as
//! exported at the report's end time. Only drifting pods have series, so a
//! pod absent here is healthy (or had too little traffic to judge).

use std::collections::BTreeMap;

use crate::drift::wilson_interval;
use crate::observation::{Unit, Workload};
use crate::report::format::share_in_words;
use crate::report::{PodSplitVerdict, SplitVerdict, SubsetShare};

use super::counts::{SplitKey, node_of};
use super::judge::{Weights, tie_free};
use super::prometheus::Series;

/// A pod's split: its key and the pod's name.
type PodKey = (SplitKey, String);

fn pod_key(series: &Series) -> Option<PodKey> {
    let pod = series.label("source_pod");
    if pod.is_empty() {
        return None;
    }
    Some((SplitKey::of(series)?, pod.to_owned()))
}

fn last_value(series: &Series) -> Option<f64> {
    series
        .points
        .last()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
}

/// Drifting pods from the three gauges; `declared` and `unit` give each
/// key's weights and unit as the cluster verdict has them.
pub fn verdicts(
    drifting: &[Series],
    observed: &[Series],
    samples: &[Series],
    declared: impl Fn(&SplitKey) -> (Option<Weights>, Unit),
    z: f64,
) -> Vec<PodSplitVerdict> {
    let mut ratios: BTreeMap<PodKey, BTreeMap<String, f64>> = BTreeMap::new();
    for one in observed {
        if let (Some(key), Some(value)) = (pod_key(one), last_value(one)) {
            ratios
                .entry(key)
                .or_default()
                .insert(one.label("destination_subset").to_owned(), value);
        }
    }
    let counts: BTreeMap<PodKey, u64> = samples
        .iter()
        .filter_map(|one| Some((pod_key(one)?, last_value(one)?.max(0.0).round() as u64)))
        .collect();

    let mut out: BTreeMap<PodKey, PodSplitVerdict> = BTreeMap::new();
    for one in drifting {
        let Some(key) = pod_key(one) else {
            continue;
        };
        if out.contains_key(&key) {
            continue;
        }
        let (weights, unit) = declared(&key.0);
        let weights = weights.unwrap_or_default();
        let shares = ratios.get(&key).cloned().unwrap_or_default();
        let n = counts.get(&key).copied().unwrap_or(0);
        let positive: f64 = weights.values().filter(|w| **w > 0.0).sum();
        let names: Vec<&String> = weights
            .keys()
            .chain(shares.keys().filter(|s| !weights.contains_key(*s)))
            .collect();
        let subsets: Vec<SubsetShare> = names
            .into_iter()
            .map(|name| {
                let observed = shares.get(name).copied().unwrap_or(0.0);
                let count = (observed * n as f64).round() as u64;
                let (ci_low, ci_high) = wilson_interval(count, n, z);
                SubsetShare {
                    subset: (!name.is_empty()).then(|| name.clone()),
                    declared: match weights.get(name) {
                        Some(w) if positive > 0.0 => w.max(0.0) / positive,
                        _ => 0.0,
                    },
                    observed,
                    count,
                    ci_low,
                    ci_high,
                }
            })
            .collect();
        let worst = subsets
            .iter()
            // On a tie (to rounding), the subset that receives too much.
            .max_by(|a, b| {
                let (da, db) = (a.observed - a.declared, b.observed - b.declared);
                tie_free(da)
                    .total_cmp(&tie_free(db))
                    .then(da.total_cmp(&db))
            })
            .map(|s| {
                format!(
                    ": observed {} {} vs declared {}",
                    s.subset.as_deref().unwrap_or("(whole host)"),
                    share_in_words(s.observed),
                    share_in_words(s.declared)
                )
            })
            .unwrap_or_default();
        let (split_key, pod) = key.clone();
        let reason = format!(
            "the agent on {} finds this pod's own split drifting{worst} (n = {n})",
            node_of(one)
        );
        out.insert(
            key,
            PodSplitVerdict {
                pod: format!("{}/{pod}", split_key.source.namespace),
                split: SplitVerdict {
                    source: Workload {
                        namespace: split_key.source.namespace.clone(),
                        name: split_key.source.name.clone(),
                    },
                    host: split_key.host,
                    port: split_key.port,
                    unit,
                    samples: n,
                    estimated: false,
                    p_value: None,
                    drift: true,
                    reason,
                    subsets,
                    evidence: None,
                },
            },
        );
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(extra: &[(&str, &str)], value: f64) -> Series {
        let mut labels: BTreeMap<String, String> = [
            ("source_namespace", "shop"),
            ("source_workload", "web"),
            ("source_pod", "web-b"),
            ("destination_host", "api.shop.svc.cluster.local"),
            ("destination_port", "80"),
            ("node", "node-2"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            labels.insert((*k).to_owned(), (*v).to_owned());
        }
        Series {
            labels,
            points: vec![(100.0, value)],
        }
    }

    #[test]
    fn a_drifting_pod_is_named_with_its_shares_against_the_declared_weights() {
        let drifting = [series(&[], 1.0)];
        let observed = [
            series(&[("destination_subset", "v1")], 0.9),
            series(&[("destination_subset", "v2")], 0.1),
        ];
        let samples = [series(&[], 1000.0)];
        let weights: Weights = [("v1".to_owned(), 0.5), ("v2".to_owned(), 0.5)].into();
        let pods = verdicts(
            &drifting,
            &observed,
            &samples,
            |_| (Some(weights.clone()), Unit::Request),
            3.29,
        );
        assert_eq!(pods.len(), 1);
        let pod = &pods[0];
        assert_eq!(pod.pod, "shop/web-b");
        assert!(pod.split.drift);
        assert_eq!(pod.split.samples, 1000);
        assert_eq!(pod.split.subsets.len(), 2);
        assert_eq!(pod.split.subsets[0].count, 900);
        assert_eq!(pod.split.subsets[0].declared, 0.5);
        assert!(pod.split.reason.contains("node-2"), "{}", pod.split.reason);
        assert!(
            pod.split.reason.contains("v1 90.0 %"),
            "{}",
            pod.split.reason
        );
    }

    #[test]
    fn series_without_a_pod_name_are_ignored() {
        let drifting = [series(&[("source_pod", "")], 1.0)];
        let pods = verdicts(&drifting, &[], &[], |_| (None, Unit::Request), 3.29);
        assert!(pods.is_empty());
    }
}
