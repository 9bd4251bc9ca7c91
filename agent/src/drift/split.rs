//! The split verdict of one key: observed counts in the route's unit, in the
//! compared part of the window, against the declared weights.

use std::collections::BTreeMap;

use crate::observation::{DeclaredSplit, ESTIMATED_SHARE_ERROR, SplitKey, Unit};
use crate::report::format::{p_in_words, plural, share_in_words as percent, unit as unit_noun};
use crate::report::{SplitVerdict, SubsetShare};

use super::DriftConfig;
use super::stats::{self, Judgement, Untested};
use super::track::SequentialTrack;
use super::window::Counts;

/// Traffic of one key in the compared part of the window.
#[derive(Debug, Default)]
pub(crate) struct SplitCounts {
    pub by_subset: BTreeMap<Option<String>, Counts>,
    /// By unexpected destination.
    pub unexpected: BTreeMap<String, Counts>,
}

/// Where the key stands with respect to its policy generation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    /// When the declared split last changed, if it did while the agent watched.
    pub changed_at: Option<f64>,
    /// Observations before this time are not compared.
    pub compare_from: f64,
    pub now: f64,
}

pub(crate) fn verdict(
    key: &SplitKey,
    declared: &DeclaredSplit,
    counts: &SplitCounts,
    phase: Phase,
    config: &DriftConfig,
    track: Option<&SequentialTrack>,
) -> SplitVerdict {
    let unit = declared.unit;
    let in_unit = |c: &Counts| match unit {
        Unit::Request => c.requests,
        Unit::Connection => c.connections,
    };
    let samples: u64 = counts
        .by_subset
        .values()
        .chain(counts.unexpected.values())
        .map(in_unit)
        .fold(0u64, u64::saturating_add);
    // Requests estimated rather than counted widen what counts as drift by
    // the estimator's measured share error.
    let estimated = unit == Unit::Request
        && counts
            .by_subset
            .values()
            .chain(counts.unexpected.values())
            .any(|c| c.estimated > 0);
    let widened;
    let config = if estimated {
        widened = DriftConfig {
            tolerance: config.tolerance + ESTIMATED_SHARE_ERROR,
            ..config.clone()
        };
        &widened
    } else {
        config
    };

    let mut weights = declared_weights(declared);
    let total_weight: f64 = weights.iter().map(|(_, w)| w).sum();
    let usable = weights.iter().all(|(_, w)| w.is_finite() && *w >= 0.0) && total_weight > 0.0;
    if usable {
        // Shares are compared as fractions whatever scale the weights came in.
        for (_, weight) in &mut weights {
            *weight /= total_weight;
        }
    }
    let z = stats::z_for_alpha(config.alpha);
    let share = |count: u64| {
        if samples == 0 {
            0.0
        } else {
            count as f64 / samples as f64
        }
    };

    // Declared subsets in the order the route lists them, then subsets that
    // received traffic without being declared.
    let mut subsets: Vec<SubsetShare> = Vec::new();
    let mut immediate: Vec<String> = Vec::new();
    let names: Vec<Option<String>> = weights
        .iter()
        .map(|(name, _)| name.clone())
        .chain(
            counts
                .by_subset
                .keys()
                .filter(|name| weight_of(&weights, name).is_none())
                .cloned(),
        )
        .collect();
    for name in &names {
        let declared_weight = weight_of(&weights, name).unwrap_or(0.0);
        let subset_counts = counts.by_subset.get(name).copied().unwrap_or_default();
        let count = in_unit(&subset_counts);
        let (ci_low, ci_high) = stats::wilson_interval(count, samples, z);
        subsets.push(SubsetShare {
            subset: name.clone(),
            declared: declared_weight,
            observed: share(count),
            count,
            ci_low,
            ci_high,
        });
        if declared_weight <= 0.0 && (count > 0 || subset_counts.connections > 0) {
            immediate.push(undeclared_traffic(
                label(name),
                weight_of(&weights, name).is_some(),
                &amount(unit, &subset_counts),
            ));
        }
    }
    let unexpected_total = counts
        .unexpected
        .values()
        .fold(Counts::default(), |mut acc, c| {
            acc.add(*c);
            acc
        });
    if unexpected_total.requests > 0 || unexpected_total.connections > 0 {
        let destinations: Vec<&str> = counts.unexpected.keys().map(String::as_str).collect();
        immediate.push(format!(
            "{} went to {} unexpected destination{} ({})",
            amount(unit, &unexpected_total),
            destinations.len(),
            if destinations.len() == 1 { "" } else { "s" },
            destinations.join(", ")
        ));
    }

    let mut verdict = SplitVerdict {
        source: key.source.clone(),
        host: key.host.clone(),
        port: key.port,
        unit,
        samples,
        estimated,
        p_value: None,
        drift: false,
        reason: String::new(),
        subsets,
        evidence: None,
    };

    if !declared.determinable {
        verdict.reason = format!(
            "split not compared: {}",
            declared
                .reason
                .as_deref()
                .unwrap_or("the route is chosen by request content")
        );
        return verdict;
    }
    if !usable {
        verdict.reason = "split not compared: the declared weights are not usable".to_owned();
        return verdict;
    }

    // The test covers the subsets with a positive weight; weight-0 and unexpected
    // traffic is judged above, without statistics.
    let tested: Vec<(&Option<String>, f64)> = weights
        .iter()
        .filter(|(_, w)| *w > 0.0)
        .map(|(name, w)| (name, *w))
        .collect();
    let tested_counts: Vec<u64> = tested
        .iter()
        .map(|(name, _)| counts.by_subset.get(*name).map(in_unit).unwrap_or(0))
        .collect();
    let tested_weights: Vec<f64> = tested.iter().map(|(_, w)| *w).collect();
    let judgement = stats::judge(&tested_counts, &tested_weights, config);
    verdict.p_value = judgement.gof.map(|gof| gof.p_value);

    // The window's test describes; the sequential test, whose false alarms are
    // bounded per unit of time, decides.
    let alarm = track.is_some_and(SequentialTrack::alarm);
    verdict.evidence = track.and_then(SequentialTrack::evidence);
    let untested_by_window = matches!(
        judgement.untested,
        Some(Untested::TooFew { .. } | Untested::SmallExpected { .. })
    );
    let mut statistical = if alarm && untested_by_window {
        // Too few for the window's chi-square, not for the exact sequential test.
        comparison(&tested, &tested_counts)
    } else {
        statistical_reason(&judgement, &tested, &tested_counts, unit, phase, config)
    };
    if let Some(evidence) = &verdict.evidence {
        if alarm {
            statistical.push_str(&format!(
                "; drift by the sequential test (its evidence crossed the threshold of {:.1} nats; anytime {})",
                evidence.ln_threshold,
                p_in_words(evidence.p_value)
            ));
        } else if judgement.drift() {
            statistical.push_str(&format!(
                "; not yet conclusive: the sequential test holds {:.1} of the {:.1} nats of evidence it needs",
                evidence.ln_statistic.max(0.0),
                evidence.ln_threshold
            ));
        }
    }
    verdict.drift = alarm || !immediate.is_empty();
    let mut parts = Vec::new();
    if alarm || judgement.drift() || immediate.is_empty() {
        parts.push(statistical);
    }
    parts.extend(immediate);
    if estimated {
        parts.push(format!(
            "requests are estimated (multiplexed HTTP/2 over TLS), so the tolerance includes their {:.0}-point share error",
            ESTIMATED_SHARE_ERROR * 100.0
        ));
    }
    verdict.reason = parts.join("; ");
    verdict
}

