//! The declared-vs-observed bar of one subset, as inline SVG: a thin grey bar for
//! the declared share, a thicker bar for the observed share with its Wilson
//! interval as whiskers, and a tick at the declared share so the gap is visible
//! at a glance.

use std::fmt::Write as _;

use super::escape::Esc;
use crate::report::SubsetShare;
use crate::report::format::percent;

const WIDTH: f64 = 400.0;

/// Renders the bar. `off` marks a subset whose interval excludes the declared
/// share in a drifting split: it is drawn in the alarm colour.
pub fn subset_bar(share: &SubsetShare, off: bool) -> String {
    let x = |share: f64| share.clamp(0.0, 1.0) * WIDTH;
    let label = format!(
        "declared {}, observed {} (95% interval {} to {})",
        percent(share.declared),
        percent(share.observed),
        percent(share.ci_low),
        percent(share.ci_high)
    );
    let class = if off { "obs off" } else { "obs" };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="bar" viewBox="0 0 {w} 34" width="{w}" height="34" role="img" aria-label="{label}">"#,
        w = WIDTH,
        label = Esc(&label),
    );
    let _ = write!(
        svg,
        r#"<rect class="track" x="0" y="1" width="{WIDTH}" height="32" rx="3"/>"#
    );
    for grid in [0.25, 0.5, 0.75] {
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{0}" x2="{0}" y1="1" y2="33"/>"#,
            x(grid)
        );
    }
    let _ = write!(
        svg,
        r#"<rect class="decl" x="0" y="4" width="{:.1}" height="7" rx="2"/>"#,
        x(share.declared)
    );
    let _ = write!(
        svg,
        r#"<rect class="{class}" x="0" y="14" width="{:.1}" height="15" rx="2"/>"#,
        x(share.observed)
    );
    let (lo, hi) = (x(share.ci_low), x(share.ci_high));
    let _ = write!(
        svg,
        r#"<g class="ci"><line x1="{lo:.1}" x2="{hi:.1}" y1="21.5" y2="21.5"/><line x1="{lo:.1}" x2="{lo:.1}" y1="16" y2="27"/><line x1="{hi:.1}" x2="{hi:.1}" y1="16" y2="27"/></g>"#
    );
    let _ = write!(
        svg,
        r#"<line class="target" x1="{0:.1}" x2="{0:.1}" y1="1" y2="33"/>"#,
        x(share.declared)
    );
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(declared: f64, observed: f64) -> SubsetShare {
        SubsetShare {
            subset: Some("v1".into()),
            declared,
            observed,
            count: 100,
            ci_low: observed - 0.05,
            ci_high: observed + 0.05,
        }
    }

    #[test]
    fn bar_widths_follow_the_shares() {
        let svg = subset_bar(&share(0.5, 0.8), true);
        assert!(
            svg.contains(r#"class="decl" x="0" y="4" width="200.0""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="obs off" x="0" y="14" width="320.0""#),
            "{svg}"
        );
        assert!(svg.contains(r#"x1="300.0" x2="340.0""#), "whiskers: {svg}");
        assert!(svg.contains("observed 80.0%"), "{svg}");
    }

    #[test]
    fn shares_outside_zero_to_one_are_clamped() {
        let svg = subset_bar(&share(1.0, 1.0), false);
        assert!(!svg.contains("420.0"), "{svg}");
    }
}
