//! What the kernel reads of TLS without decrypting it: whether a flow speaks
//! TLS, whether a client packet carries only TLS's own control records, and
//! how many application-data records the client begins (the estimator of
//! requests on multiplexed HTTP/2, where turns undercount).

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};
use meshdrift_ebpf::{FlowState, flow_flags};

use crate::state::{atomic_add, atomic_set_flags};

const CHANGE_CIPHER_SPEC: u8 = 0x14;
const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
const APPLICATION_DATA: u8 = 0x17;
/// A TLS 1.3 alert (close_notify) travels as an application-data record of
/// 2 alert bytes + 1 content-type byte + a 16-byte AEAD tag.
const TLS13_ALERT_RECORD_LEN: u64 = 19;
const HEADER_LEN: u64 = 5;
/// Records walked in one packet at most; a packet holding more (a large
/// offloaded burst of small records) loses the parser its place, which the
/// flow's flags then say.
const MAX_RECORDS_PER_PACKET: u32 = 16;

#[inline(always)]
fn header_at(ctx: &SkBuffContext, offset: u32) -> Option<[u8; 5]> {
    let mut header = [0u8; 5];
    // SAFETY: a fixed-size copy into a stack buffer of that size.
    let status = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast::<c_void>(),
            offset,
            header.as_mut_ptr().cast::<c_void>(),
            5,
        )
    };
    (status == 0).then_some(header)
}

/// Whether the payload at `offset` starts with a TLS record header: a content
/// type and major version 3. A flow's first bytes are a handshake record; an
/// adopted flow's may be any record type (`handshake_only` false).
#[inline(always)]
pub fn is_record(ctx: &SkBuffContext, offset: u32, handshake_only: bool) -> bool {
    let Some(header) = header_at(ctx, offset) else {
        return false;
    };
    let content_type_ok = if handshake_only {
        header[0] == HANDSHAKE
    } else {
        (CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&header[0])
    };
    content_type_ok && header[1] == 3
}

/// Whether a TLS flow's client packet starts with TLS's own control records,
/// which are not requests: handshake, change-cipher-spec and alert records,
/// and the encrypted close_notify a TLS 1.3 client sends when it closes an
/// idle connection.
#[inline(always)]
pub fn starts_with_control(ctx: &SkBuffContext, offset: u32, payload_len: u32) -> bool {
    let Some(header) = header_at(ctx, offset) else {
        return false;
    };
    match header[0] {
        HANDSHAKE | CHANGE_CIPHER_SPEC | ALERT => true,
        APPLICATION_DATA => is_close_notify(record_len(&header), u64::from(payload_len)),
        _ => false,
    }
}

#[inline(always)]
fn record_len(header: &[u8; 5]) -> u64 {
    u64::from(u16::from_be_bytes([header[3], header[4]]))
}

#[inline(always)]
fn is_close_notify(record_len: u64, payload_len: u64) -> bool {
    record_len == TLS13_ALERT_RECORD_LEN && payload_len == HEADER_LEN + TLS13_ALERT_RECORD_LEN
}

/// Walks the record headers in one client packet, carrying the parser's
/// position across packets (`record_left`, and a header cut by the packet
/// boundary in `record_partial`), and adds the application-data records that
/// begin here to `client_records` when `count` is set (control packets keep
/// the parser in step without counting).
#[inline(always)]
pub fn count_records(
    ctx: &SkBuffContext,
    state: *mut FlowState,
    payload_offset: u32,
    payload_len: u32,
    count: bool,
) {
    let len = u64::from(payload_len);
    // SAFETY: live map value; these two fields are written from the client's
    // direction only (see `FlowState`).
    let (left, partial) = unsafe { ((*state).record_left, (*state).record_partial) };
    if partial == 0 && left >= len {
        // SAFETY: as above.
        unsafe { (*state).record_left = left - len };
        return;
    }
    let mut records: u64 = 0;
    let mut pos = left;
    if partial != 0 {
        // The rest of a header the previous packet cut: `have` bytes came then.
        let have = (partial >> 32) & 0x7;
        let need = HEADER_LEN.saturating_sub(have);
        let Some(tail) = header_at(ctx, payload_offset) else {
            lose_place(state);
            return;
        };
        // Little-endian: the bytes seen first are the low ones.
        let seen = partial & 0xffff_ffff;
        let mut tail_bytes = [0u8; 8];
        tail_bytes[..5].copy_from_slice(&tail);
        let joined = seen | (u64::from_le_bytes(tail_bytes) << (8 * have));
        let content_type = (joined & 0xff) as u8;
        let record = ((joined >> 16) & 0xff00) | ((joined >> 32) & 0xff);
        records += is_application_data(content_type);
        pos = need + record;
    }
    // Branch-light on purpose: the verifier walks every path of this loop.
    let mut walked = 0;
    let mut cut = false;
    let mut readable = true;
    while walked < MAX_RECORDS_PER_PACKET && pos < len {
        if pos + HEADER_LEN > len {
            cut = true;
            break;
        }
        let Some(header) = header_at(ctx, payload_offset + pos as u32) else {
            readable = false;
            break;
        };
        records += is_application_data(header[0]);
        pos += HEADER_LEN + record_len(&header);
        walked += 1;
    }
    if !readable || (!cut && pos < len) {
        lose_place(state);
        return;
    }
    if cut {
        save_partial(ctx, state, payload_offset, pos, len);
        finish(state, 0, records, count);
    } else {
        // SAFETY: as above.
        unsafe { (*state).record_partial = 0 };
        finish(state, pos - len, records, count);
    }
}

/// 1 for an application-data record, else 0, without a branch.
#[inline(always)]
fn is_application_data(content_type: u8) -> u64 {
    (u64::from(content_type ^ APPLICATION_DATA).wrapping_sub(1)) >> 63
}

#[inline(always)]
fn finish(state: *mut FlowState, left: u64, records: u64, count: bool) {
    // SAFETY: live map value; `record_left` is the client direction's own field.
    unsafe {
        (*state).record_left = left;
        if count && records > 0 {
            atomic_add(&raw mut (*state).client_records, records);
        }
    }
}

/// Keeps the first bytes of a record header the packet boundary cut.
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
