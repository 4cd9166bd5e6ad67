//! The attribute value codec: msgpack, plus a few extension types for the Python values msgpack
//! has no word for. Safe by construction: decoding builds plain data, never runs code chosen by
//! the bytes (unlike pickle), so attribute bytes from the network can be decoded as they come.
//!
//! # Format
//! What msgpack has is written as plain msgpack: nil, bool, int (the smallest of positive/negative
//! fixint, uint8..uint64, int8..int64), float (always float64; float32 is read too), str (UTF-8),
//! bin (Python `bytes`), array (a Python `list`) and map (a `dict`; keys may be any value, not only
//! strings). The rest are msgpack *ext* values whose type numbers are listed in [`Ext`]; a generic
//! msgpack decoder still reads them, as ext values. In the other direction, this decoder reads what
//! any msgpack encoder writes, non-minimal forms included, except ext types missing from [`Ext`].
//!
//! # Time zones
//! An aware `datetime` or `time` keeps its UTC *offset* (whole seconds, plus microseconds when
//! there are any), not the name of its time zone: `datetime(2024, 7, 1, 12, tzinfo=ZoneInfo(
//! "Europe/Paris"))` comes back as the same instant and wall clock with `tzinfo=timezone(
//! timedelta(hours=2))`. Arithmetic across a DST change on the decoded value uses that fixed
//! offset. An offset of zero comes back as `timezone.utc`. `fold` is kept.
//!
//! # Limits
//! Decoding checks every declared length against the bytes that remain before it allocates
//! anything, refuses nesting deeper than [`MAX_DEPTH`] containers, validates every field of the
//! ext payloads (dates, times, offsets, decimal strings, UTF-8) and returns a [`CodecError`] on
//! any input: it never panics. Encoding refuses values nested deeper than [`MAX_DEPTH`] and
//! lengths that msgpack cannot express (over `u32::MAX`).
//!
//! The decoder is written once, generic over a [`Build`] target: [`decode`] builds a [`Value`];
//! the Python bindings build Python objects straight from the bytes with the same parser. The
//! `write_*` functions are likewise shared by [`encode`] and the bindings' direct encoder.

/// The deepest nesting of containers (list, tuple, set, frozenset, dict) accepted by [`encode`]
/// and [`decode`]: a top-level list holding lists 63 levels deep is fine, one level more is not.
/// It bounds the recursion of both, so hostile bytes cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// The msgpack ext type numbers of the codec, in one table. Payloads are big-endian.
///
/// | code | Python type | payload |
/// |---:|---|---|
/// | 1 | `int` outside −2⁶³ .. 2⁶⁴−1 | two's-complement big-endian bytes, minimal length |
/// | 2 | `tuple` | a msgpack array of the items |
/// | 3 | `set` | a msgpack array of the items (the Python encoder sorts them by their bytes) |
/// | 4 | `frozenset` | as `set` |
/// | 5 | `datetime` | year u16, month u8 (bit 7: fold), day, hour, minute, second u8, microsecond u24 (10 bytes); aware: then the UTC offset (see below) |
/// | 6 | `date` | year u16, month u8, day u8 (4 bytes) |
/// | 7 | `time` | hour u8 (bit 7: fold), minute, second u8, microsecond u24 (6 bytes); aware: then the UTC offset |
/// | 8 | `timedelta` | days i32, seconds u32 (0..86399), microseconds u32 (0..999999) (12 bytes) |
/// | 9 | `uuid.UUID` | its 16 bytes |
/// | 10 | `decimal.Decimal` | its `str()`, ASCII (`"9.99"`, `"-1E+3"`, `"NaN"`, `"-Infinity"`) |
/// | −1 | msgpack timestamp | read only (other encoders write it): an aware UTC `datetime`, nanoseconds truncated to microseconds |
///
/// UTC offset: i32 seconds, rounded down, then u32 microseconds (0..999999) only when they are
/// not zero; so an aware datetime is 14 bytes (18 with sub-second offsets). The offset is
/// strictly between −24 h and +24 h, as Python requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum Ext {
    /// An `int` too large for int64/uint64.
    BigInt = 1,
    /// A `tuple`.
    Tuple = 2,
    /// A `set`.
    Set = 3,
    /// A `frozenset`.
    FrozenSet = 4,
    /// A `datetime.datetime`, naive or with a fixed UTC offset.
    DateTime = 5,
    /// A `datetime.date`.
    Date = 6,
    /// A `datetime.time`, naive or with a fixed UTC offset.
    Time = 7,
    /// A `datetime.timedelta`.
    TimeDelta = 8,
    /// A `uuid.UUID`.
    Uuid = 9,
    /// A `decimal.Decimal`.
    Decimal = 10,
    /// The msgpack spec's timestamp (read only).
    Timestamp = -1,
}

impl Ext {
    /// The type number written on the wire.
    pub const fn code(self) -> i8 {
        self as i8
    }

    /// The ext type for a wire type number, if the codec knows it.
    pub const fn from_code(code: i8) -> Option<Ext> {
        Some(match code {
            1 => Ext::BigInt,
            2 => Ext::Tuple,
            3 => Ext::Set,
            4 => Ext::FrozenSet,
            5 => Ext::DateTime,
            6 => Ext::Date,
            7 => Ext::Time,
            8 => Ext::TimeDelta,
            9 => Ext::Uuid,
            10 => Ext::Decimal,
            -1 => Ext::Timestamp,
            _ => return None,
        })
    }
}

/// Why bytes could not be decoded, or a value encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes end inside a value; `needed` bytes (from the start of the value's bytes) would
    /// be required to go on.
    #[error("truncated value: need at least {needed} bytes")]
    Truncated {
        /// Total byte count required to make progress.
        needed: usize,
    },
    /// The bytes are not a valid encoding.
    #[error("invalid value at byte {offset}: {reason}")]
    Invalid {
        /// Where the faulty item starts.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An ext type this codec does not know.
    #[error("unknown msgpack ext type {code} at byte {offset}")]
    UnknownExt {
        /// Where the ext value starts.
        offset: usize,
        /// Its type number.
        code: i8,
    },
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("containers nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A complete value followed by more bytes.
    #[error("{extra} unexpected bytes after the value at byte {offset}")]
    Trailing {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        extra: usize,
    },
    /// A length msgpack cannot express (more than `u32::MAX` bytes or items).
    #[error("a {what} of length {len} is too large for msgpack (max {max})", max = u32::MAX)]
    TooLarge {
        /// "str", "bin", "array", "map" or "ext".
        what: &'static str,
        /// The length.
        len: usize,
    },
}

fn invalid(offset: usize, reason: &'static str) -> CodecError {
    CodecError::Invalid { offset, reason }
}

// ------------------------------------------------------------------------------------------------
// Values
// ------------------------------------------------------------------------------------------------

/// A UTC offset: `seconds` (rounded down) plus `microseconds` (0..999999), so −5 h is
/// `{ seconds: -18000, microseconds: 0 }` and −1 µs is `{ seconds: -1, microseconds: 999999 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UtcOffset {
    /// Whole seconds, rounded towards minus infinity.
    pub seconds: i32,
    /// Remaining microseconds, 0..999999.
    pub microseconds: u32,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset {
        seconds: 0,
        microseconds: 0,
    };

    /// The offset from a total in microseconds (no range check).
    pub fn from_micros(total: i64) -> UtcOffset {
        UtcOffset {
            seconds: total.div_euclid(1_000_000) as i32,
            microseconds: total.rem_euclid(1_000_000) as u32,
        }
    }

    /// The offset in microseconds.
    pub fn total_micros(self) -> i64 {
        i64::from(self.seconds) * 1_000_000 + i64::from(self.microseconds)
    }

    fn check(self) -> Result<(), &'static str> {
        const DAY_US: i64 = 86_400 * 1_000_000;
        if self.microseconds > 999_999 {
            return Err("UTC offset microseconds out of range");
        }
        let t = self.total_micros();
        if t <= -DAY_US || t >= DAY_US {
            return Err("UTC offset must be strictly between -24 and 24 hours");
        }
        Ok(())
    }

    fn payload_len(self) -> usize {
        if self.microseconds == 0 {
            4
        } else {
            8
        }
    }

    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seconds.to_be_bytes());
        if self.microseconds != 0 {
            out.extend_from_slice(&self.microseconds.to_be_bytes());
        }
    }

    /// Reads the optional offset that follows a datetime or time payload of `fixed` bytes.
    fn read_tail(tail: &[u8]) -> Result<Option<UtcOffset>, &'static str> {
        let off = match tail.len() {
            0 => return Ok(None),
            4 => UtcOffset {
                seconds: i32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]),
                microseconds: 0,
            },
            8 => UtcOffset {
                seconds: i32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]),
                microseconds: u32::from_be_bytes([tail[4], tail[5], tail[6], tail[7]]),
            },
            _ => return Err("bad payload length"),
        };
        off.check()?;
        Ok(Some(off))
    }
}

