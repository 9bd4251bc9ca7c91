//! TLS origination (`tls.mode: SIMPLE` or `MUTUAL`): each upstream
//! connection's first bytes must be a TLS ClientHello presenting the
//! declared SNI (the host when `sni` is unset). Plaintext, Istio's own mTLS,
//! or another SNI contradict it. Whether a client certificate was sent
//! (`MUTUAL`) is inside the encrypted handshake and not checked.

use std::collections::BTreeMap;

use super::PodVerdict;
use crate::{
    observation::conduct::{Activity, DeclaredTraffic},
    report::{PolicyOutcome, format::plural},
    wire::Transport,
};

const BUCKET_SECONDS: f64 = 10.0;

#[derive(Debug, Default, Clone)]
struct Bucket {
    judged: u64,
    right: u64,
    /// Contradicting connections by what they were (`plaintext`, `SNI x`, …).
    wrong: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct OriginationTally {
    buckets: BTreeMap<i64, Bucket>,
}

impl OriginationTally {
    pub fn expire(&mut self, oldest: f64) {
        let first_kept = (oldest / BUCKET_SECONDS).floor() as i64;
        self.buckets.retain(|&b, _| b >= first_kept);
    }

    /// A connection's first update.
    pub fn connection(&mut self, activity: &Activity, declared: &DeclaredTraffic) {
        let Some(origination) = &declared.tls_origination else {
            return;
        };
        let wrong = match (activity.transport, activity.sni.as_deref()) {
            (Transport::Tls, Some(sni)) if sni.eq_ignore_ascii_case(&origination.sni) => None,
            (Transport::Tls, Some(sni)) => Some(format!("TLS with SNI {sni}")),
            (Transport::Tls, None) => Some("TLS without SNI".to_owned()),
            (Transport::IstioMtls, _) => Some("Istio mTLS".to_owned()),
            (Transport::Http | Transport::Http2 | Transport::Other, _) => {
                Some("plaintext".to_owned())
            }
            // Nothing seen yet, or TLS whose handshake was missed.
            (Transport::None | Transport::Encrypted, _) => return,
        };
        let bucket = self
            .buckets
            .entry((activity.seen_at / BUCKET_SECONDS).floor() as i64)
            .or_default();
        bucket.judged += 1;
        match wrong {
            None => bucket.right += 1,
            Some(what) => *bucket.wrong.entry(what).or_default() += 1,
        }
    }

    pub fn judge(&self, declared: &DeclaredTraffic) -> PodVerdict {
        let mut merged = Bucket::default();
        for bucket in self.buckets.values() {
            merged.judged += bucket.judged;
            merged.right += bucket.right;
            for (what, n) in &bucket.wrong {
                *merged.wrong.entry(what.clone()).or_default() += n;
            }
        }
        let sni = declared
            .tls_origination
            .as_ref()
            .map_or("", |o| o.sni.as_str());
        let mut parts = vec![format!("{} TLS with SNI {sni}", merged.right)];
        parts.extend(merged.wrong.iter().map(|(what, n)| format!("{n} {what}")));
        let observed = format!("{} connections: {}", merged.judged, parts.join(", "));
        let wrong: u64 = merged.wrong.values().sum();
        let (outcome, reason) = if wrong > 0 {
            (
                PolicyOutcome::Violation,
                format!(
                    "{wrong} connection{} did not originate TLS with SNI {sni}",
                    plural(wrong)
                ),
            )
        } else if merged.judged == 0 {
            (
                PolicyOutcome::Untested,
                "no connections whose first bytes were seen yet".to_owned(),
            )
        } else {
            (
                PolicyOutcome::Ok,
                "every connection originated TLS with the declared SNI (a client certificate, for MUTUAL, is not visible)".to_owned(),
            )
        };
        PodVerdict {
            outcome,
            observed,
            reason,
            samples: merged.judged,
        }
    }
}
