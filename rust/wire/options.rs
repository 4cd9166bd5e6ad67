//! Send-option bits (Tomcat `Channel.SEND_OPTIONS_*`) and their textual form, as accepted in
//! configuration (`"async"`, `"use_ack,sync"`, `"8"`, ...).

use super::WireError;

/// Payload is raw bytes (no Java serialization).
pub const BYTE_MESSAGE: u32 = 0x0001;
/// Receiver answers with an ACK; the sender waits for it.
pub const USE_ACK: u32 = 0x0002;
/// With USE_ACK: ACK only after processing; a processing error gives a NACK.
pub const SYNCHRONIZED_ACK: u32 = 0x0004;
/// Queued and sent by the dispatch interceptor's workers; the caller does not wait.
pub const ASYNCHRONOUS: u32 = 0x0008;
/// Documented by Tomcat as not implemented; carried for compatibility.
pub const SECURE: u32 = 0x0010;
/// Send by datagram to the member's UDP port.
pub const UDP: u32 = 0x0020;
/// Broadcast through the membership service's multicast socket.
pub const MULTICAST: u32 = 0x0040;
/// Interceptor bit: message body is gzip-compressed (Tomcat GzipInterceptor's flag).
pub const COMPRESSED_GZIP: u32 = 0x0100;
/// Interceptor bit: message body is LZ4-compressed (tribes extension).
pub const COMPRESSED_LZ4: u32 = 0x0200;

/// Names and bits, in the order [`send_options_to_string`] lists them (Tomcat's order for the
/// low four bits: `async, sync, use_ack, byte`).
const NAMED: [(&str, u32); 7] = [
    ("multicast", MULTICAST),
    ("udp", UDP),
    ("secure", SECURE),
    ("async", ASYNCHRONOUS),
    ("sync", SYNCHRONIZED_ACK),
    ("use_ack", USE_ACK),
    ("byte", BYTE_MESSAGE),
];

/// Bit for one option name (case-insensitive, long and short forms).
fn bit_for_name(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "async" | "asynchronous" => ASYNCHRONOUS,
        "use_ack" => USE_ACK,
        "sync" | "synchronized_ack" => SYNCHRONIZED_ACK | USE_ACK,
        "byte" | "byte_message" => BYTE_MESSAGE,
        "multicast" => MULTICAST,
        "secure" => SECURE,
        "udp" => UDP,
        _ => return None,
    })
}

/// Parses a non-negative integer (decimal or `0x` hex) into the bits; `None` if `s` is not numeric.
fn parse_int(s: &str, input: &str) -> Option<Result<u32, WireError>> {
    let bad = |reason| {
        Some(Err(WireError::InvalidSendOptions {
            input: input.to_owned(),
            reason,
        }))
    };
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    let unsigned = digits.strip_prefix(['-', '+']).unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if digits.starts_with('-') {
        return bad("negative send options");
    }
    match u32::from_str_radix(unsigned, radix) {
        Ok(v) => Some(Ok(v)),
        Err(_) => bad("integer too large for send options"),
    }
}

/// Parses send options: a non-negative integer (decimal or `0x` hex), or a comma separated list of
/// names (`async|asynchronous`, `use_ack`, `sync|synchronized_ack`, `byte|byte_message`,
/// `multicast`, `secure`, `udp`; integers may appear in the list too). `sync` implies `use_ack`.
/// Unknown names are an error naming the culprit.
pub fn parse_send_options(s: &str) -> Result<u32, WireError> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(WireError::InvalidSendOptions {
            input: s.to_owned(),
            reason: "empty send options",
        });
    }
    let mut bits = 0u32;
    for token in trimmed.split(',') {
        let token = token.trim();
        if let Some(v) = parse_int(token, s) {
            bits |= v?;
        } else if let Some(b) = bit_for_name(token) {
            bits |= b;
        } else {
            return Err(WireError::UnknownSendOption(token.to_owned()));
        }
    }
    Ok(bits)
}

