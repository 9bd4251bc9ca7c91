//! What the kernel reads of TLS without decrypting it: whether a flow speaks
//! TLS, and whether a client packet carries only TLS's own control records.

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};

const CHANGE_CIPHER_SPEC: u8 = 0x14;
const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
const APPLICATION_DATA: u8 = 0x17;
/// A TLS 1.3 alert (close_notify) travels as an application-data record of
/// 2 alert bytes + 1 content-type byte + a 16-byte AEAD tag.
const TLS13_ALERT_RECORD_LEN: u64 = 19;
const HEADER_LEN: u64 = 5;
/// The HTTP/2 client connection preface, which h2c with prior knowledge opens with.
const H2_PREFACE: [u8; 8] = *b"PRI * HT";
/// The whole preface's length: frames follow it.
pub const H2_PREFACE_LEN: u64 = 24;

/// The five bytes at `offset` of the packet, if it holds them, as the low
/// bytes of a little-endian word (the first byte lowest). One word on the
/// stack, not a byte array: zeroing an array costs a byte loop on this target.
#[inline(always)]
pub fn header_at(ctx: &SkBuffContext, offset: u32) -> Option<u64> {
    load_word(ctx, offset, 5)
}

#[inline(always)]
fn load_word(ctx: &SkBuffContext, offset: u32, len: u32) -> Option<u64> {
    let mut word: u64 = 0;
    // SAFETY: a copy of at most eight bytes into an eight-byte stack word.
    let status = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast::<c_void>(),
            offset,
            (&raw mut word).cast::<c_void>(),
            len,
        )
    };
    (status == 0).then_some(word)
}

/// Byte `i` of a header word.
#[inline(always)]
fn byte(word: u64, i: u32) -> u8 {
    (word >> (8 * i)) as u8
}

/// Whether the payload at `offset` starts with a TLS record header: a content
/// type and major version 3. A flow's first bytes are a handshake record; an
/// adopted flow's may be any record type (`handshake_only` false).
#[inline(always)]
pub fn is_record(ctx: &SkBuffContext, offset: u32, handshake_only: bool) -> bool {
    let Some(header) = header_at(ctx, offset) else {
        return false;
    };
    let content_type = byte(header, 0);
    let content_type_ok = if handshake_only {
        content_type == HANDSHAKE
    } else {
        (CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&content_type)
    };
    content_type_ok && byte(header, 1) == 3
}

/// Whether the payload at `offset` starts with the h2c connection preface.
#[inline(always)]
pub fn is_h2c_preface(ctx: &SkBuffContext, offset: u32) -> bool {
    load_word(ctx, offset, 8) == Some(u64::from_le_bytes(H2_PREFACE))
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
    match byte(header, 0) {
        HANDSHAKE | CHANGE_CIPHER_SPEC | ALERT => true,
        APPLICATION_DATA => is_close_notify(record_len(header), u64::from(payload_len)),
        _ => false,
    }
}

/// The length field of a TLS record header word (bytes 3 and 4, big-endian).
#[inline(always)]
fn record_len(header: u64) -> u64 {
    (u64::from(byte(header, 3)) << 8) | u64::from(byte(header, 4))
}

#[inline(always)]
fn is_close_notify(record_len: u64, payload_len: u64) -> bool {
    record_len == TLS13_ALERT_RECORD_LEN && payload_len == HEADER_LEN + TLS13_ALERT_RECORD_LEN
}