/// Why traffic to a subset is drift without statistics: it is declared at
/// weight 0 (`declared`) or not at all, yet `received` went there.
pub fn undeclared_traffic(subset: &str, declared: bool, received: &str) -> String {
    let what = if declared {
        "has declared weight 0"
    } else {
        "is not in the declared split"
    };
    format!("subset {subset} {what} but received {received}")
}

/// The subsets a split's test covers (positive declared weight), with their
/// weights as fractions, in route order; `None` when the split is not
/// compared (chosen by request content, or weights that are not usable).
pub(crate) fn tested_weights(declared: &DeclaredSplit) -> Option<Vec<(Option<String>, f64)>> {
    if !declared.determinable {
        return None;
    }
    let weights = declared_weights(declared);
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    let usable = weights.iter().all(|(_, w)| w.is_finite() && *w >= 0.0) && total > 0.0;
    usable.then(|| {
        weights
            .into_iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(name, w)| (name, w / total))
            .collect()
    })
}

/// Declared weights by subset in route order, duplicates summed.
fn declared_weights(declared: &DeclaredSplit) -> Vec<(Option<String>, f64)> {
    let mut weights: Vec<(Option<String>, f64)> = Vec::new();
    for subset in &declared.subsets {
        match weights.iter_mut().find(|(name, _)| *name == subset.subset) {
            Some((_, weight)) => *weight += subset.weight,
            None => weights.push((subset.subset.clone(), subset.weight)),
        }
    }
    weights
}

