//! Maps shared by the programs, the loss counters, record emission, and the
//! atomic operations the flow state is changed with.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_or, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use meshdrift_ebpf::{
    ConnectFailedEvent, DEFAULT_RING_BUFFER_BYTES, FlowAddrs, FlowEvent, FlowState, Loss,
    MAX_FLOWS, PortRange, RecordKind,
};

/// Close and payload records for user space. The loader may resize it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

/// Open flows by socket cookie. Entries are allocated as flows appear (no
/// preallocation: memory follows the flows), removed when they close; user
/// space sweeps the map for the counters of flows that stay open.
#[map]
pub static FLOWS: HashMap<u64, FlowState> = HashMap::with_max_entries(MAX_FLOWS, BPF_F_NO_PREALLOC);

/// Per-CPU loss counters, indexed by [`Loss`].
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(Loss::COUNT, 0);

/// Queued bytes above which a record wakes user space; below it records wait
/// for user space's next poll, so a busy node does not pay a wakeup per
/// record. Set by the loader.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = (DEFAULT_RING_BUFFER_BYTES / 4) as u64;

/// The kernel's ephemeral port range, for the role of adopted flows. Set by the loader.
#[unsafe(no_mangle)]
pub static EPHEMERAL_PORTS: PortRange = PortRange::DEFAULT;

#[inline(always)]
fn wakeup_bytes() -> u64 {
    // SAFETY: a plain read of a global the loader may have rewritten; volatile so the
    // compiler does not fold the default value in.
    unsafe { core::ptr::read_volatile(&raw const WAKEUP_BYTES) }
}

#[inline(always)]
pub fn ephemeral_ports() -> PortRange {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const EPHEMERAL_PORTS) }
}

#[inline(always)]
pub fn count_loss(loss: Loss) {
    if let Some(counter) = LOSSES.get_ptr_mut(loss as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}

/// Submit flags for a record: wake user space only once enough has queued.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= wakeup_bytes() {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Sends the flow's final state to user space, or counts the loss.
#[inline(always)]
pub fn emit_close(cookie: u64, state: *const FlowState, now_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        count_loss(Loss::RingbufFull);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is reserved ring-buffer memory for a `FlowEvent`;
    // `state` a live map value. The padding is left as it is: nobody reads it.
    unsafe {
        (*event).kind = RecordKind::Close as u8;
        (*event).cookie = cookie;
        (*event).time_ns = now_ns;
        copy_words(&raw mut (*event).state, state);
    }
    entry.submit(submit_flags());
}

/// Tells user space a connect failed, or counts the loss.
#[inline(always)]
pub fn emit_connect_failed(cookie: u64, addrs: &FlowAddrs, retransmitted: bool, now_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<ConnectFailedEvent>(0) else {
        count_loss(Loss::RingbufFull);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is reserved ring-buffer memory for a `ConnectFailedEvent`.
    // The padding is left as it is: nobody reads it.
    unsafe {
        (*event).kind = RecordKind::ConnectFailed as u8;
        (*event).retransmitted = u8::from(retransmitted);
        (*event).cookie = cookie;
        (*event).time_ns = now_ns;
        (*event).addrs = *addrs;
    }
    entry.submit(submit_flags());
}

/// Copies a flow state a word at a time. A plain struct copy compiles to a
/// byte-at-a-time `memmove` loop on this target (a few hundred instructions);
/// volatile word accesses keep the compiler from turning this back into one.
#[inline(always)]
fn copy_words(dst: *mut FlowState, src: *const FlowState) {
    const WORDS: usize = size_of::<FlowState>() / 8;
    let (dst, src) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..WORDS {
        // SAFETY: both point at a `FlowState`, 8-aligned and a whole number of words long.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
}

/// `CLOCK_MONOTONIC` to the kernel's tick. Flow times are shown in
/// milliseconds; the precise clock costs a clock-source read per call, a
/// hypervisor read on many virtual machines.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Adds `value` to a counter another CPU may be adding to at the same time.
#[inline(always)]
pub fn atomic_add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points into a live map value; the add is atomic.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// Sets `bits` and returns the flags as they were before.
#[inline(always)]
pub fn atomic_set_flags(flags: *mut u64, bits: u64) -> u64 {
    // SAFETY: as above.
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(flags, bits) }
}

/// Replaces `current` with `new` if it still holds `expected`; true when it did.
#[inline(always)]
pub fn compare_and_swap(current: *mut u64, expected: u64, new: u64) -> bool {
    // SAFETY: as above.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            current, expected, new,
        )
    }
    .1
}

/// A field another CPU may be writing, read once.
#[inline(always)]
pub fn read_shared(field: *const u64) -> u64 {
    // SAFETY: an aligned 64-bit load from a live map value never tears.
    unsafe { core::ptr::read_volatile(field) }
}