/// A `datetime.datetime`: wall-clock fields, `fold`, and the UTC offset when aware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// 1..=9999.
    pub year: u16,
    /// 1..=12.
    pub month: u8,
    /// 1..=days in the month.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
    /// 0..=999999.
    pub microsecond: u32,
    /// Python's `fold` (which of two ambiguous wall-clock times is meant).
    pub fold: bool,
    /// None for a naive datetime.
    pub offset: Option<UtcOffset>,
}

/// A `datetime.date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Date {
    /// 1..=9999.
    pub year: u16,
    /// 1..=12.
    pub month: u8,
    /// 1..=days in the month.
    pub day: u8,
}

/// A `datetime.time`: fields, `fold`, and the UTC offset when aware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time {
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
    /// 0..=999999.
    pub microsecond: u32,
    /// Python's `fold`.
    pub fold: bool,
    /// None for a naive time.
    pub offset: Option<UtcOffset>,
}

/// A `datetime.timedelta`, in Python's normalised form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeDelta {
    /// −999999999..=999999999.
    pub days: i32,
    /// 0..=86399.
    pub seconds: u32,
    /// 0..=999999.
    pub microseconds: u32,
}

fn is_leap(year: u16) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

fn check_date(year: u16, month: u8, day: u8) -> Result<(), &'static str> {
    if !(1..=9999).contains(&year) {
        return Err("year out of range 1..9999");
    }
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range for the month");
    }
    Ok(())
}

fn check_time(hour: u8, minute: u8, second: u8, microsecond: u32) -> Result<(), &'static str> {
    if hour > 23 || minute > 59 || second > 59 || microsecond > 999_999 {
        return Err("time field out of range");
    }
    Ok(())
}

fn u24(b: &[u8]) -> u32 {
    u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
}

impl DateTime {
    fn payload_len(&self) -> usize {
        10 + self.offset.map_or(0, UtcOffset::payload_len)
    }

    /// Parses and validates an [`Ext::DateTime`] payload.
    pub fn from_payload(p: &[u8]) -> Result<DateTime, &'static str> {
        if p.len() < 10 {
            return Err("bad payload length");
        }
        let dt = DateTime {
            year: u16::from_be_bytes([p[0], p[1]]),
            month: p[2] & 0x7f,
            day: p[3],
            hour: p[4],
            minute: p[5],
            second: p[6],
            microsecond: u24(&p[7..10]),
            fold: p[2] & 0x80 != 0,
            offset: UtcOffset::read_tail(&p[10..])?,
        };
        check_date(dt.year, dt.month, dt.day)?;
        check_time(dt.hour, dt.minute, dt.second, dt.microsecond)?;
        Ok(dt)
    }

    /// Parses a msgpack timestamp (ext −1: 4, 8 or 12 bytes) as an aware UTC datetime.
    pub fn from_timestamp_payload(p: &[u8]) -> Result<DateTime, &'static str> {
        let (seconds, nanos): (i64, u32) = match p.len() {
            4 => (i64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]])), 0),
            8 => {
                let v = u64::from_be_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
                ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
            }
            12 => (
                i64::from_be_bytes([p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]]),
                u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
            ),
            _ => return Err("bad timestamp length"),
        };
        if nanos > 999_999_999 {
            return Err("timestamp nanoseconds out of range");
        }
        // 0001-01-01T00:00:00 .. 9999-12-31T23:59:59, Python's datetime range.
        if !(-62_135_596_800..=253_402_300_799).contains(&seconds) {
            return Err("timestamp outside years 1..9999");
        }
        let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        Ok(DateTime {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
            microsecond: nanos / 1000,
            fold: false,
            offset: Some(UtcOffset::UTC),
        })
    }

    /// The first 10 bytes of the payload: the wall clock and fold, without the offset. (The
    /// same bytes as the state in CPython's pickles of a datetime.)
    pub fn wall_clock_bytes(&self) -> [u8; 10] {
        let [y0, y1] = self.year.to_be_bytes();
        let [_, u0, u1, u2] = self.microsecond.to_be_bytes();
        let month = self.month | if self.fold { 0x80 } else { 0 };
        [
            y0,
            y1,
            month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            u0,
            u1,
            u2,
        ]
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.wall_clock_bytes());
        if let Some(off) = self.offset {
            off.write(out);
        }
    }
}

/// Year, month, day of a count of days since 1970-01-01 (H. Hinnant's `civil_from_days`);
/// the caller keeps `days` within years 1..9999.
fn civil_from_days(days: i64) -> (u16, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as u16, month as u8, day as u8)
}

impl Date {
    /// Parses and validates an [`Ext::Date`] payload.
    pub fn from_payload(p: &[u8]) -> Result<Date, &'static str> {
        let [y0, y1, month, day] = *p else {
            return Err("bad payload length");
        };
        let d = Date {
            year: u16::from_be_bytes([y0, y1]),
            month,
            day,
        };
        check_date(d.year, d.month, d.day)?;
        Ok(d)
    }
}

impl Time {
    fn payload_len(&self) -> usize {
        6 + self.offset.map_or(0, UtcOffset::payload_len)
    }

    /// Parses and validates an [`Ext::Time`] payload.
    pub fn from_payload(p: &[u8]) -> Result<Time, &'static str> {
        if p.len() < 6 {
            return Err("bad payload length");
        }
        let t = Time {
            hour: p[0] & 0x7f,
            minute: p[1],
            second: p[2],
            microsecond: u24(&p[3..6]),
            fold: p[0] & 0x80 != 0,
            offset: UtcOffset::read_tail(&p[6..])?,
        };
        check_time(t.hour, t.minute, t.second, t.microsecond)?;
        Ok(t)
    }

    /// The first 6 bytes of the payload: the clock and fold, without the offset. (The same
    /// bytes as the state in CPython's pickles of a time.)
    pub fn clock_bytes(&self) -> [u8; 6] {
        let [_, u0, u1, u2] = self.microsecond.to_be_bytes();
        let hour = self.hour | if self.fold { 0x80 } else { 0 };
        [hour, self.minute, self.second, u0, u1, u2]
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.clock_bytes());
        if let Some(off) = self.offset {
            off.write(out);
        }
    }
}

impl TimeDelta {
    /// Parses and validates an [`Ext::TimeDelta`] payload.
    pub fn from_payload(p: &[u8]) -> Result<TimeDelta, &'static str> {
        let p: &[u8; 12] = p.try_into().map_err(|_| "bad payload length")?;
        let td = TimeDelta {
            days: i32::from_be_bytes([p[0], p[1], p[2], p[3]]),
            seconds: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            microseconds: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        };
        if !(-999_999_999..=999_999_999).contains(&td.days)
            || td.seconds > 86_399
            || td.microseconds > 999_999
        {
            return Err("timedelta field out of range");
        }
        Ok(td)
    }
}

