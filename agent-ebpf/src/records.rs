//! Counting the length-prefixed units a client writes: TLS records, whose
//! application-data records estimate requests on encrypted HTTP/2, and, on
//! h2c (plaintext HTTP/2), HEADERS frames, which count requests exactly (each
//! request opens a stream with one). Both are a type and a length at the
//! start of a header, so one walker follows both across packets.

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};
use meshdrift_ebpf::{FlowState, flow_flags};

use crate::{
    state::{atomic_add, atomic_set_flags},
    tls::header_at,
};

const TLS_APPLICATION_DATA: u8 = 0x17;
const H2_HEADERS: u8 = 0x01;
/// The bytes of a header the walker reads: TLS's whole header; the length
/// and type of an HTTP/2 frame header (its flags and stream id follow).
const READ_LEN: u64 = 5;
/// Units walked in one packet at most; a packet holding more (a large
/// offloaded burst of small records) loses the walker its place, which the
/// flow's flags then say.
const MAX_UNITS_PER_PACKET: u32 = 256;

/// How one framing lays out its header.
trait Framing {
    /// Bytes from one header's start to its payload's.
    const HEADER_LEN: u64;
    /// The unit type that is counted.
    const COUNTED: u8;
    /// Type and payload length, from the header's first five bytes (little-endian).
    fn parse(first: u64) -> (u8, u64);
}

struct Tls;
struct H2;

impl Framing for Tls {
    const HEADER_LEN: u64 = 5;
    const COUNTED: u8 = TLS_APPLICATION_DATA;
    #[inline(always)]
    fn parse(first: u64) -> (u8, u64) {
        // type, version (2 bytes), length (2 bytes, big-endian)
        (
            (first & 0xff) as u8,
            ((first >> 16) & 0xff00) | ((first >> 32) & 0xff),
        )
    }
}

impl Framing for H2 {
    const HEADER_LEN: u64 = 9;
    const COUNTED: u8 = H2_HEADERS;
    #[inline(always)]
    fn parse(first: u64) -> (u8, u64) {
        // length (3 bytes, big-endian), type, flags, stream id (4 bytes)
        let length = ((first & 0xff) << 16) | (first & 0xff00) | ((first >> 16) & 0xff);
        (((first >> 24) & 0xff) as u8, length)
    }
}

/// Walks the unit headers in one client packet of a TLS (`h2c` false) or
/// h2c flow, carrying the walker's place across packets (`record_left`, and
/// a header the packet boundary cut in `record_partial`), and adds the
/// counted units that begin here to `client_records` when `count` is set
/// (TLS control packets keep the walker in step without counting).
#[inline(always)]
pub fn count_units(
    ctx: &SkBuffContext,
    state: *mut FlowState,
    payload_offset: u32,
    payload_len: u32,
    h2c: bool,
    count: bool,
) {
    // One copy per framing, so the verifier never follows both in one loop.
    if h2c {
        walk::<H2>(ctx, state, payload_offset, payload_len, count);
    } else {
        walk::<Tls>(ctx, state, payload_offset, payload_len, count);
    }
}

#[inline(always)]
fn walk<F: Framing>(
    ctx: &SkBuffContext,
    state: *mut FlowState,
    payload_offset: u32,
    payload_len: u32,
    count: bool,
) {
    let len = u64::from(payload_len);
    // SAFETY: live map value; these fields are written from the client's
    // direction only (see `FlowState`).
    let (left, partial) = unsafe { ((*state).record_left, (*state).record_partial) };
    if partial == 0 && left >= len {
        // SAFETY: as above.
        unsafe { (*state).record_left = left - len };
        return;
    }
    let mut units: u64 = 0;
    let mut pos = left;
    if partial != 0 {
        // The rest of a header the previous packet cut: `have` bytes came then.
        let have = (partial >> 32) & 0x7;
        let Some(tail) = header_at(ctx, payload_offset) else {
            lose_place(state);
            return;
        };
        // Little-endian: the bytes seen first are the low ones.
        let seen = partial & 0xffff_ffff;
        let first = seen | (tail << (8 * have));
        let (kind, unit_len) = F::parse(first);
        units += is(kind, F::COUNTED);
        pos = (F::HEADER_LEN - have) + unit_len;
    }
    // Branch-light on purpose: the verifier walks every path of this loop.
    let mut walked = 0;
    let mut cut = false;
    let mut readable = true;
    while walked < MAX_UNITS_PER_PACKET && pos < len {
        if pos + READ_LEN > len {
            cut = true;
            break;
        }
        let Some(header) = header_at(ctx, payload_offset + pos as u32) else {
            readable = false;
            break;
        };
        let (kind, unit_len) = F::parse(header);
        units += is(kind, F::COUNTED);
        pos += F::HEADER_LEN + unit_len;
        walked += 1;
    }
    if !readable || (!cut && pos < len) {
        lose_place(state);
        return;
    }
    if cut {
        save_partial(ctx, state, payload_offset, pos, len);
        finish(state, 0, units, count);
    } else {
        // SAFETY: as above.
        unsafe { (*state).record_partial = 0 };
        finish(state, pos - len, units, count);
    }
}

/// 1 when `kind` is `counted`, else 0, without a branch.
#[inline(always)]
fn is(kind: u8, counted: u8) -> u64 {
    (u64::from(kind ^ counted).wrapping_sub(1)) >> 63
}

#[inline(always)]
fn finish(state: *mut FlowState, left: u64, units: u64, count: bool) {
    // SAFETY: live map value; `record_left` is the client direction's own field.
    unsafe {
        (*state).record_left = left;
        if count && units > 0 {
            atomic_add(&raw mut (*state).client_records, units);
        }
    }
}

/// Keeps the first bytes (up to four) of a header the packet boundary cut.
#[inline(always)]
fn save_partial(
    ctx: &SkBuffContext,
    state: *mut FlowState,
    payload_offset: u32,
    pos: u64,
    len: u64,
) {
    let have = len - pos;
    let mut bytes: u64 = 0;
    let mut i: u64 = 0;
    while i < 4 {
        if i < have {
            let mut byte = 0u8;
            // SAFETY: a one-byte copy into a stack variable.
            unsafe {
                bpf_skb_load_bytes(
                    ctx.skb.skb.cast::<c_void>(),
                    payload_offset + (pos + i) as u32,
                    (&raw mut byte).cast::<c_void>(),
                    1,
                );
            }
            bytes |= u64::from(byte) << (8 * i);
        }
        i += 1;
    }
    // SAFETY: live map value, client direction's own field.
    unsafe { (*state).record_partial = (have << 32) | bytes };
}

#[inline(always)]
fn lose_place(state: *mut FlowState) {
    // SAFETY: live map value.
    atomic_set_flags(unsafe { &raw mut (*state).flags }, flow_flags::RECORDS_LOST);
}
