//! Builds ClientHello bytes for tests, and knows where each extension of interest ends
//! so tests can tell which fields a truncated capture still holds.

pub(super) const GREASE: u16 = 0x5a5a;

/// The parts of a ClientHello the classifier reads; the rest is filled in as a
/// current TLS 1.3 client would.
#[derive(Debug, Clone)]
pub(super) struct HelloBuilder {
    pub legacy_version: u16,
    pub session_id: Vec<u8>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    pub supported_versions: Vec<u16>,
    /// Extensions placed first, before the ones above (type, data).
    pub leading_extensions: Vec<(u16, Vec<u8>)>,
    pub grease: bool,
    /// Pad the handshake message to this many bytes (RFC 7685), as browsers do.
    pub pad_to: Option<usize>,
    /// Split the handshake message over records of at most this many bytes.
    pub record_size: Option<usize>,
}

/// A built ClientHello and the offsets (in `bytes`) just past each field of interest.
#[derive(Debug, Clone)]
pub(super) struct BuiltHello {
    pub bytes: Vec<u8>,
    pub legacy_version_end: usize,
    pub sni_end: Option<usize>,
    pub alpn_end: Option<usize>,
    pub supported_versions_end: Option<usize>,
}

impl HelloBuilder {
    pub fn tls13(sni: Option<&str>, alpn: &[&str]) -> Self {
        HelloBuilder {
            legacy_version: 0x0303,
            session_id: vec![0x11; 32],
            sni: sni.map(str::to_owned),
            alpn: alpn.iter().map(|p| (*p).to_owned()).collect(),
            supported_versions: vec![0x0304, 0x0303],
            leading_extensions: Vec::new(),
            grease: false,
            pad_to: None,
            record_size: None,
        }
    }

    pub fn tls12(sni: Option<&str>, alpn: &[&str]) -> Self {
        HelloBuilder {
            supported_versions: Vec::new(),
            session_id: Vec::new(),
            ..HelloBuilder::tls13(sni, alpn)
        }
    }

    pub fn build(&self) -> BuiltHello {
        let mut body = Vec::new();
        body.extend_from_slice(&self.legacy_version.to_be_bytes());
        let legacy_version_end = HANDSHAKE_HEADER + body.len();
        body.extend_from_slice(&[0x42; 32]);
        push_u8_prefixed(&mut body, &self.session_id);
        let mut suites: Vec<u16> = Vec::new();
        if self.grease {
            suites.push(GREASE);
        }
        suites.extend([0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f]);
        push_u16_prefixed(&mut body, &be_u16s(&suites));
        push_u8_prefixed(&mut body, &[0]);

        let mut extensions = Vec::new();
        let mut ends = Ends::default();
        let offset = |extensions: &Vec<u8>, body: &Vec<u8>| {
            HANDSHAKE_HEADER + body.len() + 2 + extensions.len()
        };
        if self.grease {
            push_extension(&mut extensions, GREASE, &[]);
        }
        for (kind, data) in &self.leading_extensions {
            push_extension(&mut extensions, *kind, data);
        }
        if let Some(sni) = &self.sni {
            let mut name = vec![0];
            push_u16_prefixed(&mut name, sni.as_bytes());
            let mut list = Vec::new();
            push_u16_prefixed(&mut list, &name);
            push_extension(&mut extensions, 0, &list);
            ends.sni = Some(offset(&extensions, &body));
        }
        push_extension(&mut extensions, 10, &u16_list(&[0x001d, 0x0017]));
        if !self.alpn.is_empty() {
            let mut names = Vec::new();
            for protocol in &self.alpn {
                push_u8_prefixed(&mut names, protocol.as_bytes());
            }
            let mut list = Vec::new();
            push_u16_prefixed(&mut list, &names);
            push_extension(&mut extensions, 16, &list);
            ends.alpn = Some(offset(&extensions, &body));
        }
        push_extension(&mut extensions, 13, &u16_list(&[0x0403, 0x0804, 0x0401]));
        if !self.supported_versions.is_empty() {
            let mut versions = Vec::new();
            if self.grease {
                versions.push(GREASE);
            }
            versions.extend(&self.supported_versions);
            let mut list = Vec::new();
            push_u8_prefixed(&mut list, &be_u16s(&versions));
            push_extension(&mut extensions, 43, &list);
            ends.supported_versions = Some(offset(&extensions, &body));
            let mut share = Vec::new();
            share.extend_from_slice(&0x001du16.to_be_bytes());
            push_u16_prefixed(&mut share, &[0x33; 32]);
            let mut shares = Vec::new();
            push_u16_prefixed(&mut shares, &share);
            push_extension(&mut extensions, 51, &shares);
        }
        if let Some(pad_to) = self.pad_to {
            let so_far = HANDSHAKE_HEADER + body.len() + 2 + extensions.len() + 4;
            push_extension(&mut extensions, 21, &vec![0; pad_to.saturating_sub(so_far)]);
        }
        push_u16_prefixed(&mut body, &extensions);

        let mut handshake = vec![1];
        let len = u32::try_from(body.len()).expect("test hello fits in u24");
        handshake.extend_from_slice(&len.to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);

        let record_size = self.record_size.unwrap_or(handshake.len()).max(1);
        let mut bytes = Vec::new();
        for fragment in handshake.chunks(record_size) {
            bytes.extend_from_slice(&[22, 3, 1]);
            push_u16_prefixed(&mut bytes, fragment);
        }
        // An offset just past handshake byte `end - 1`, counting the record headers
        // before it.
        let in_bytes = |end: usize| end + RECORD_HEADER * ((end - 1) / record_size + 1);
        BuiltHello {
            bytes,
            legacy_version_end: in_bytes(legacy_version_end),
            sni_end: ends.sni.map(in_bytes),
            alpn_end: ends.alpn.map(in_bytes),
            supported_versions_end: ends.supported_versions.map(in_bytes),
        }
    }
}

const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;

#[derive(Default)]
struct Ends {
    sni: Option<usize>,
    alpn: Option<usize>,
    supported_versions: Option<usize>,
}

fn be_u16s(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn u16_list(values: &[u16]) -> Vec<u8> {
    let mut list = Vec::new();
    push_u16_prefixed(&mut list, &be_u16s(values));
    list
}

fn push_u8_prefixed(out: &mut Vec<u8>, data: &[u8]) {
    out.push(u8::try_from(data.len()).expect("test field fits in u8"));
    out.extend_from_slice(data);
}

fn push_u16_prefixed(out: &mut Vec<u8>, data: &[u8]) {
    let len = u16::try_from(data.len()).expect("test field fits in u16");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

fn push_extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    push_u16_prefixed(out, data);
}

/// Decodes a hex fixture: `#` starts a comment line, whitespace is ignored.
pub(super) fn hex_fixture(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.bytes().filter(|b| !b.is_ascii_whitespace()))
        .collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii hex");
            u8::from_str_radix(pair, 16).expect("hex digit pair")
        })
        .collect()
}

pub(super) const OPENSSL_TLS13_ISTIO_HTTP: &str =
    include_str!("../../tests/fixtures/wire/openssl_tls13_istio_http.hex");
pub(super) const OPENSSL_TLS12_ISTIO_TCP: &str =
    include_str!("../../tests/fixtures/wire/openssl_tls12_istio_tcp.hex");
pub(super) const CURL_TLS13_PLAIN: &str =
    include_str!("../../tests/fixtures/wire/curl_tls13_plain.hex");