/// Renders bits as names (`15` → `"async, sync, use_ack, byte"`); bits without a name are appended
/// as one hex integer (e.g. `"async, 0x100"`), and `0` is `"0"`. Parses back with
/// [`parse_send_options`] (up to `sync` implying `use_ack`).
#[must_use]
pub fn send_options_to_string(bits: u32) -> String {
    let mut parts: Vec<String> = NAMED
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| (*n).to_owned())
        .collect();
    let named_mask = NAMED.iter().fold(0, |m, (_, b)| m | b);
    let rest = bits & !named_mask;
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    if parts.is_empty() {
        return "0".to_owned();
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bit_values() {
        assert_eq!(
            [
                BYTE_MESSAGE,
                USE_ACK,
                SYNCHRONIZED_ACK,
                ASYNCHRONOUS,
                SECURE,
                UDP,
                MULTICAST
            ],
            [1, 2, 4, 8, 16, 32, 64]
        );
        assert_eq!((COMPRESSED_GZIP, COMPRESSED_LZ4), (0x100, 0x200));
    }

    #[test]
    fn names() {
        let cases = [
            ("sync", 6),
            ("synchronized_ack", 6),
            ("use_ack,sync", 6),
            ("use_ack", 2),
            ("async", 8),
            ("asynchronous", 8),
            ("async,use_ack", 10),
            (" async , use_ack ", 10),
            ("ASYNC", 8),
            ("byte", 1),
            ("byte_message", 1),
            ("multicast", 64),
            ("secure", 16),
            ("udp", 32),
            ("async,sync,use_ack,byte", 15),
            ("8", 8),
            ("0", 0),
            (" 6 ", 6),
            ("+2", 2),
            ("0x100", 0x100),
            ("async,256", 0x108),
            ("4294967295", u32::MAX),
        ];
        for (s, want) in cases {
            assert_eq!(parse_send_options(s), Ok(want), "{s:?}");
        }
    }

    #[test]
    fn errors() {
        let e = parse_send_options("async,fast").unwrap_err();
        assert_eq!(e, WireError::UnknownSendOption("fast".into()));
        assert!(e.to_string().contains("\"fast\""), "{e}");
        assert!(matches!(
            parse_send_options("-1"),
            Err(WireError::InvalidSendOptions { .. })
        ));
        assert!(parse_send_options("-1")
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(matches!(
            parse_send_options("4294967296"),
            Err(WireError::InvalidSendOptions { .. })
        ));
        assert!(matches!(
            parse_send_options(""),
            Err(WireError::InvalidSendOptions { .. })
        ));
        assert!(matches!(
            parse_send_options("async,,use_ack"),
            Err(WireError::UnknownSendOption(s)) if s.is_empty()
        ));
        assert!(matches!(
            parse_send_options("1.5"),
            Err(WireError::UnknownSendOption(_))
        ));
    }

    #[test]
    fn to_string() {
        assert_eq!(send_options_to_string(15), "async, sync, use_ack, byte");
        assert_eq!(send_options_to_string(6), "sync, use_ack");
        assert_eq!(send_options_to_string(8), "async");
        assert_eq!(send_options_to_string(0), "0");
        assert_eq!(send_options_to_string(0x109), "async, byte, 0x100");
        assert_eq!(send_options_to_string(0x80), "0x80");
    }

    proptest! {
        #[test]
        fn to_string_parses_back(bits in any::<u32>()) {
            let s = send_options_to_string(bits);
            let want = if bits & SYNCHRONIZED_ACK != 0 { bits | USE_ACK } else { bits };
            prop_assert_eq!(parse_send_options(&s), Ok(want));
        }

        #[test]
        fn integers_parse(bits in any::<u32>()) {
            prop_assert_eq!(parse_send_options(&bits.to_string()), Ok(bits));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,40}") {
            let _ = parse_send_options(&s);
        }
    }
}