fn weight_of(weights: &[(Option<String>, f64)], name: &Option<String>) -> Option<f64> {
    weights.iter().find(|(n, _)| n == name).map(|(_, w)| *w)
}

fn statistical_reason(
    judgement: &Judgement,
    tested: &[(&Option<String>, f64)],
    tested_counts: &[u64],
    unit: Unit,
    phase: Phase,
    config: &DriftConfig,
) -> String {
    let n = judgement.n;
    match judgement.untested {
        Some(Untested::SingleSubset) => {
            return "one destination subset: no split to test".to_owned();
        }
        Some(Untested::TooFew { n, min }) => {
            let since = if phase.now < phase.compare_from {
                format!(
                    "; the declared split changed {:.0} s ago and traffic is compared from the end of the {:.0} s grace period",
                    phase.changed_at.map_or(0.0, |at| phase.now - at),
                    config.grace.as_secs_f64()
                )
            } else if phase.changed_at.is_some() {
                " since the declared split changed".to_owned()
            } else {
                String::new()
            };
            return format!(
                "too few {} to test: n = {n} of {min} needed{since}",
                unit_noun(unit)
            );
        }
        Some(Untested::SmallExpected { expected }) => {
            return format!(
                "too few {} to test: the smallest subset expects {expected:.1} of n = {n}, at least {} needed",
                unit_noun(unit),
                stats::MIN_EXPECTED_COUNT
            );
        }
        None => {}
    }
    let Some((index, diff)) = judgement.largest else {
        return format!("no {} in the window", unit_noun(unit));
    };
    let Some((name, weight)) = tested.get(index) else {
        return format!("no {} in the window", unit_noun(unit));
    };
    let observed = tested_counts.get(index).copied().unwrap_or(0) as f64 / n.max(1) as f64;
    let comparison = format!(
        "observed {} {} vs declared {}",
        label(name),
        percent(observed),
        percent(*weight)
    );
    let p = judgement
        .gof
        .map_or_else(|| "p = ?".to_owned(), |gof| p_in_words(gof.p_value));
    match (judgement.significant, judgement.beyond_tolerance) {
        (true, true) => format!("{comparison} ({p}, n = {n})"),
        (true, false) => format!(
            "within tolerance: {comparison}, {:.1} points ≤ {:.1} ({p}, n = {n})",
            diff * 100.0,
            config.tolerance * 100.0
        ),
        (false, true) => format!(
            "not significant: {comparison} ({p} ≥ α = {}, n = {n})",
            config.alpha
        ),
        (false, false) => {
            format!("consistent with the declared split: {comparison} ({p}, n = {n})")
        }
    }
}

/// The tested subset furthest from its weight, observed against declared.
fn comparison(tested: &[(&Option<String>, f64)], counts: &[u64]) -> String {
    let n: u64 = counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
    let share = |count: u64| count as f64 / n.max(1) as f64;
    let furthest = tested
        .iter()
        .zip(counts)
        .map(|((name, weight), count)| (*name, *weight, share(*count)))
        .max_by(|a, b| (a.2 - a.1).abs().total_cmp(&(b.2 - b.1).abs()));
    match furthest {
        Some((name, weight, observed)) => format!(
            "observed {} {} vs declared {} (n = {n})",
            label(name),
            percent(observed),
            percent(weight)
        ),
        None => format!("n = {n}"),
    }
}

fn label(subset: &Option<String>) -> &str {
    subset.as_deref().unwrap_or("(whole host)")
}

fn amount(unit: Unit, counts: &Counts) -> String {
    match unit {
        Unit::Request => format!(
            "{} request{} on {} connection{}",
            counts.requests,
            plural(counts.requests),
            counts.connections,
            plural(counts.connections)
        ),
        Unit::Connection => format!(
            "{} connection{}",
            counts.connections,
            plural(counts.connections)
        ),
    }
}
