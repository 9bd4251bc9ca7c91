//! Keeps the agent's mesh up to date between kernel events: inventory
//! changes and rebuilt policies are applied in place, on the event loop (a
//! pod change costs what that pod touches); the static findings, which look
//! at every policy, are recomputed off the loop.
//!
//! While a findings check reads the mesh it is shared, and changes wait for
//! it. A policy change starts a check at once; pod changes make the findings
//! stale, and they are recomputed at most once per [`FINDINGS_REFRESH`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::agent::Agent;
use super::declared::DeclaredUpdate;
use crate::{findings::Finding, model::Change, policy, policy::Policies};

/// The longest the static findings lag behind the inventory.
pub const FINDINGS_REFRESH: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct Keeper {
    pending: Vec<Change>,
    pending_policies: Option<Box<Policies>>,
    check: Option<JoinHandle<Vec<Finding>>>,
    /// The inventory changed after the findings were computed.
    stale_since: Option<Instant>,
}

impl Keeper {
    pub(super) fn receive(&mut self, agent: &mut Agent, update: DeclaredUpdate) {
        match update {
            DeclaredUpdate::Replace(declared) => {
                if let Some(check) = self.check.take() {
                    check.abort();
                }
                self.pending.clear();
                self.pending_policies = None;
                self.stale_since = None;
                agent.use_declared(&declared);
            }
            DeclaredUpdate::Inventory(changes) => {
                self.pending.extend(changes);
                self.apply(agent);
            }
            DeclaredUpdate::Policies(policies) => {
                self.pending_policies = Some(policies);
                self.apply(agent);
            }
        }
    }

    /// Applies what waits, unless a check holds the mesh.
    fn apply(&mut self, agent: &mut Agent) {
        if self.check.is_some() {
            return;
        }
        let Some(mesh) = agent.mesh_mut() else {
            return;
        };
        let mut inventory_changed = false;
        for change in self.pending.drain(..) {
            inventory_changed |= mesh.index.apply(&change);
        }
        let policies = self.pending_policies.take();
        let policies_changed = policies.is_some();
        if let Some(policies) = policies {
            mesh.policies = *policies;
        }
        if inventory_changed || policies_changed {
            mesh.refresh_inventory();
        }
        if inventory_changed {
            self.stale_since.get_or_insert_with(Instant::now);
        }
        if policies_changed {
            self.start_check(agent);
        }
    }

    fn start_check(&mut self, agent: &Agent) {
        let mesh = Arc::clone(agent.mesh());
        self.stale_since = None;
        self.check = Some(tokio::task::spawn_blocking(move || {
            policy::check(&mesh.index, &mesh.policies)
        }));
    }

    /// Starts a check when pod changes have made the findings stale for long enough.
    pub(super) fn tick(&mut self, agent: &Agent) {
        if self.check.is_none()
            && self
                .stale_since
                .is_some_and(|since| since.elapsed() >= FINDINGS_REFRESH)
        {
            self.start_check(agent);
        }
    }

    /// Completes when a running check does (never when none runs).
    pub(super) async fn checked(&mut self) -> Option<Vec<Finding>> {
        match &mut self.check {
            Some(check) => {
                let findings = check.await.ok();
                self.check = None;
                findings
            }
            None => std::future::pending().await,
        }
    }

    /// Takes a check's findings and applies what waited for it.
    pub(super) fn finish_check(&mut self, agent: &mut Agent, findings: Option<Vec<Finding>>) {
        if let (Some(findings), Some(mesh)) = (findings, agent.mesh_mut()) {
            mesh.findings = findings;
        }
        self.apply(agent);
    }
}