/// True for the strings `decimal.Decimal()` accepts in their plain ASCII form (what `str()` of a
/// Decimal gives): `[sign] (digits [. [digits]] | . digits) [(e|E) [sign] digits]`, or
/// `[sign] Inf | Infinity | NaN [digits] | sNaN [digits]` (any case).
pub fn is_decimal_str(s: &str) -> bool {
    let b = s.as_bytes();
    let b = match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    };
    let digits = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
    if b.first().is_some_and(|c| !c.is_ascii_digit() && *c != b'.') {
        if b.eq_ignore_ascii_case(b"inf") || b.eq_ignore_ascii_case(b"infinity") {
            return true;
        }
        for nan in [&b"nan"[..], b"snan"] {
            if b.len() >= nan.len() && b[..nan.len()].eq_ignore_ascii_case(nan) {
                let rest = &b[nan.len()..];
                return digits(rest) == rest.len();
            }
        }
        return false;
    }
    let int = digits(b);
    let mut i = int;
    let mut frac = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac = digits(&b[i..]);
        i += frac;
    }
    if int + frac == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = digits(&b[i..]);
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// A decoded attribute value: the Python types the codec supports, as plain Rust data.
///
/// Ints are kept in the smallest variant that holds them: [`Value::Int`] for −2⁶³..2⁶³−1,
/// [`Value::UInt`] only above that, [`Value::BigInt`] only outside both (use
/// [`Value::big_int`] to build one). [`decode`] always returns this form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    Nil,
    /// `bool`.
    Bool(bool),
    /// An `int` that fits in i64.
    Int(i64),
    /// An `int` above `i64::MAX` that fits in u64.
    UInt(u64),
    /// An `int` outside the 64-bit ranges: two's-complement big-endian bytes, minimal length.
    BigInt(Vec<u8>),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `list`.
    List(Vec<Value>),
    /// `tuple`.
    Tuple(Vec<Value>),
    /// `set`; the items are written in this order.
    Set(Vec<Value>),
    /// `frozenset`; the items are written in this order.
    FrozenSet(Vec<Value>),
    /// `dict`, in insertion order; keys may be any value.
    Map(Vec<(Value, Value)>),
    /// `datetime.datetime`.
    DateTime(DateTime),
    /// `datetime.date`.
    Date(Date),
    /// `datetime.time`.
    Time(Time),
    /// `datetime.timedelta`.
    TimeDelta(TimeDelta),
    /// `uuid.UUID`.
    Uuid([u8; 16]),
    /// `decimal.Decimal`, as its `str()`.
    Decimal(String),
}

impl Value {
    /// An int from two's-complement big-endian bytes (any length; empty is 0), in the smallest
    /// variant that holds it.
    pub fn big_int(be: &[u8]) -> Value {
        match classify_int(be) {
            IntKind::Int(v) => Value::Int(v),
            IntKind::UInt(v) => Value::UInt(v),
            IntKind::Big(min) => Value::BigInt(min.to_vec()),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Writing
// ------------------------------------------------------------------------------------------------

fn len32(what: &'static str, len: usize) -> Result<u32, CodecError> {
    u32::try_from(len).map_err(|_| CodecError::TooLarge { what, len })
}

/// Writes nil (`None`).
pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// Writes a bool.
pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

/// Writes an unsigned int in its smallest msgpack form.
pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= u64::from(u8::MAX) {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u64::from(u16::MAX) {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Writes a signed int in its smallest msgpack form (non-negative values as unsigned ones).
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as u8);
    } else if v >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, v as u8]);
    } else if v >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Writes an int given as two's-complement big-endian bytes: as a msgpack int when it fits in
/// 64 bits, else as [`Ext::BigInt`] with the minimal bytes.
pub fn write_big_int(out: &mut Vec<u8>, be: &[u8]) -> Result<(), CodecError> {
    match classify_int(be) {
        IntKind::Int(v) => write_int(out, v),
        IntKind::UInt(v) => write_uint(out, v),
        IntKind::Big(min) => {
            write_ext_header(out, Ext::BigInt, min.len())?;
            out.extend_from_slice(min);
        }
    }
    Ok(())
}

/// Writes a float as float64.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

