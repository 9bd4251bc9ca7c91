//! Events that must be judged in time order but arrive out of it: a failed
//! attempt is reported at once, a connection's opening only at the next
//! sweep of the kernel's flow map. They wait here until every event before
//! them has surely arrived, then leave sorted.

/// What happened to one of a client pod's connections.
#[derive(Debug, Clone, PartialEq)]
pub enum TimelineEvent {
    Opened { endpoint: String },
    Closed,
    Failed { endpoint: String, timed_out: bool },
}

#[derive(Debug)]
pub struct Timeline {
    pending: Vec<(f64, TimelineEvent)>,
    /// Events up to here have been handed out; a later arrival from before
    /// it is handed out at this time, never before what already left.
    settled: f64,
}

impl Default for Timeline {
    fn default() -> Self {
        // Connections opened before the agent started have negative times.
        Self {
            pending: Vec::new(),
            settled: f64::NEG_INFINITY,
        }
    }
}

/// Events waiting at most per pod; beyond it the oldest are settled early.
const MAX_PENDING: usize = 1 << 16;

impl Timeline {
    pub fn push(&mut self, at: f64, event: TimelineEvent) {
        self.pending.push((at.max(self.settled), event));
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The events at or before `horizon`, in time order (closes before
    /// opens at the same instant, so a connection replaced at once does not
    /// read as two open), removed from the timeline.
    pub fn settle(&mut self, horizon: f64) -> Vec<(f64, TimelineEvent)> {
        let horizon = if self.pending.len() > MAX_PENDING {
            let mut times: Vec<f64> = self.pending.iter().map(|(at, _)| *at).collect();
            let cut = self.pending.len() - MAX_PENDING;
            times.select_nth_unstable_by(cut, f64::total_cmp);
            horizon.max(times[cut])
        } else {
            horizon
        };
        self.pending
            .sort_by(|(a, x), (b, y)| a.total_cmp(b).then_with(|| order(x).cmp(&order(y))));
        let ready = self.pending.partition_point(|(at, _)| *at <= horizon);
        if ready > 0 {
            self.settled = self.settled.max(self.pending[ready - 1].0);
        }
        self.pending.drain(..ready).collect()
    }
}

fn order(event: &TimelineEvent) -> u8 {
    match event {
        TimelineEvent::Closed => 0,
        TimelineEvent::Failed { .. } => 1,
        TimelineEvent::Opened { .. } => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(endpoint: &str) -> TimelineEvent {
        TimelineEvent::Opened {
            endpoint: endpoint.to_owned(),
        }
    }

    #[test]
    fn events_leave_in_time_order_once_settled() {
        let mut timeline = Timeline::default();
        timeline.push(3.0, opened("b"));
        timeline.push(1.0, opened("a"));
        timeline.push(2.0, TimelineEvent::Closed);
        timeline.push(9.0, opened("c"));
        let settled = timeline.settle(5.0);
        let times: Vec<f64> = settled.iter().map(|(at, _)| *at).collect();
        assert_eq!(times, [1.0, 2.0, 3.0]);
        assert!(!timeline.is_empty(), "the event after the horizon waits");
    }

    #[test]
    fn a_late_event_is_never_placed_before_what_already_left() {
        let mut timeline = Timeline::default();
        timeline.push(4.0, opened("a"));
        timeline.settle(5.0);
        timeline.push(2.0, TimelineEvent::Closed);
        let settled = timeline.settle(6.0);
        assert_eq!(settled, vec![(4.0, TimelineEvent::Closed)]);
    }

    #[test]
    fn events_from_before_the_agent_started_keep_their_times() {
        let mut timeline = Timeline::default();
        timeline.push(-5.0, opened("a"));
        assert_eq!(timeline.settle(-1.0), vec![(-5.0, opened("a"))]);
    }

    #[test]
    fn closes_come_before_opens_at_the_same_instant() {
        let mut timeline = Timeline::default();
        timeline.push(1.0, opened("a"));
        timeline.push(1.0, TimelineEvent::Closed);
        let settled = timeline.settle(1.0);
        assert_eq!(settled[0].1, TimelineEvent::Closed);
    }
}
