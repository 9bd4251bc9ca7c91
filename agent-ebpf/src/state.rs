//! Maps shared by the programs, the loss counters, and record emission.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use meshdrift_ebpf::{
    DEFAULT_RING_BUFFER_BYTES, DEFAULT_UPDATE_INTERVAL_NS, FlowEvent, FlowState, Loss, RecordKind,
};

/// Records for user space: [`FlowEvent`] and `PayloadEvent`. The loader may resize it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

/// Open flows by socket cookie. LRU so a missed close can never fill it for good;
/// an eviction is counted when the evicted flow closes.
#[map]
pub static FLOWS: LruHashMap<u64, FlowState> = LruHashMap::with_max_entries(262_144, 0);

/// Per-CPU loss counters, indexed by [`Loss`].
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(Loss::COUNT, 0);

/// Interval between cumulative updates of a long-lived flow; set by the loader.
#[unsafe(no_mangle)]
pub static UPDATE_INTERVAL_NS: u64 = DEFAULT_UPDATE_INTERVAL_NS;

#[inline(always)]
pub fn update_interval_ns() -> u64 {
    // SAFETY: a plain read of a global the loader may have rewritten; volatile so the
    // compiler does not fold the default value in.
    unsafe { core::ptr::read_volatile(&raw const UPDATE_INTERVAL_NS) }
}

#[inline(always)]
pub fn count_loss(loss: Loss) {
    if let Some(counter) = LOSSES.get_ptr_mut(loss as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}

/// Sends the flow's cumulative counters to user space, or counts the loss.
#[inline(always)]
pub fn emit_flow(kind: RecordKind, cookie: u64, state: &FlowState, now_ns: u64) {
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            entry.write(FlowEvent {
                kind: kind as u8,
                _pad: [0; 7],
                cookie,
                cgroup_id: state.cgroup_id,
                start_ns: state.start_ns,
                time_ns: now_ns,
                bytes_sent: state.bytes_sent,
                bytes_received: state.bytes_received,
                exchanges: state.exchanges,
                _pad2: 0,
                addrs: state.addrs,
            });
            entry.submit(0);
        }
        None => count_loss(Loss::RingbufFull),
    }
}