/// Writes a str.
pub fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), CodecError> {
    let n = len32("str", s.len())?;
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= u32::from(u8::MAX) {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= u32::from(u16::MAX) {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Writes bytes as msgpack bin.
pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) -> Result<(), CodecError> {
    let n = len32("bin", b.len())?;
    if n <= u32::from(u8::MAX) {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= u32::from(u16::MAX) {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(b);
    Ok(())
}

/// Writes an array header for `len` items (the items follow).
pub fn write_array_len(out: &mut Vec<u8>, len: usize) -> Result<(), CodecError> {
    let n = len32("array", len)?;
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u32::from(u16::MAX) {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

/// Writes a map header for `len` entries (key, value, key, value … follow).
pub fn write_map_len(out: &mut Vec<u8>, len: usize) -> Result<(), CodecError> {
    let n = len32("map", len)?;
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= u32::from(u16::MAX) {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

/// The smallest ext header for a payload of `len` bytes: (bytes, how many of them are used).
fn ext_header(ext: Ext, len: usize) -> Result<([u8; 6], usize), CodecError> {
    let t = ext.code() as u8;
    let n = len32("ext", len)?;
    Ok(match n {
        1 => ([0xd4, t, 0, 0, 0, 0], 2),
        2 => ([0xd5, t, 0, 0, 0, 0], 2),
        4 => ([0xd6, t, 0, 0, 0, 0], 2),
        8 => ([0xd7, t, 0, 0, 0, 0], 2),
        16 => ([0xd8, t, 0, 0, 0, 0], 2),
        n if n <= u32::from(u8::MAX) => ([0xc7, n as u8, t, 0, 0, 0], 3),
        n if n <= u32::from(u16::MAX) => {
            let [a, b] = (n as u16).to_be_bytes();
            ([0xc8, a, b, t, 0, 0], 4)
        }
        n => {
            let [a, b, c, d] = n.to_be_bytes();
            ([0xc9, a, b, c, d, t], 6)
        }
    })
}

/// Writes the header of an ext value whose payload of `len` bytes follows.
pub fn write_ext_header(out: &mut Vec<u8>, ext: Ext, len: usize) -> Result<(), CodecError> {
    let (h, n) = ext_header(ext, len)?;
    out.extend_from_slice(&h[..n]);
    Ok(())
}

/// Where an ext value of not-yet-known length starts; see [`begin_ext`].
#[derive(Debug)]
#[must_use = "finish the ext value with end_ext"]
pub struct ExtStart(usize);

/// Starts an ext value whose payload is written next (a tuple's or set's array); [`end_ext`]
/// then writes the smallest header and moves the payload up behind it.
pub fn begin_ext(out: &mut Vec<u8>) -> ExtStart {
    let at = out.len();
    out.extend_from_slice(&[0; 6]);
    ExtStart(at)
}

/// Finishes the ext value started by [`begin_ext`], with type `ext`.
pub fn end_ext(out: &mut Vec<u8>, start: ExtStart, ext: Ext) -> Result<(), CodecError> {
    let at = start.0;
    let payload = out.len() - at - 6;
    let (h, n) = ext_header(ext, payload)?;
    if n < 6 {
        out.copy_within(at + 6.., at + n);
        out.truncate(at + n + payload);
    }
    out[at..at + n].copy_from_slice(&h[..n]);
    Ok(())
}

/// Writes a datetime as [`Ext::DateTime`].
pub fn write_datetime(out: &mut Vec<u8>, v: &DateTime) -> Result<(), CodecError> {
    write_ext_header(out, Ext::DateTime, v.payload_len())?;
    v.write_payload(out);
    Ok(())
}

/// Writes a date as [`Ext::Date`].
pub fn write_date(out: &mut Vec<u8>, v: &Date) -> Result<(), CodecError> {
    write_ext_header(out, Ext::Date, 4)?;
    out.extend_from_slice(&v.year.to_be_bytes());
    out.extend_from_slice(&[v.month, v.day]);
    Ok(())
}

/// Writes a time as [`Ext::Time`].
pub fn write_time(out: &mut Vec<u8>, v: &Time) -> Result<(), CodecError> {
    write_ext_header(out, Ext::Time, v.payload_len())?;
    v.write_payload(out);
    Ok(())
}

/// Writes a timedelta as [`Ext::TimeDelta`].
pub fn write_timedelta(out: &mut Vec<u8>, v: &TimeDelta) -> Result<(), CodecError> {
    write_ext_header(out, Ext::TimeDelta, 12)?;
    out.extend_from_slice(&v.days.to_be_bytes());
    out.extend_from_slice(&v.seconds.to_be_bytes());
    out.extend_from_slice(&v.microseconds.to_be_bytes());
    Ok(())
}

/// Writes a UUID as [`Ext::Uuid`].
pub fn write_uuid(out: &mut Vec<u8>, v: &[u8; 16]) -> Result<(), CodecError> {
    write_ext_header(out, Ext::Uuid, 16)?;
    out.extend_from_slice(v);
    Ok(())
}

/// Writes a Decimal, given as its `str()`, as [`Ext::Decimal`].
pub fn write_decimal(out: &mut Vec<u8>, s: &str) -> Result<(), CodecError> {
    write_ext_header(out, Ext::Decimal, s.len())?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends the encoding of `v` to `out`. Fails only for nesting deeper than [`MAX_DEPTH`] or a
/// length over `u32::MAX`; `out` may then hold a partial value.
pub fn encode(v: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
    encode_at(v, out, 0)
}

fn encode_seq(items: &[Value], out: &mut Vec<u8>, depth: usize) -> Result<(), CodecError> {
    write_array_len(out, items.len())?;
    items.iter().try_for_each(|i| encode_at(i, out, depth + 1))
}

fn encode_at(v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), CodecError> {
    let container = |ext: Ext, items: &[Value], out: &mut Vec<u8>| {
        let start = begin_ext(out);
        encode_seq(items, out, depth)?;
        end_ext(out, start, ext)
    };
    if matches!(
        v,
        Value::List(_) | Value::Tuple(_) | Value::Set(_) | Value::FrozenSet(_) | Value::Map(_)
    ) && depth >= MAX_DEPTH
    {
        return Err(CodecError::TooDeep);
    }
    match v {
        Value::Nil => write_nil(out),
        Value::Bool(b) => write_bool(out, *b),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::BigInt(b) => write_big_int(out, b)?,
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s)?,
        Value::Bytes(b) => write_bin(out, b)?,
        Value::List(items) => encode_seq(items, out, depth)?,
        Value::Tuple(items) => container(Ext::Tuple, items, out)?,
        Value::Set(items) => container(Ext::Set, items, out)?,
        Value::FrozenSet(items) => container(Ext::FrozenSet, items, out)?,
        Value::Map(entries) => {
            write_map_len(out, entries.len())?;
            for (k, v) in entries {
                encode_at(k, out, depth + 1)?;
                encode_at(v, out, depth + 1)?;
            }
        }
        Value::DateTime(d) => write_datetime(out, d)?,
        Value::Date(d) => write_date(out, d)?,
        Value::Time(t) => write_time(out, t)?,
        Value::TimeDelta(t) => write_timedelta(out, t)?,
        Value::Uuid(u) => write_uuid(out, u)?,
        Value::Decimal(s) => write_decimal(out, s)?,
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Reading
// ------------------------------------------------------------------------------------------------

/// One msgpack item as read by [`Reader`]: a scalar, a container header, or an ext value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token<'a> {
    /// nil.
    Nil,
    /// true / false.
    Bool(bool),
    /// Any int that fits in i64.
    Int(i64),
    /// A uint64 above `i64::MAX`.
    UInt(u64),
    /// float32 (widened) or float64.
    Float(f64),
    /// A str, its UTF-8 not checked yet.
    Str(RawStr<'a>),
    /// A bin.
    Bin(&'a [u8]),
    /// An array header; that many items follow.
    Array(usize),
    /// A map header; that many key/value pairs follow.
    Map(usize),
    /// An ext value: type number and payload.
    Ext(i8, &'a [u8]),
}

/// The bytes of a msgpack str, not yet checked to be UTF-8, so that a builder whose own
/// string constructor validates (Python's does) need not check twice. Use [`RawStr::to_str`]
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStr<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> RawStr<'a> {
    /// The bytes, which must still be checked to be UTF-8 before they are used as text.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The text, or an [`CodecError::Invalid`] error when it is not UTF-8.
    pub fn to_str(&self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes).map_err(|_| invalid(self.offset, "str is not valid UTF-8"))
    }

    /// Where the str starts in the input.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// A cursor over msgpack bytes that yields [`Token`]s, checking every length against the bytes
/// that remain.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` within the outermost input, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// Offset of the next byte within the outermost input.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() {
            return Err(CodecError::Truncated {
                needed: self.base + self.pos.saturating_add(n),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let s = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn len8(&mut self) -> Result<usize, CodecError> {
        Ok(usize::from(self.array::<1>()?[0]))
    }

    fn len16(&mut self) -> Result<usize, CodecError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn len32(&mut self) -> Result<usize, CodecError> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| CodecError::TooLarge {
            what: "length",
            len: usize::MAX,
        })
    }

    fn str(&mut self, offset: usize, n: usize) -> Result<Token<'a>, CodecError> {
        Ok(Token::Str(self.raw_str(offset, n)?))
    }

    fn raw_str(&mut self, offset: usize, n: usize) -> Result<RawStr<'a>, CodecError> {
        Ok(RawStr {
            bytes: self.take(n)?,
            offset,
        })
    }

    /// Reads the next item if it is a str; otherwise reads nothing and gives None. (Cheaper than
    /// a token read and undone, for map keys, which are mostly strs.)
    pub fn next_str(&mut self) -> Result<Option<RawStr<'a>>, CodecError> {
        let start = self.offset();
        let n = match self.buf.get(self.pos) {
            Some(&b @ 0xa0..=0xbf) => {
                self.pos += 1;
                usize::from(b & 0x1f)
            }
            Some(0xd9) => {
                self.pos += 1;
                self.len8()?
            }
            Some(0xda) => {
                self.pos += 1;
                self.len16()?
            }
            Some(0xdb) => {
                self.pos += 1;
                self.len32()?
            }
            _ => return Ok(None),
        };
        self.raw_str(start, n).map(Some)
    }

    fn ext(&mut self, n: usize) -> Result<Token<'a>, CodecError> {
        let t = self.array::<1>()?[0] as i8;
        Ok(Token::Ext(t, self.take(n)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can still follow, before the
    /// caller allocates room for them.
    pub fn check_count(&self, count: usize, min_size: usize) -> Result<(), CodecError> {
        let need = count.saturating_mul(min_size);
        if need > self.remaining() {
            return Err(CodecError::Truncated {
                needed: self.offset().saturating_add(need),
            });
        }
        Ok(())
    }

    /// Reads the next item.
    pub fn next_token(&mut self) -> Result<Token<'a>, CodecError> {
        let start = self.offset();
        let b = self.array::<1>()?[0];
        Ok(match b {
            0x00..=0x7f => Token::Int(i64::from(b)),
            0x80..=0x8f => Token::Map(usize::from(b & 0x0f)),
            0x90..=0x9f => Token::Array(usize::from(b & 0x0f)),
            0xa0..=0xbf => return self.str(start, usize::from(b & 0x1f)),
            0xc0 => Token::Nil,
            0xc1 => return Err(invalid(start, "reserved byte 0xc1")),
            0xc2 => Token::Bool(false),
            0xc3 => Token::Bool(true),
            0xc4 => {
                let n = self.len8()?;
                Token::Bin(self.take(n)?)
            }
            0xc5 => {
                let n = self.len16()?;
                Token::Bin(self.take(n)?)
            }
            0xc6 => {
                let n = self.len32()?;
                Token::Bin(self.take(n)?)
            }
            0xc7 => {
                let n = self.len8()?;
                return self.ext(n);
            }
            0xc8 => {
                let n = self.len16()?;
                return self.ext(n);
            }
            0xc9 => {
                let n = self.len32()?;
                return self.ext(n);
            }
            0xca => Token::Float(f64::from(f32::from_be_bytes(self.array()?))),
            0xcb => Token::Float(f64::from_be_bytes(self.array()?)),
            0xcc => Token::Int(i64::from(self.array::<1>()?[0])),
            0xcd => Token::Int(i64::from(u16::from_be_bytes(self.array()?))),
            0xce => Token::Int(i64::from(u32::from_be_bytes(self.array()?))),
            0xcf => {
                let v = u64::from_be_bytes(self.array()?);
                match i64::try_from(v) {
                    Ok(i) => Token::Int(i),
                    Err(_) => Token::UInt(v),
                }
            }
            0xd0 => Token::Int(i64::from(self.array::<1>()?[0] as i8)),
            0xd1 => Token::Int(i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Token::Int(i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Token::Int(i64::from_be_bytes(self.array()?)),
            0xd4 => return self.ext(1),
            0xd5 => return self.ext(2),
            0xd6 => return self.ext(4),
            0xd7 => return self.ext(8),
            0xd8 => return self.ext(16),
            0xd9 => {
                let n = self.len8()?;
                return self.str(start, n);
            }
            0xda => {
                let n = self.len16()?;
                return self.str(start, n);
            }
            0xdb => {
                let n = self.len32()?;
                return self.str(start, n);
            }
            0xdc => Token::Array(self.len16()?),
            0xdd => Token::Array(self.len32()?),
            0xde => Token::Map(self.len16()?),
            0xdf => Token::Map(self.len32()?),
            0xe0..=0xff => Token::Int(i64::from(b as i8)),
        })
    }
}

/// The target of the generic decoder: one constructor per kind of value. [`decode`] uses
/// [`ValueBuilder`]; the Python bindings build Python objects with the same parser.
pub trait Build {
    /// What a decoded value becomes.
    type Out;
    /// The error type; codec errors convert into it.
    type Error: From<CodecError>;
    /// `None`.
    fn nil(&mut self) -> Result<Self::Out, Self::Error>;
    /// A bool.
    fn bool(&mut self, v: bool) -> Result<Self::Out, Self::Error>;
    /// An int within i64.
    fn int(&mut self, v: i64) -> Result<Self::Out, Self::Error>;
    /// An int above `i64::MAX` within u64.
    fn uint(&mut self, v: u64) -> Result<Self::Out, Self::Error>;
    /// An int outside the 64-bit ranges, as minimal two's-complement big-endian bytes.
    fn big_int(&mut self, be: &[u8]) -> Result<Self::Out, Self::Error>;
    /// A float.
    fn float(&mut self, v: f64) -> Result<Self::Out, Self::Error>;
    /// A str; the builder must check that it is UTF-8.
    fn str(&mut self, v: RawStr<'_>) -> Result<Self::Out, Self::Error>;
    /// A str that is a dict key (keys repeat a lot: a builder may reuse objects for them).
    fn key_str(&mut self, v: RawStr<'_>) -> Result<Self::Out, Self::Error> {
        self.str(v)
    }
    /// A bytes value.
    fn bytes(&mut self, v: &[u8]) -> Result<Self::Out, Self::Error>;
    /// A list.
    fn list(&mut self, items: Vec<Self::Out>) -> Result<Self::Out, Self::Error>;
    /// A tuple.
    fn tuple(&mut self, items: Vec<Self::Out>) -> Result<Self::Out, Self::Error>;
    /// A set.
    fn set(&mut self, items: Vec<Self::Out>) -> Result<Self::Out, Self::Error>;
    /// A frozenset.
    fn frozenset(&mut self, items: Vec<Self::Out>) -> Result<Self::Out, Self::Error>;
    /// A dict of `len` entries: the builder calls `entry` exactly `len` times, and gets them in
    /// the order read.
    fn map<F>(&mut self, len: usize, entry: F) -> Result<Self::Out, Self::Error>
    where
        F: FnMut(&mut Self) -> Result<(Self::Out, Self::Out), Self::Error>;
    /// A datetime.
    fn datetime(&mut self, v: DateTime) -> Result<Self::Out, Self::Error>;
    /// A date.
    fn date(&mut self, v: Date) -> Result<Self::Out, Self::Error>;
    /// A time.
    fn time(&mut self, v: Time) -> Result<Self::Out, Self::Error>;
    /// A timedelta.
    fn timedelta(&mut self, v: TimeDelta) -> Result<Self::Out, Self::Error>;
    /// A UUID.
    fn uuid(&mut self, v: [u8; 16]) -> Result<Self::Out, Self::Error>;
    /// A Decimal, given as a string [`is_decimal_str`] accepted.
    fn decimal(&mut self, v: &str) -> Result<Self::Out, Self::Error>;
}

/// Decodes one value that must fill `data` exactly.
pub fn decode(data: &[u8]) -> Result<Value, CodecError> {
    decode_with(data, &mut ValueBuilder)
}

/// Decodes one value that must fill `data` exactly, building it with `b`.
pub fn decode_with<B: Build>(data: &[u8], b: &mut B) -> Result<B::Out, B::Error> {
    let mut r = Reader::new(data);
    let v = read_value(&mut r, b, 0)?;
    if r.remaining() > 0 {
        return Err(CodecError::Trailing {
            offset: r.offset(),
            extra: r.remaining(),
        }
        .into());
    }
    Ok(v)
}

fn enter(depth: usize) -> Result<(), CodecError> {
    if depth >= MAX_DEPTH {
        return Err(CodecError::TooDeep);
    }
    Ok(())
}

fn read_items<B: Build>(
    r: &mut Reader<'_>,
    b: &mut B,
    n: usize,
    depth: usize,
) -> Result<Vec<B::Out>, B::Error> {
    r.check_count(n, 1)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(read_value(r, b, depth + 1)?);
    }
    Ok(items)
}

fn read_value<B: Build>(r: &mut Reader<'_>, b: &mut B, depth: usize) -> Result<B::Out, B::Error> {
    let start = r.offset();
    match r.next_token()? {
        Token::Nil => b.nil(),
        Token::Bool(v) => b.bool(v),
        Token::Int(v) => b.int(v),
        Token::UInt(v) => b.uint(v),
        Token::Float(v) => b.float(v),
        Token::Str(s) => b.str(s),
        Token::Bin(v) => b.bytes(v),
        Token::Array(n) => {
            enter(depth)?;
            let items = read_items(r, b, n, depth)?;
            b.list(items)
        }
        Token::Map(n) => {
            enter(depth)?;
            r.check_count(n, 2)?;
            b.map(n, |b| {
                let k = read_key(r, b, depth + 1)?;
                let v = read_value(r, b, depth + 1)?;
                Ok((k, v))
            })
        }
        Token::Ext(code, payload) => {
            let payload_at = r.offset() - payload.len();
            read_ext(b, code, payload, start, payload_at, depth)
        }
    }
}

/// Reads a map key: strs go to [`Build::key_str`], anything else to [`read_value`].
fn read_key<B: Build>(r: &mut Reader<'_>, b: &mut B, depth: usize) -> Result<B::Out, B::Error> {
    match r.next_str()? {
        Some(s) => b.key_str(s),
        None => read_value(r, b, depth),
    }
}

fn read_ext<B: Build>(
    b: &mut B,
    code: i8,
    p: &[u8],
    start: usize,
    payload_at: usize,
    depth: usize,
) -> Result<B::Out, B::Error> {
    let bad = |reason| invalid(start, reason);
    let Some(ext) = Ext::from_code(code) else {
        return Err(CodecError::UnknownExt {
            offset: start,
            code,
        }
        .into());
    };
    match ext {
        Ext::BigInt => {
            if p.is_empty() {
                return Err(bad("empty big int").into());
            }
            match classify_int(p) {
                IntKind::Int(v) => b.int(v),
                IntKind::UInt(v) => b.uint(v),
                IntKind::Big(min) => b.big_int(min),
            }
        }
        Ext::Tuple | Ext::Set | Ext::FrozenSet => {
            enter(depth)?;
            let mut sub = Reader {
                buf: p,
                pos: 0,
                base: payload_at,
            };
            let Token::Array(n) = sub.next_token()? else {
                return Err(bad("tuple or set payload is not an array").into());
            };
            let items = read_items(&mut sub, b, n, depth)?;
            if sub.remaining() > 0 {
                return Err(bad("bytes after the array in a tuple or set payload").into());
            }
            match ext {
                Ext::Tuple => b.tuple(items),
                Ext::Set => b.set(items),
                _ => b.frozenset(items),
            }
        }
        Ext::DateTime => b.datetime(DateTime::from_payload(p).map_err(bad)?),
        Ext::Timestamp => b.datetime(DateTime::from_timestamp_payload(p).map_err(bad)?),
        Ext::Date => b.date(Date::from_payload(p).map_err(bad)?),
        Ext::Time => b.time(Time::from_payload(p).map_err(bad)?),
        Ext::TimeDelta => b.timedelta(TimeDelta::from_payload(p).map_err(bad)?),
        Ext::Uuid => b.uuid(
            p.try_into()
                .map_err(|_| bad("UUID payload is not 16 bytes"))?,
        ),
        Ext::Decimal => match std::str::from_utf8(p) {
            Ok(s) if is_decimal_str(s) => b.decimal(s),
            _ => Err(bad("not a decimal number").into()),
        },
    }
}

/// An int from two's-complement big-endian bytes, in the smallest form that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntKind<'a> {
    /// Fits in i64.
    Int(i64),
    /// Above `i64::MAX`, fits in u64.
    UInt(u64),
    /// Outside both: the minimal two's-complement bytes (sign-extension bytes removed).
    Big(&'a [u8]),
}

/// Classifies two's-complement big-endian bytes (empty means 0).
pub fn classify_int(be: &[u8]) -> IntKind<'_> {
    let Some(&first) = be.first() else {
        return IntKind::Int(0);
    };
    let neg = first & 0x80 != 0;
    let pad = if neg { 0xff } else { 0x00 };
    // Drop sign-extension bytes: a leading pad byte is redundant when the next byte's top bit
    // already carries the sign.
    let mut i = 0;
    while i + 1 < be.len() && be[i] == pad && (be[i + 1] & 0x80 != 0) == neg {
        i += 1;
    }
    let min = &be[i..];
    if min.len() <= 8 {
        let mut buf = [pad; 8];
        buf[8 - min.len()..].copy_from_slice(min);
        return IntKind::Int(i64::from_be_bytes(buf));
    }
    if min.len() == 9 && min[0] == 0 {
        let mut buf = [0; 8];
        buf.copy_from_slice(&min[1..]);
        return IntKind::UInt(u64::from_be_bytes(buf));
    }
    IntKind::Big(min)
}

/// Builds [`Value`]s; used by [`decode`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ValueBuilder;

impl Build for ValueBuilder {
    type Out = Value;
    type Error = CodecError;
    fn nil(&mut self) -> Result<Value, CodecError> {
        Ok(Value::Nil)
    }
    fn bool(&mut self, v: bool) -> Result<Value, CodecError> {
        Ok(Value::Bool(v))
    }
    fn int(&mut self, v: i64) -> Result<Value, CodecError> {
        Ok(Value::Int(v))
    }
    fn uint(&mut self, v: u64) -> Result<Value, CodecError> {
        Ok(Value::UInt(v))
    }
    fn big_int(&mut self, be: &[u8]) -> Result<Value, CodecError> {
        Ok(Value::BigInt(be.to_vec()))
    }
    fn float(&mut self, v: f64) -> Result<Value, CodecError> {
        Ok(Value::Float(v))
    }
    fn str(&mut self, v: RawStr<'_>) -> Result<Value, CodecError> {
        Ok(Value::Str(v.to_str()?.to_owned()))
    }
    fn bytes(&mut self, v: &[u8]) -> Result<Value, CodecError> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn list(&mut self, items: Vec<Value>) -> Result<Value, CodecError> {
        Ok(Value::List(items))
    }
    fn tuple(&mut self, items: Vec<Value>) -> Result<Value, CodecError> {
        Ok(Value::Tuple(items))
    }
    fn set(&mut self, items: Vec<Value>) -> Result<Value, CodecError> {
        Ok(Value::Set(items))
    }
    fn frozenset(&mut self, items: Vec<Value>) -> Result<Value, CodecError> {
        Ok(Value::FrozenSet(items))
    }
    fn map<F>(&mut self, len: usize, mut entry: F) -> Result<Value, CodecError>
    where
        F: FnMut(&mut Self) -> Result<(Value, Value), CodecError>,
    {
        let mut entries = Vec::with_capacity(len);
        for _ in 0..len {
            entries.push(entry(self)?);
        }
        Ok(Value::Map(entries))
    }
    fn datetime(&mut self, v: DateTime) -> Result<Value, CodecError> {
        Ok(Value::DateTime(v))
    }
    fn date(&mut self, v: Date) -> Result<Value, CodecError> {
        Ok(Value::Date(v))
    }
    fn time(&mut self, v: Time) -> Result<Value, CodecError> {
        Ok(Value::Time(v))
    }
    fn timedelta(&mut self, v: TimeDelta) -> Result<Value, CodecError> {
        Ok(Value::TimeDelta(v))
    }
    fn uuid(&mut self, v: [u8; 16]) -> Result<Value, CodecError> {
        Ok(Value::Uuid(v))
    }
    fn decimal(&mut self, v: &str) -> Result<Value, CodecError> {
        Ok(Value::Decimal(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out).expect("encodable");
        out
    }

    #[test]
    fn next_str_reads_strs_of_every_width_and_leaves_anything_else() {
        for (bytes, text) in [
            (&b"\xa3abc"[..], &b"abc"[..]),
            (b"\xa0", b""),
            (b"\xd9\x02hi", b"hi"),
            (b"\xda\x00\x02hi", b"hi"),
            (b"\xdb\x00\x00\x00\x02hi", b"hi"),
        ] {
            let mut r = Reader::new(bytes);
            let s = r.next_str().expect("a str").expect("read as a str");
            assert_eq!((s.as_bytes(), s.offset(), r.remaining()), (text, 0, 0));
        }
        for bytes in [&b"\x01"[..], b"\x90", b"\x80", b"\xc4\x01a", b"\xc0", b""] {
            let mut r = Reader::new(bytes);
            assert_eq!(r.next_str(), Ok(None));
            assert_eq!(r.remaining(), bytes.len(), "nothing read from {bytes:02x?}");
        }
        for bytes in [
            &b"\xa3ab"[..],
            b"\xd9",
            b"\xda\x00",
            b"\xdb\x00\x00\x00\x05abcd",
        ] {
            let err = Reader::new(bytes).next_str();
            assert!(
                matches!(err, Err(CodecError::Truncated { .. })),
                "{bytes:02x?}: {err:?}"
            );
        }
    }

    /// Structural equality with floats compared bit for bit (NaN == NaN, 0.0 != -0.0).
    fn same(a: &Value, b: &Value) -> bool {
        let all = |x: &[Value], y: &[Value]| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        };
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::List(x), Value::List(y))
            | (Value::Tuple(x), Value::Tuple(y))
            | (Value::Set(x), Value::Set(y))
            | (Value::FrozenSet(x), Value::FrozenSet(y)) => all(x, y),
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
            }
            _ => a == b,
        }
    }

    fn offset() -> impl Strategy<Value = UtcOffset> {
        prop_oneof![
            (-86_399i64..=86_399).prop_map(|s| UtcOffset::from_micros(s * 1_000_000)),
            (-86_399_999_999i64..=86_399_999_999).prop_map(UtcOffset::from_micros),
        ]
    }

    fn date() -> impl Strategy<Value = Date> {
        (1u16..=9999, 1u8..=12, 1u8..=31).prop_map(|(year, month, day)| Date {
            year,
            month,
            day: day.min(days_in_month(year, month)),
        })
    }

    fn time() -> impl Strategy<Value = Time> {
        (
            0u8..24,
            0u8..60,
            0u8..60,
            0u32..1_000_000,
            any::<bool>(),
            proptest::option::of(offset()),
        )
            .prop_map(|(hour, minute, second, microsecond, fold, offset)| Time {
                hour,
                minute,
                second,
                microsecond,
                fold,
                offset,
            })
    }

    fn decimal() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?[0-9]{1,30}(\\.[0-9]{0,10})?(E[+-]?[0-9]{1,4})?",
            "-?(Infinity|s?NaN[0-9]{0,3})",
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::big_int(&b)),
            any::<f64>().prop_map(Value::Float),
            any::<String>().prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
            (date(), time()).prop_map(|(d, t)| Value::DateTime(DateTime {
                year: d.year,
                month: d.month,
                day: d.day,
                hour: t.hour,
                minute: t.minute,
                second: t.second,
                microsecond: t.microsecond,
                fold: t.fold,
                offset: t.offset,
            })),
            date().prop_map(Value::Date),
            time().prop_map(Value::Time),
            (-999_999_999i32..=999_999_999, 0u32..86_400, 0u32..1_000_000).prop_map(
                |(days, seconds, microseconds)| Value::TimeDelta(TimeDelta {
                    days,
                    seconds,
                    microseconds
                })
            ),
            any::<[u8; 16]>().prop_map(Value::Uuid),
            decimal().prop_map(Value::Decimal),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 64, 8, |inner| {
            let items = proptest::collection::vec(inner.clone(), 0..8);
            prop_oneof![
                items.clone().prop_map(Value::List),
                items.clone().prop_map(Value::Tuple),
                items.clone().prop_map(Value::Set),
                items.prop_map(Value::FrozenSet),
                proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in value()) {
            let bytes = enc(&v);
            let back = decode(&bytes).expect("decodes");
            prop_assert!(same(&v, &back), "{v:?} came back as {back:?}");
            prop_assert_eq!(enc(&back), bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = decode(&bytes) {
                // Whatever decodes re-encodes and decodes to the same value.
                let again = decode(&enc(&v)).expect("re-encoded value decodes");
                prop_assert!(same(&v, &again));
            }
        }

        #[test]
        fn mutated_encodings_never_panic(v in value(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = enc(&v);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = decode(&bytes);
            let _ = decode(&bytes[..i]);
        }

        #[test]
        fn ints_take_the_smallest_form(v in any::<i64>()) {
            let bytes = enc(&Value::Int(v));
            let expected = match v {
                -32..=127 => 1,
                -128..=255 => 2,
                -32768..=65535 => 3,
                -2_147_483_648..=4_294_967_295 => 5,
                _ => 9,
            };
            prop_assert_eq!(bytes.len(), expected);
        }

        #[test]
        fn big_int_bytes_are_normalised(pad in 0usize..4, v in any::<i64>()) {
            let fill = if v < 0 { 0xff } else { 0 };
            let mut be = vec![fill; pad];
            be.extend_from_slice(&v.to_be_bytes());
            prop_assert_eq!(Value::big_int(&be), Value::Int(v));
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).expect("hex")
    }

    #[test]
    fn plain_msgpack_decodes() {
        // The msgpack spec's example, {"compact": true, "schema": 0}.
        let v = decode(&hex("82 a7 636f6d70616374 c3 a6 736368656d61 00")).unwrap();
        assert_eq!(
            v,
            Value::Map(vec![
                (Value::Str("compact".into()), Value::Bool(true)),
                (Value::Str("schema".into()), Value::Int(0)),
            ])
        );
        // Non-minimal forms other encoders write: uint32 1, str8 "a", float32 1.5, array16 of
        // one nil, map32 {1: -1 as int64}, bin8.
        let v = decode(&hex(
            "96 ce00000001 d90161 ca3fc00000 dc0001c0 df00000001 01 d3ffffffffffffffff c40100",
        ))
        .unwrap();
        assert_eq!(
            v,
            Value::List(vec![
                Value::Int(1),
                Value::Str("a".into()),
                Value::Float(1.5),
                Value::List(vec![Value::Nil]),
                Value::Map(vec![(Value::Int(1), Value::Int(-1))]),
                Value::Bytes(vec![0]),
            ])
        );
        // uint64 max and int64 min.
        assert_eq!(
            decode(&hex("cf ffffffffffffffff")).unwrap(),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            decode(&hex("d3 8000000000000000")).unwrap(),
            Value::Int(i64::MIN)
        );
    }

    #[test]
    fn msgpack_timestamps_decode_as_utc() {
        let utc = |year, month, day, hour, minute, second, microsecond| {
            Value::DateTime(DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                microsecond,
                fold: false,
                offset: Some(UtcOffset::UTC),
            })
        };
        // timestamp32: 2024-01-02T03:04:05Z = 1704164645.
        assert_eq!(
            decode(&hex("d6ff 6593 7d25")).unwrap(),
            utc(2024, 1, 2, 3, 4, 5, 0)
        );
        // timestamp64: same second, 123456789 ns.
        let data64 = (123_456_789u64 << 34) | 1_704_164_645;
        let mut b = hex("d7ff");
        b.extend_from_slice(&data64.to_be_bytes());
        assert_eq!(decode(&b).unwrap(), utc(2024, 1, 2, 3, 4, 5, 123_456));
        // timestamp96 before the epoch: -1 s = 1969-12-31T23:59:59Z.
        let b = hex("c70c ff 00000000 ffffffffffffffff");
        assert_eq!(decode(&b).unwrap(), utc(1969, 12, 31, 23, 59, 59, 0));
        // timestamp96 at the year 1 limit and past the year 9999 limit.
        let mut b = hex("c70c ff 00000000");
        b.extend_from_slice(&(-62_135_596_800i64).to_be_bytes());
        assert_eq!(decode(&b).unwrap(), utc(1, 1, 1, 0, 0, 0, 0));
        let mut b = hex("c70c ff 00000000");
        b.extend_from_slice(&253_402_300_800i64.to_be_bytes());
        assert!(matches!(decode(&b), Err(CodecError::Invalid { .. })));
    }

    #[test]
    fn ext_layouts_are_as_documented() {
        let dt = DateTime {
            year: 2024,
            month: 7,
            day: 1,
            hour: 12,
            minute: 30,
            second: 15,
            microsecond: 250_000,
            fold: true,
            offset: Some(UtcOffset::from_micros(-5 * 3_600_000_000)),
        };
        // ext8 len 14 type 5: 07e8, 07|0x80, 01, 0c, 1e, 0f, 03d090, ffffb9b0.
        assert_eq!(
            enc(&Value::DateTime(dt)),
            hex("c7 0e 05 07e8 87 01 0c 1e 0f 03d090 ffffb9b0")
        );
        let naive = DateTime {
            offset: None,
            fold: false,
            ..dt
        };
        assert_eq!(
            enc(&Value::DateTime(naive)),
            hex("c7 0a 05 07e8 07 01 0c 1e 0f 03d090")
        );
        let date = Date {
            year: 2024,
            month: 2,
            day: 29,
        };
        assert_eq!(enc(&Value::Date(date)), hex("d6 06 07e8 02 1d"));
        let uuid = [0xab; 16];
        assert_eq!(enc(&Value::Uuid(uuid))[..2], hex("d8 09")[..]);
        assert_eq!(enc(&Value::Decimal("9.99".into())), hex("d6 0a 392e3939"));
        // A tuple (1, 2): fixext2 is not possible (payload 3 bytes), so ext8.
        assert_eq!(
            enc(&Value::Tuple(vec![Value::Int(1), Value::Int(2)])),
            hex("c7 03 02 920102")
        );
        // An empty set: payload 0x90 (1 byte) → fixext1.
        assert_eq!(enc(&Value::Set(vec![])), hex("d4 03 90"));
        // 2**64 → ext 1 with 9 bytes.
        assert_eq!(
            enc(&Value::big_int(&hex("010000000000000000"))),
            hex("c7 09 01 010000000000000000")
        );
        // -2**63 - 1 → ext 1 with ff7fffffffffffffff.
        assert_eq!(
            enc(&Value::big_int(&hex("ff7fffffffffffffff"))),
            hex("c7 09 01 ff7fffffffffffffff")
        );
        let td = TimeDelta {
            days: -1,
            seconds: 86_399,
            microseconds: 999_999,
        };
        assert_eq!(
            enc(&Value::TimeDelta(td)),
            hex("c7 0c 08 ffffffff 0001517f 000f423f")
        );
    }

    #[test]
    fn large_containers_round_trip() {
        // Past the fixext, ext8 and ext16 limits for container payloads, and array16/32.
        for n in [15usize, 16, 300, 70_000] {
            let items: Vec<Value> = (0..n as i64).map(Value::Int).collect();
            for v in [
                Value::List(items.clone()),
                Value::Tuple(items.clone()),
                Value::Set(items.clone()),
            ] {
                assert!(same(&decode(&enc(&v)).unwrap(), &v), "n = {n}");
            }
            let map = Value::Map(items.iter().cloned().map(|k| (k, Value::Nil)).collect());
            assert!(same(&decode(&enc(&map)).unwrap(), &map));
        }
        let long = "x".repeat(70_000);
        assert_eq!(
            decode(&enc(&Value::Str(long.clone()))).unwrap(),
            Value::Str(long)
        );
        let dec = "1".repeat(300);
        assert_eq!(
            decode(&enc(&Value::Decimal(dec.clone()))).unwrap(),
            Value::Decimal(dec)
        );
    }

    fn nested(depth: usize) -> Value {
        let mut v = Value::Nil;
        for i in 0..depth {
            v = match i % 3 {
                0 => Value::List(vec![v]),
                1 => Value::Tuple(vec![v]),
                _ => Value::Map(vec![(Value::Int(0), v)]),
            };
        }
        v
    }

    #[test]
    fn depth_is_limited_both_ways() {
        let ok = nested(MAX_DEPTH);
        assert!(same(&decode(&enc(&ok)).unwrap(), &ok));
        let mut out = Vec::new();
        assert_eq!(
            encode(&nested(MAX_DEPTH + 1), &mut out),
            Err(CodecError::TooDeep)
        );
        // Hand-made bytes: 65 nested arrays, and a million (no stack overflow).
        let mut deep = vec![0x91; MAX_DEPTH];
        deep.push(0xc0);
        assert!(decode(&deep).is_ok());
        deep.insert(0, 0x91);
        assert_eq!(decode(&deep), Err(CodecError::TooDeep));
        let mut huge = vec![0x91; 1_000_000];
        huge.push(0xc0);
        assert_eq!(decode(&huge), Err(CodecError::TooDeep));
        // Nested tuples through ext payloads count too.
        let mut t = hex("c0");
        for _ in 0..=MAX_DEPTH {
            let mut next = Vec::new();
            write_ext_header(&mut next, Ext::Tuple, t.len() + 1).unwrap();
            next.push(0x91);
            next.extend_from_slice(&t);
            t = next;
        }
        assert_eq!(decode(&t), Err(CodecError::TooDeep));
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        // array32 / map32 / str32 / bin32 / ext32 claiming 4 G items or bytes in a few bytes.
        for b in [
            "dd ffffffff",
            "df ffffffff",
            "db ffffffff",
            "c6 ffffffff",
            "c9 ffffffff 02",
        ] {
            assert!(
                matches!(decode(&hex(b)), Err(CodecError::Truncated { .. })),
                "{b}"
            );
        }
        // A tuple whose array claims more items than its payload holds.
        assert!(matches!(
            decode(&hex("d5 02 9f c0")),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let cases = [
            ("", "empty"),
            ("c1", "reserved byte"),
            ("a2 ff fe", "bad UTF-8"),
            ("c0 c0", "trailing"),
            ("d4 7f 00", "unknown ext"),
            ("c7 00 01", "empty big int"),
            ("d4 02 c0", "tuple payload not an array"),
            ("d5 02 90 c0", "bytes after the tuple array"),
            ("d6 06 07e8 02 1e", "30 February"),
            ("d6 06 0000 01 01", "year 0"),
            ("c7 0a 05 07e8 0d 01 00 00 00 000000", "month 13"),
            ("c7 0a 05 07e8 01 01 18 00 00 000000", "hour 24"),
            ("c7 0a 05 07e8 01 01 00 00 00 0f4240", "microsecond 1000000"),
            (
                "c7 0e 05 07e8 01 01 00 00 00 000000 00015180",
                "offset +24h",
            ),
            (
                "c7 12 05 07e8 01 01 00 00 00 000000 00000000 000f4240",
                "offset µs 10**6",
            ),
            (
                "c7 0b 05 07e8 01 01 00 00 00 000000 00",
                "bad datetime length",
            ),
            (
                "c7 0c 08 3b9aca00 00000000 00000000",
                "timedelta days 10**9",
            ),
            (
                "c7 0c 08 00000000 00015180 00000000",
                "timedelta seconds 86400",
            ),
            ("d5 09 0000", "short UUID"),
            ("d6 0a 312e2e32", "decimal 1..2"),
            ("d4 0a 2e", "decimal ."),
            ("d5 0a 3145", "decimal 1E"),
            ("d6 0a 31203220", "decimal with spaces"),
            ("d6 ff 0000", "timestamp of 4 bytes but fixext4 cut"),
        ];
        for (h, what) in cases {
            assert!(decode(&hex(h)).is_err(), "{what} should not decode");
        }
    }

    #[test]
    fn decimal_strings() {
        for ok in [
            "0", "-0", "9.99", "1.", ".5", "1E+3", "-1e-7", "Infinity", "-inf", "NaN", "sNaN123",
            "+5",
        ] {
            assert!(is_decimal_str(ok), "{ok}");
        }
        for bad in [
            "", "-", ".", "e5", "1e", "1e+", "1.2.3", "NaN1.5", "1_000", " 1", "١",
        ] {
            assert!(!is_decimal_str(bad), "{bad}");
        }
    }

    #[test]
    fn offsets_round_down() {
        assert_eq!(
            UtcOffset::from_micros(-1),
            UtcOffset {
                seconds: -1,
                microseconds: 999_999
            }
        );
        assert_eq!(UtcOffset::from_micros(-1).total_micros(), -1);
    }
}
