//! The labs alive in this process: the signal hook tears them down, and the
//! stale sweep leaves their ids alone.

use std::sync::{Arc, Mutex, Weak};

use crate::shared::{LabShared, lock};

static LIVE: Mutex<Vec<Weak<LabShared>>> = Mutex::new(Vec::new());

pub(crate) fn register(lab: &Arc<LabShared>) {
    let mut live = lock(&LIVE);
    live.retain(|weak| weak.strong_count() > 0);
    live.push(Arc::downgrade(lab));
}

/// Ids of labs of this process that are not torn down (never swept as stale).
pub(crate) fn live_ids() -> Vec<u8> {
    lock(&LIVE)
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|lab| !lab.is_torn_down())
        .map(|lab| lab.id)
        .collect()
}

/// Tears down every lab of this process (the signal hook's job).
pub(crate) fn teardown_all() {
    let labs: Vec<Arc<LabShared>> = lock(&LIVE).iter().filter_map(Weak::upgrade).collect();
    for lab in labs {
        if let Err(e) = lab.teardown() {
            tracing::error!(lab = lab.id, error = %e, "lab teardown incomplete");
        }
    }
}
