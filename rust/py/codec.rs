//! Python objects ↔ the session value codec ([`crate::session::codec`]): `encode_value` and
//! `decode_value` in `tribes._core`.
//!
//! Both go straight between Python objects and bytes, without building a [`Value`] tree in
//! between (that is what makes them several times faster than pickle); they share the format
//! code with the pure codec: the `write_*` functions on the way out, the generic decoder with a
//! [`Build`] target that makes Python objects on the way in.
//!
//! Types are checked exactly (`type(x) is dict`, not `isinstance`), `bool` before `int`: a
//! subclass (`OrderedDict`, `defaultdict`, a named tuple, an `IntEnum`, a `datetime` subclass)
//! would come back as its base type and lose what the subclass adds, so it is a `TypeError`
//! that says which base it derives from and how to convert it. Sets and frozensets are written
//! with their items sorted by their encoded bytes, so equal sets always encode to equal bytes
//! (the session layer compares bytes to detect changes).
//!
//! [`Value`]: crate::session::codec::Value

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple,
};
use pyo3::PyTypeInfo;

use crate::session::codec::{
    self as c, Build, CodecError, Date, DateTime, Ext, RawStr, Time, TimeDelta, UtcOffset,
    MAX_DEPTH,
};

use super::datetime_capi::{self, DateTimeApi};

pyo3::import_exception!(tribes.errors, ProtocolError);

/// The supported types, as the error messages list them.
const ALLOWED: &str = "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, \
                       datetime, date, time, timedelta, UUID, Decimal";

/// The classes the codec handles that are not built into PyO3, imported on first use.
struct Types {
    datetime: Py<PyAny>,
    date: Py<PyAny>,
    time: Py<PyAny>,
    timedelta: Py<PyAny>,
    timezone: Py<PyAny>,
    utc: Py<PyAny>,
    uuid: Py<PyAny>,
    decimal: Py<PyAny>,
    int: Py<PyAny>,
    /// The datetime C API, when it checked out (see [`datetime_capi`]).
    capi: Option<&'static DateTimeApi>,
}

static TYPES: PyOnceLock<Types> = PyOnceLock::new();

fn types(py: Python<'_>) -> PyResult<&'static Types> {
    TYPES.get_or_try_init(py, || {
        let dt = py.import("datetime")?;
        let timezone = dt.getattr("timezone")?;
        Ok(Types {
            datetime: dt.getattr("datetime")?.unbind(),
            date: dt.getattr("date")?.unbind(),
            time: dt.getattr("time")?.unbind(),
            timedelta: dt.getattr("timedelta")?.unbind(),
            utc: timezone.getattr("utc")?.unbind(),
            timezone: timezone.unbind(),
            uuid: py.import("uuid")?.getattr("UUID")?.unbind(),
            decimal: py.import("decimal")?.getattr("Decimal")?.unbind(),
            int: py.get_type::<PyInt>().into_any().unbind(),
            capi: datetime_capi::get(py),
        })
    })
}

// ------------------------------------------------------------------------------------------------
// Encoding
// ------------------------------------------------------------------------------------------------

/// Where in the value a failure happened, innermost last once reversed.
enum Seg {
    Index(usize),
    Key(Py<PyAny>),
    SetItem,
    DictKey,
}

enum Kind {
    Unsupported(Py<PyAny>),
    TooDeep,
    Surrogates,
    Codec(CodecError),
    Py(PyErr),
}

/// An encoding failure and the path to it (pushed while unwinding, so outermost last). Boxed,
/// so that the `Ok` of every `Result<(), Failure>` the encoder returns fits in a register.
struct Failure(Box<FailureAt>);

struct FailureAt {
    kind: Kind,
    path: Vec<Seg>,
}

impl Failure {
    fn at(mut self, seg: Seg) -> Failure {
        self.0.path.push(seg);
        self
    }
}

impl From<Kind> for Failure {
    fn from(kind: Kind) -> Self {
        Failure(Box::new(FailureAt {
            kind,
            path: Vec::new(),
        }))
    }
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Kind::Py(e).into()
    }
}

impl From<CodecError> for Failure {
    fn from(e: CodecError) -> Self {
        Kind::Codec(e).into()
    }
}

/// `repr(obj)`, cut to a readable length.
fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj
        .repr()
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".to_owned());
    if r.chars().count() > 40 {
        format!("{}…", r.chars().take(39).collect::<String>())
    } else {
        r
    }
}

/// Which supported type `obj` derives from, and how to convert it.
fn subclass_hint(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Option<String> {
    let t = types(py).ok()?;
    let bases: [(&Bound<'_, PyAny>, &str, &str); 16] = [
        (&py.get_type::<PyBool>().into_any(), "bool", "bool(value)"),
        (&py.get_type::<PyInt>().into_any(), "int", "int(value)"),
        (
            &py.get_type::<PyFloat>().into_any(),
            "float",
            "float(value)",
        ),
        (&py.get_type::<PyString>().into_any(), "str", "str(value)"),
        (
            &py.get_type::<PyBytes>().into_any(),
            "bytes",
            "bytes(value)",
        ),
        (&py.get_type::<PyDict>().into_any(), "dict", "dict(value)"),
        (&py.get_type::<PyList>().into_any(), "list", "list(value)"),
        (
            &py.get_type::<PyTuple>().into_any(),
            "tuple",
            "tuple(value)",
        ),
        (&py.get_type::<PySet>().into_any(), "set", "set(value)"),
        (
            &py.get_type::<PyFrozenSet>().into_any(),
            "frozenset",
            "frozenset(value)",
        ),
        (t.datetime.bind(py), "datetime", "a plain datetime"),
        (t.date.bind(py), "date", "a plain date"),
        (t.time.bind(py), "time", "a plain time"),
        (t.timedelta.bind(py), "timedelta", "a plain timedelta"),
        (t.uuid.bind(py), "UUID", "uuid.UUID(int=value.int)"),
        (t.decimal.bind(py), "Decimal", "Decimal(value)"),
    ];
    bases.iter().find_map(|(base, name, how)| {
        obj.is_instance(base).ok()?.then(|| {
            format!("; a subclass of {name} is not accepted, as it would come back as a plain {name}: store {how}")
        })
    })
}

impl Failure {
    fn into_pyerr(self, py: Python<'_>, name: &Bound<'_, PyString>) -> PyErr {
        let FailureAt { kind, mut path } = *self.0;
        let name = name.to_string_lossy();
        path.reverse();
        let mut at = name.to_string();
        for seg in &path {
            match seg {
                Seg::Index(i) => at.push_str(&format!("[{i}]")),
                Seg::Key(k) => at.push_str(&format!("[{}]", short_repr(k.bind(py)))),
                Seg::SetItem => at.push_str(" (an item of a set)"),
                Seg::DictKey => at.push_str(" (a dict key)"),
            }
        }
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at {at}")
        };
        let prefix = format!("session attribute '{name}'");
        match kind {
            Kind::Unsupported(obj) => {
                let obj = obj.bind(py);
                let tname = obj
                    .get_type()
                    .qualname()
                    .map(|q| q.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "?".to_owned());
                let hint = subclass_hint(py, obj).unwrap_or_default();
                PyTypeError::new_err(format!(
                    "{prefix}: cannot encode a value of type {tname}{at} (allowed: {ALLOWED}){hint}; \
                     configure serializer=\"pickle\" to allow any picklable value"
                ))
            }
            Kind::TooDeep => PyValueError::new_err(format!(
                "{prefix}: containers nested deeper than {MAX_DEPTH} levels{at} \
                 (or a container that holds itself)"
            )),
            Kind::Surrogates => PyValueError::new_err(format!(
                "{prefix}: a str{at} holds lone surrogates, which UTF-8 cannot encode"
            )),
            Kind::Codec(e) => PyValueError::new_err(format!("{prefix}: {e}{at}")),
            Kind::Py(e) => {
                let err =
                    PyValueError::new_err(format!("{prefix}: cannot encode the value{at}: {e}"));
                err.set_cause(py, Some(e));
                err
            }
        }
    }
}

/// The address of a class, to compare with `get_type_ptr()`.
fn type_ptr(class: &Py<PyAny>) -> *mut pyo3::ffi::PyTypeObject {
    class.as_ptr().cast()
}

fn get_u8(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<u8> {
    obj.getattr(name)?.extract()
}

fn get_u32(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<u32> {
    obj.getattr(name)?.extract()
}

/// Fields read through the datetime C API that the codec finds out of range: impossible for a
/// real object, so a sign the layout is not what the self-check saw.
fn layout_error(e: impl std::fmt::Display) -> Failure {
    PyValueError::new_err(format!("unexpected datetime field ({e})")).into()
}

/// A timedelta's value in microseconds (offsets are well within i64).
fn timedelta_micros(td: &Bound<'_, PyAny>) -> PyResult<i64> {
    let py = td.py();
    let days: i64 = td.getattr(intern!(py, "days"))?.extract()?;
    let secs: i64 = td.getattr(intern!(py, "seconds"))?.extract()?;
    let us: i64 = td.getattr(intern!(py, "microseconds"))?.extract()?;
    Ok((days * 86_400 + secs) * 1_000_000 + us)
}

struct Encoder<'py> {
    py: Python<'py>,
    t: &'static Types,
    out: Vec<u8>,
    /// Scratch buffers for sorting the items of sets.
    spans: Vec<(usize, usize)>,
    scratch: Vec<u8>,
}

impl<'py> Encoder<'py> {
    /// Encodes `obj` if it is of a type whose encoding runs no Python code (str, int, float,
    /// bool, None): `None` if it is not. Callers walking a container use it on borrowed
    /// items, which no Python code can free while it runs.
    #[inline]
    fn leaf(&mut self, obj: &Bound<'py, PyAny>) -> Option<Result<(), Failure>> {
        let py = self.py;
        // One pointer comparison per candidate type, the common types first. (A failed
        // `cast_exact` costs a reference count round trip, a function call each under abi3.)
        let tp = obj.get_type_ptr();
        if tp == PyString::type_object_raw(py) {
            return Some(self.str(obj));
        }
        if tp == PyInt::type_object_raw(py) {
            return Some(self.int(obj));
        }
        if tp == PyFloat::type_object_raw(py) {
            // Exactly a float, so the value cannot fail to be read.
            let f = obj.extract::<f64>().map_err(Failure::from);
            return Some(f.map(|f| c::write_f64(&mut self.out, f)));
        }
        if tp == PyBool::type_object_raw(py) {
            c::write_bool(&mut self.out, obj.is(PyBool::new(py, true)));
            return Some(Ok(()));
        }
        if obj.is_none() {
            c::write_nil(&mut self.out);
            return Some(Ok(()));
        }
        None
    }

    fn str(&mut self, obj: &Bound<'py, PyAny>) -> Result<(), Failure> {
        let s = obj.cast_exact::<PyString>().map_err(PyErr::from)?;
        let s = s.to_str().map_err(|_| Failure::from(Kind::Surrogates))?;
        Ok(c::write_str(&mut self.out, s)?)
    }

    fn value(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> Result<(), Failure> {
        if let Some(done) = self.leaf(obj) {
            return done;
        }
        let py = self.py;
        let tp = obj.get_type_ptr();
        if tp == PyDict::type_object_raw(py) {
            return self.dict(obj.cast_exact::<PyDict>().map_err(PyErr::from)?, depth);
        }
        if tp == PyList::type_object_raw(py) {
            return self.list(obj.cast_exact::<PyList>().map_err(PyErr::from)?, depth);
        }
        if tp == PyBytes::type_object_raw(py) {
            let b = obj.cast_exact::<PyBytes>().map_err(PyErr::from)?;
            return Ok(c::write_bin(&mut self.out, b.as_bytes())?);
        }
        if tp == PyTuple::type_object_raw(py) {
            let t = obj.cast_exact::<PyTuple>().map_err(PyErr::from)?;
            Self::enter(depth)?;
            let start = c::begin_ext(&mut self.out);
            c::write_array_len(&mut self.out, t.len())?;
            for (n, item) in t.iter_borrowed().enumerate() {
                self.item(item, depth).map_err(|e| e.at(Seg::Index(n)))?;
            }
            return Ok(c::end_ext(&mut self.out, start, Ext::Tuple)?);
        }
        let t = self.t;
        if tp == type_ptr(&t.datetime) {
            return self.datetime(obj);
        }
        if tp == type_ptr(&t.decimal) {
            let s = obj.str()?;
            return Ok(c::write_decimal(&mut self.out, s.to_str()?)?);
        }
        if tp == PySet::type_object_raw(py) {
            return self.set(obj, Ext::Set, depth);
        }
        if tp == PyFrozenSet::type_object_raw(py) {
            return self.set(obj, Ext::FrozenSet, depth);
        }
        if tp == type_ptr(&t.date) {
            if let Some(api) = t.capi {
                let date = Date::from_payload(&api.date_fields(obj)).map_err(layout_error)?;
                return Ok(c::write_date(&mut self.out, &date)?);
            }
            let date = Date {
                year: obj.getattr(intern!(py, "year"))?.extract()?,
                month: get_u8(obj, intern!(py, "month"))?,
                day: get_u8(obj, intern!(py, "day"))?,
            };
            return Ok(c::write_date(&mut self.out, &date)?);
        }
        if tp == type_ptr(&t.time) {
            return self.time(obj);
        }
        if tp == type_ptr(&t.timedelta) {
            if let Some(api) = t.capi {
                let (days, seconds, microseconds) = api.delta_fields(obj);
                let td = TimeDelta {
                    days,
                    seconds: u32::try_from(seconds).map_err(layout_error)?,
                    microseconds: u32::try_from(microseconds).map_err(layout_error)?,
                };
                return Ok(c::write_timedelta(&mut self.out, &td)?);
            }
            let td = TimeDelta {
                days: obj.getattr(intern!(py, "days"))?.extract()?,
                seconds: get_u32(obj, intern!(py, "seconds"))?,
                microseconds: get_u32(obj, intern!(py, "microseconds"))?,
            };
            return Ok(c::write_timedelta(&mut self.out, &td)?);
        }
        if tp == type_ptr(&t.uuid) {
            let n: u128 = obj.getattr(intern!(py, "int"))?.extract()?;
            return Ok(c::write_uuid(&mut self.out, &n.to_be_bytes())?);
        }
        Err(Kind::Unsupported(obj.clone().unbind()).into())
    }

    fn enter(depth: usize) -> Result<(), Failure> {
        if depth >= MAX_DEPTH {
            return Err(Kind::TooDeep.into());
        }
        Ok(())
    }

    /// Encodes an item of a container: a leaf as it is borrowed, anything else (whose encoding
    /// may run Python code that could drop the container's reference) through a reference of
    /// its own.
    #[inline]
    fn item(&mut self, item: Borrowed<'_, 'py, PyAny>, depth: usize) -> Result<(), Failure> {
        match self.leaf(&item) {
            Some(done) => done,
            None => self.value(&item.to_owned(), depth + 1),
        }
    }

    fn list(&mut self, l: &Bound<'py, PyList>, depth: usize) -> Result<(), Failure> {
        Self::enter(depth)?;
        let len = l.len();
        c::write_array_len(&mut self.out, len)?;
        for n in 0..len {
            // A list shortened by Python code run while encoding an earlier item.
            let Some(item) = raw::list_item(l, n) else {
                return Err(PyValueError::new_err("a list changed size while encoded").into());
            };
            self.item(item, depth).map_err(|e| e.at(Seg::Index(n)))?;
        }
        if l.len() != len {
            return Err(PyValueError::new_err("a list changed size while encoded").into());
        }
        Ok(())
    }

    fn dict(&mut self, d: &Bound<'py, PyDict>, depth: usize) -> Result<(), Failure> {
        Self::enter(depth)?;
        let len = d.len();
        c::write_map_len(&mut self.out, len)?;
        let mut pos = 0;
        let mut n = 0;
        while let Some((k, v)) = raw::dict_next(d, &mut pos) {
            n += 1;
            if n > len {
                break;
            }
            // Leaf keys and values are encoded as borrowed: no Python code runs meanwhile. Any
            // other key or value may run Python code (a tzinfo's `utcoffset()`) that changes
            // this dict, so both get references of their own first.
            let (k, v) = match self.leaf(&k) {
                Some(done) => {
                    done.map_err(|e| e.at(Seg::DictKey))?;
                    if let Some(done) = self.leaf(&v) {
                        done.map_err(|e| e.at(Seg::Key(k.to_owned().unbind())))?;
                        continue;
                    }
                    (k.to_owned(), v.to_owned())
                }
                None => {
                    let (k, v) = (k.to_owned(), v.to_owned());
                    self.value(&k, depth + 1).map_err(|e| e.at(Seg::DictKey))?;
                    (k, v)
                }
            };
            self.value(&v, depth + 1)
                .map_err(|e| e.at(Seg::Key(k.unbind())))?;
        }
        if n != len || d.len() != len {
            return Err(PyValueError::new_err("a dict changed size while encoded").into());
        }
        Ok(())
    }

    /// Writes a set or frozenset, items sorted by their encoded bytes.
    fn set(&mut self, obj: &Bound<'py, PyAny>, ext: Ext, depth: usize) -> Result<(), Failure> {
        Self::enter(depth)?;
        let len = obj.len()?;
        let start = c::begin_ext(&mut self.out);
        c::write_array_len(&mut self.out, len)?;
        let first = self.out.len();
        // Spans of the items' encodings; the buffers are reused from set to set (a set nested
        // in this one finds them taken and makes its own).
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        for item in obj.try_iter()? {
            let from = self.out.len();
            self.value(&item?, depth + 1)
                .map_err(|e| e.at(Seg::SetItem))?;
            spans.push((from - first, self.out.len() - first));
        }
        if spans.len() != len {
            return Err(PyValueError::new_err("a set changed size while encoded").into());
        }
        if len > 1 {
            let mut sorted = std::mem::take(&mut self.scratch);
            sorted.clear();
            let items = &self.out[first..];
            spans.sort_unstable_by(|a, b| items[a.0..a.1].cmp(&items[b.0..b.1]));
            for &(a, b) in &spans {
                sorted.extend_from_slice(&items[a..b]);
            }
            self.out.truncate(first);
            self.out.extend_from_slice(&sorted);
            self.scratch = sorted;
        }
        self.spans = spans;
        Ok(c::end_ext(&mut self.out, start, ext)?)
    }

    fn int(&mut self, i: &Bound<'py, PyAny>) -> Result<(), Failure> {
        if let Ok(v) = i.extract::<i64>() {
            c::write_int(&mut self.out, v);
            return Ok(());
        }
        if let Ok(v) = i.extract::<u64>() {
            c::write_uint(&mut self.out, v);
            return Ok(());
        }
        let py = self.py;
        let bits: usize = i.call_method0(intern!(py, "bit_length"))?.extract()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "signed"), true)?;
        let be = i.call_method(
            intern!(py, "to_bytes"),
            (bits / 8 + 1, intern!(py, "big")),
            Some(&kwargs),
        )?;
        Ok(c::write_big_int(
            &mut self.out,
            be.cast::<PyBytes>().map_err(PyErr::from)?.as_bytes(),
        )?)
    }

    /// The UTC offset of an aware datetime or time (None when `utcoffset()` gives None).
    fn offset(&self, obj: &Bound<'py, PyAny>) -> PyResult<Option<UtcOffset>> {
        self.offset_of(obj, &obj.getattr(intern!(self.py, "tzinfo"))?)
    }

    /// The UTC offset of an aware datetime or time whose tzinfo is `tz`.
    fn offset_of(
        &self,
        obj: &Bound<'py, PyAny>,
        tz: &Bound<'py, PyAny>,
    ) -> PyResult<Option<UtcOffset>> {
        let py = self.py;
        if tz.is_none() {
            return Ok(None);
        }
        if tz.is(self.t.utc.bind(py)) {
            return Ok(Some(UtcOffset::UTC));
        }
        let off = obj.call_method0(intern!(py, "utcoffset"))?;
        if off.is_none() {
            return Ok(None);
        }
        Ok(Some(UtcOffset::from_micros(timedelta_micros(&off)?)))
    }

    /// A datetime's wall clock from its pickle state: `obj.__reduce__()` is `(datetime,
    /// (state,))` or `(datetime, (state, tzinfo))`, the state packed as this codec's payload
    /// packs it (without `fold`, which protocol 2 leaves out). One call instead of seven
    /// attribute reads; None if the shape is not that.
    fn datetime_state(
        &self,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(DateTime, Bound<'py, PyAny>)>> {
        let py = self.py;
        let r = obj.call_method0(intern!(py, "__reduce__"))?;
        let Ok(r) = r.cast_into::<PyTuple>() else {
            return Ok(None);
        };
        if r.len() != 2 {
            return Ok(None);
        }
        let Ok(args) = r.get_item(1)?.cast_into::<PyTuple>() else {
            return Ok(None);
        };
        let tz = match args.len() {
            1 => py.None().into_bound(py),
            2 => args.get_item(1)?,
            _ => return Ok(None),
        };
        let Ok(state) = args.get_item(0)?.cast_into::<PyBytes>() else {
            return Ok(None);
        };
        let state = state.as_bytes();
        match (state.len(), DateTime::from_payload(state)) {
            (10, Ok(dt)) if !dt.fold => Ok(Some((dt, tz))),
            _ => Ok(None),
        }
    }

    fn datetime(&mut self, obj: &Bound<'py, PyAny>) -> Result<(), Failure> {
        let py = self.py;
        if let Some(api) = self.t.capi {
            let f = api.datetime_fields(obj);
            let mut dt = DateTime::from_payload(&f.data).map_err(layout_error)?;
            dt.fold = f.fold;
            dt.offset = self.offset_of(obj, &f.tzinfo)?;
            return Ok(c::write_datetime(&mut self.out, &dt)?);
        }
        if let Some((mut dt, tz)) = self.datetime_state(obj)? {
            dt.fold = get_u8(obj, intern!(py, "fold"))? != 0;
            dt.offset = self.offset_of(obj, &tz)?;
            return Ok(c::write_datetime(&mut self.out, &dt)?);
        }
        let dt = DateTime {
            year: obj.getattr(intern!(py, "year"))?.extract()?,
            month: get_u8(obj, intern!(py, "month"))?,
            day: get_u8(obj, intern!(py, "day"))?,
            hour: get_u8(obj, intern!(py, "hour"))?,
            minute: get_u8(obj, intern!(py, "minute"))?,
            second: get_u8(obj, intern!(py, "second"))?,
            microsecond: get_u32(obj, intern!(py, "microsecond"))?,
            fold: get_u8(obj, intern!(py, "fold"))? != 0,
            offset: self.offset(obj)?,
        };
        Ok(c::write_datetime(&mut self.out, &dt)?)
    }

    fn time(&mut self, obj: &Bound<'py, PyAny>) -> Result<(), Failure> {
        let py = self.py;
        if let Some(api) = self.t.capi {
            let f = api.time_fields(obj);
            let mut t = Time::from_payload(&f.data).map_err(layout_error)?;
            t.fold = f.fold;
            t.offset = self.offset_of(obj, &f.tzinfo)?;
            return Ok(c::write_time(&mut self.out, &t)?);
        }
        let t = Time {
            hour: get_u8(obj, intern!(py, "hour"))?,
            minute: get_u8(obj, intern!(py, "minute"))?,
            second: get_u8(obj, intern!(py, "second"))?,
            microsecond: get_u32(obj, intern!(py, "microsecond"))?,
            fold: get_u8(obj, intern!(py, "fold"))? != 0,
            offset: self.offset(obj)?,
        };
        Ok(c::write_time(&mut self.out, &t)?)
    }
}

/// Borrowed access to list and dict items, without the reference count round trip (two
/// function calls under abi3) that PyO3's iterators make per item.
#[allow(unsafe_code)]
mod raw {
    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyList};

    /// Item `n` of `l`, borrowed; `None` past the end. The reference is valid until Python code
    /// runs that may change the list.
    pub fn list_item<'a, 'py>(
        l: &'a Bound<'py, PyList>,
        n: usize,
    ) -> Option<Borrowed<'a, 'py, PyAny>> {
        let n = ffi::Py_ssize_t::try_from(n).ok()?;
        // SAFETY: `l` is a live list; PyList_GetItem returns a borrowed reference, or null with
        // an IndexError set, which is cleared here.
        let item = unsafe { ffi::PyList_GetItem(l.as_ptr(), n) };
        if item.is_null() {
            drop(PyErr::take(l.py()));
            return None;
        }
        // SAFETY: a live object borrowed from the list, which the caller holds.
        Some(unsafe { Borrowed::from_ptr(l.py(), item) })
    }

    /// The next entry of `d` from position `pos` (0 to start), borrowed. The references are
    /// valid until Python code runs that may change the dict.
    pub fn dict_next<'a, 'py>(
        d: &'a Bound<'py, PyDict>,
        pos: &mut ffi::Py_ssize_t,
    ) -> Option<(Borrowed<'a, 'py, PyAny>, Borrowed<'a, 'py, PyAny>)> {
        let mut k = std::ptr::null_mut();
        let mut v = std::ptr::null_mut();
        // SAFETY: `d` is a live dict; PyDict_Next bounds-checks `pos` and hands out borrowed
        // references to a live key and value.
        unsafe {
            (ffi::PyDict_Next(d.as_ptr(), pos, &mut k, &mut v) != 0)
                .then(|| (Borrowed::from_ptr(d.py(), k), Borrowed::from_ptr(d.py(), v)))
        }
    }
}

thread_local! {
    /// The encoder's output buffer, kept from one call to the next on each thread (a malloc and
    /// a free per call otherwise); an encode nested in another (a tzinfo's `utcoffset()` that
    /// encodes) finds it taken and makes its own.
    static OUT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Largest buffer kept in [`OUT`] between calls.
const OUT_KEEP: usize = 64 * 1024;

/// What `encode_value` and `dumps` do. `name` is only read to build an error message.
fn encode<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    name: Option<&Bound<'py, PyString>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = OUT.with(std::cell::Cell::take);
    out.clear();
    let mut enc = Encoder {
        py,
        t: types(py)?,
        out,
        spans: Vec::new(),
        scratch: Vec::new(),
    };
    let result = match enc.value(obj, 0) {
        Ok(()) => Ok(PyBytes::new(py, &enc.out)),
        Err(f) => Err(match name {
            Some(name) => f.into_pyerr(py, name),
            None => f.into_pyerr(py, intern!(py, "value")),
        }),
    };
    if enc.out.capacity() <= OUT_KEEP {
        OUT.with(|cell| cell.set(enc.out));
    }
    result
}

// ------------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------------

/// A decoding failure, always a `tribes.errors.ProtocolError`. Boxed, so that every
/// `Result<Bound, DecodeError>` the builder returns fits in two registers.
struct DecodeError(Box<PyErr>);

impl From<CodecError> for DecodeError {
    fn from(e: CodecError) -> Self {
        DecodeError(Box::new(ProtocolError::new_err(format!(
            "cannot decode a session value: {e}"
        ))))
    }
}

/// Builds Python objects for the generic decoder.
struct PyBuilder<'py> {
    py: Python<'py>,
    t: &'static Types,
    /// The shared dict key cache, taken on the first str key (see [`KeyCache`]).
    keys: KeyCache,
}

/// Longest dict key, in UTF-8 bytes, that the key cache keeps.
const KEY_CACHE_LEN: usize = 32;
/// Slots in the key cache (a power of two).
const KEY_CACHE_SLOTS: usize = 1024;

/// One slot of the key cache: a str and its UTF-8 bytes (checked when the str was made).
struct KeySlot {
    len: u8,
    bytes: [u8; KEY_CACHE_LEN],
    s: Option<Py<PyString>>,
}

/// Short dict keys kept across calls, as orjson does: session values repeat the same keys (field
/// names, preference names) from one decode to the next, and a str reused is one allocation and
/// one UTF-8 check saved, and a hash computed once instead of at every dict insertion. A fixed
/// number of slots, each holding the last key whose bytes hashed to it, so memory stays bounded
/// whatever keys the network sends. Only used with the GIL held; the lock is only there to make
/// the static safe, and is never waited for (a nested or concurrent decode goes without).
static KEY_CACHE: parking_lot::Mutex<Vec<KeySlot>> = parking_lot::Mutex::new(Vec::new());

/// The key cache as one decode sees it.
enum KeyCache {
    /// No str key met yet.
    Untried,
    /// Held for the rest of this decode.
    Held(parking_lot::MutexGuard<'static, Vec<KeySlot>>),
    /// Held by another decode (one nested in this decode through a finalizer, or on a thread
    /// that took the GIL meanwhile): this one makes its keys without it.
    Busy,
}

/// The slot of a key: a multiplicative hash of its length and of its first and last (up to)
/// eight bytes, read as words. A byte-at-a-time hash (FNV) cost about 15 ns for an 11-byte key,
/// a sixth of decoding a small dict; this is a few ns. Keys that differ only in the middle of a
/// long key share a slot, which only costs a cache miss: a hit compares every byte.
fn key_slot(v: &[u8]) -> usize {
    fn word(b: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    }
    let n = v.len();
    let (head, tail) = if n > 8 {
        (word(&v[..8]), word(&v[n - 8..]))
    } else {
        (word(v), 0)
    };
    let h = (head ^ tail.rotate_left(29) ^ ((n as u64) << 56)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The top bits are the best mixed.
    (h >> (64 - KEY_CACHE_SLOTS.trailing_zeros())) as usize
}

type Out<'py> = Result<Bound<'py, PyAny>, DecodeError>;

impl<'py> PyBuilder<'py> {
    /// A Python error while building (an unhashable dict key or set item, a Decimal the
    /// decimal module refuses) is a protocol error too: the bytes were bad.
    fn fail(&self, what: &str, e: PyErr) -> DecodeError {
        let err = ProtocolError::new_err(format!("cannot decode a session value: {what}: {e}"));
        err.set_cause(self.py, Some(e));
        DecodeError(Box::new(err))
    }

    /// A str from UTF-8 bytes, which Python checks (an error is a protocol error).
    fn new_str(&self, v: &[u8]) -> Out<'py> {
        match PyString::from_bytes(self.py, v) {
            Ok(s) => Ok(s.into_any()),
            Err(e) => Err(self.fail("str", e)),
        }
    }

    fn tz(&self, offset: Option<UtcOffset>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        Ok(match offset {
            None => py.None().into_bound(py),
            Some(UtcOffset::UTC) => self.t.utc.bind(py).clone(),
            Some(off) => {
                let td = self
                    .t
                    .timedelta
                    .bind(py)
                    .call1((0, off.seconds, off.microseconds))?;
                self.t.timezone.bind(py).call1((td,))?
            }
        })
    }

    /// `class(state, tzinfo)`: the constructor form pickles use, with the validated state
    /// bytes (for a datetime or time, byte for byte this codec's payload without the offset).
    /// About three times quicker than passing the fields; the callers fall back to the fields
    /// if a Python implementation ever refuses it.
    fn build_from_state(
        &self,
        class: &Py<PyAny>,
        state: &[u8],
        tz: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        class
            .bind(self.py)
            .call1((PyBytes::new(self.py, state), tz))
    }

    fn with_fold(
        &self,
        class: &Py<PyAny>,
        args: Bound<'py, PyTuple>,
        fold: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        if fold {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "fold"), 1)?;
            class.bind(py).call(args, Some(&kwargs))
        } else {
            class.bind(py).call1(args)
        }
    }
}

impl<'py> Build for PyBuilder<'py> {
    type Out = Bound<'py, PyAny>;
    type Error = DecodeError;

    fn nil(&mut self) -> Out<'py> {
        Ok(self.py.None().into_bound(self.py))
    }
    fn bool(&mut self, v: bool) -> Out<'py> {
        Ok(PyBool::new(self.py, v).to_owned().into_any())
    }
    fn int(&mut self, v: i64) -> Out<'py> {
        let Ok(i) = v.into_pyobject(self.py);
        Ok(i.into_any())
    }
    fn uint(&mut self, v: u64) -> Out<'py> {
        let Ok(i) = v.into_pyobject(self.py);
        Ok(i.into_any())
    }
    fn big_int(&mut self, be: &[u8]) -> Out<'py> {
        let py = self.py;
        let build = || {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "signed"), true)?;
            self.t.int.bind(py).call_method(
                intern!(py, "from_bytes"),
                (PyBytes::new(py, be), intern!(py, "big")),
                Some(&kwargs),
            )
        };
        build().map_err(|e| self.fail("big int", e))
    }
    fn key_str(&mut self, v: RawStr<'_>) -> Out<'py> {
        let v = v.as_bytes();
        if v.len() > KEY_CACHE_LEN {
            return self.new_str(v);
        }
        if let KeyCache::Untried = self.keys {
            self.keys = match KEY_CACHE.try_lock() {
                Some(mut slots) => {
                    if slots.is_empty() {
                        slots.resize_with(KEY_CACHE_SLOTS, || KeySlot {
                            len: 0,
                            bytes: [0; KEY_CACHE_LEN],
                            s: None,
                        });
                    }
                    KeyCache::Held(slots)
                }
                None => KeyCache::Busy,
            };
        }
        let KeyCache::Held(slots) = &mut self.keys else {
            return self.new_str(v);
        };
        let slot = &mut slots[key_slot(v)];
        if let Some(s) = &slot.s {
            if usize::from(slot.len) == v.len() && slot.bytes[..v.len()] == *v {
                return Ok(s.bind(self.py).clone().into_any());
            }
        }
        let k = match PyString::from_bytes(self.py, v) {
            Ok(k) => k,
            Err(e) => return Err(self.fail("str", e)),
        };
        slot.len = v.len() as u8;
        slot.bytes[..v.len()].copy_from_slice(v);
        slot.s = Some(k.clone().unbind());
        Ok(k.into_any())
    }
    fn float(&mut self, v: f64) -> Out<'py> {
        Ok(PyFloat::new(self.py, v).into_any())
    }
    fn str(&mut self, v: RawStr<'_>) -> Out<'py> {
        self.new_str(v.as_bytes())
    }
    fn bytes(&mut self, v: &[u8]) -> Out<'py> {
        Ok(PyBytes::new(self.py, v).into_any())
    }
    fn list(&mut self, items: Vec<Self::Out>) -> Out<'py> {
        PyList::new(self.py, items)
            .map(Bound::into_any)
            .map_err(|e| self.fail("list", e))
    }
    fn tuple(&mut self, items: Vec<Self::Out>) -> Out<'py> {
        PyTuple::new(self.py, items)
            .map(Bound::into_any)
            .map_err(|e| self.fail("tuple", e))
    }
    fn set(&mut self, items: Vec<Self::Out>) -> Out<'py> {
        PySet::new(self.py, items)
            .map(Bound::into_any)
            .map_err(|e| self.fail("set item", e))
    }
    fn frozenset(&mut self, items: Vec<Self::Out>) -> Out<'py> {
        PyFrozenSet::new(self.py, items)
            .map(Bound::into_any)
            .map_err(|e| self.fail("frozenset item", e))
    }
    fn map<F>(&mut self, len: usize, mut entry: F) -> Out<'py>
    where
        F: FnMut(&mut Self) -> Result<(Self::Out, Self::Out), DecodeError>,
    {
        let d = PyDict::new(self.py);
        for _ in 0..len {
            let (k, v) = entry(self)?;
            d.set_item(k, v).map_err(|e| self.fail("dict key", e))?;
        }
        Ok(d.into_any())
    }
    fn datetime(&mut self, v: DateTime) -> Out<'py> {
        let build = || {
            let tz = self.tz(v.offset)?;
            if let Some(api) = self.t.capi {
                return api.new_datetime(self.py, &v, (!tz.is_none()).then_some(&tz));
            }
            let fast = self.build_from_state(&self.t.datetime, &v.wall_clock_bytes(), &tz);
            fast.or_else(|_| {
                let args = (
                    v.year,
                    v.month,
                    v.day,
                    v.hour,
                    v.minute,
                    v.second,
                    v.microsecond,
                    tz,
                )
                    .into_pyobject(self.py)?;
                self.with_fold(&self.t.datetime, args, v.fold)
            })
        };
        build().map_err(|e| self.fail("datetime", e))
    }
    fn date(&mut self, v: Date) -> Out<'py> {
        if let Some(api) = self.t.capi {
            return api.new_date(self.py, &v).map_err(|e| self.fail("date", e));
        }
        self.t
            .date
            .bind(self.py)
            .call1((v.year, v.month, v.day))
            .map_err(|e| self.fail("date", e))
    }
    fn time(&mut self, v: Time) -> Out<'py> {
        let build = || {
            let tz = self.tz(v.offset)?;
            if let Some(api) = self.t.capi {
                return api.new_time(self.py, &v, (!tz.is_none()).then_some(&tz));
            }
            let fast = self.build_from_state(&self.t.time, &v.clock_bytes(), &tz);
            fast.or_else(|_| {
                let args =
                    (v.hour, v.minute, v.second, v.microsecond, tz).into_pyobject(self.py)?;
                self.with_fold(&self.t.time, args, v.fold)
            })
        };
        build().map_err(|e| self.fail("time", e))
    }
    fn timedelta(&mut self, v: TimeDelta) -> Out<'py> {
        if let Some(api) = self.t.capi {
            return api
                .new_delta(self.py, &v)
                .map_err(|e| self.fail("timedelta", e));
        }
        self.t
            .timedelta
            .bind(self.py)
            .call1((v.days, v.seconds, v.microseconds))
            .map_err(|e| self.fail("timedelta", e))
    }
    fn uuid(&mut self, v: [u8; 16]) -> Out<'py> {
        let py = self.py;
        let build = || {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "int"), u128::from_be_bytes(v))?;
            self.t.uuid.bind(py).call((), Some(&kwargs))
        };
        build().map_err(|e| self.fail("UUID", e))
    }
    fn decimal(&mut self, v: &str) -> Out<'py> {
        self.t
            .decimal
            .bind(self.py)
            .call1((v,))
            .map_err(|e| self.fail("Decimal", e))
    }
}

/// What `decode_value` and `loads` do.
fn decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let mut b = PyBuilder {
        py,
        t: types(py)?,
        keys: KeyCache::Untried,
    };
    c::decode_with(data, &mut b).map_err(|DecodeError(e)| *e)
}

/// The module functions: `tribes.codec.dumps`/`loads` are these very functions (a Python
/// wrapper frame would cost as much as encoding a short str), and `_core.encode_value` /
/// `decode_value` their older names, which the session layer calls. CPython calls them
/// directly ([`super::fast_fn`]).
pub mod entry {
    #![allow(unsafe_code)]

    use pyo3::prelude::*;
    use pyo3::types::{PyBytes, PyString};

    use super::super::fast_fn::{self, fast_function};

    const DUMPS_DOC: &std::ffi::CStr = c"dumps(value, name='value')
--

Encode ``value`` (one of the supported types, nested) to bytes.

``name`` is the session attribute's name, used in error messages only. Raises ``TypeError`` for
an unsupported type (the message names the attribute, the type and where it sits, e.g.
``cart[2]['price']``), and ``ValueError`` for nesting deeper than 64 levels (or a container that
holds itself) or a ``str`` with lone surrogates.";

    const LOADS_DOC: &std::ffi::CStr = c"loads(data)
--

Decode bytes made by :func:`dumps` (or any msgpack encoder) back into a value.

Raises :class:`tribes.errors.ProtocolError` when ``data`` is not exactly one valid encoding:
truncated, trailing bytes, unknown ext types, invalid dates, nesting deeper than 64 levels, an
unhashable dict key or set item. Never runs code chosen by the bytes.";

    const ENCODE_VALUE_DOC: &std::ffi::CStr = c"encode_value(obj, name='value')
--

Encodes a session attribute value with the safe codec. `name` (the attribute's name) only
appears in error messages: `TypeError` for an unsupported type, `ValueError` for nesting
deeper than 64 containers (or a container holding itself) and for strs with lone surrogates.";

    const DECODE_VALUE_DOC: &std::ffi::CStr = c"decode_value(data)
--

Decodes bytes made by `encode_value` (or any msgpack encoder) into a Python value;
`tribes.errors.ProtocolError` when they are not a valid encoding. Never unpickles.";

    /// `(value, name=None)`: encodes; `func` and `params` name the function and its
    /// parameters in argument errors.
    fn encode_call<'py>(
        py: Python<'py>,
        func: &str,
        params: [&str; 2],
        args: [Option<Borrowed<'_, 'py, PyAny>>; 2],
    ) -> PyResult<Bound<'py, PyAny>> {
        let [Some(value), name] = args else {
            return Err(fast_fn::missing(func, params[0]));
        };
        let name = match name {
            Some(n) if !n.is_none() => Some(
                n.cast::<PyString>()
                    .map_err(|_| fast_fn::wrong_type(func, params[1], "str", &n))?,
            ),
            _ => None,
        };
        super::encode(py, &value, name.as_deref()).map(Bound::into_any)
    }

    /// `(data)`: decodes.
    fn decode_call<'py>(
        py: Python<'py>,
        func: &str,
        params: [&str; 1],
        args: [Option<Borrowed<'_, 'py, PyAny>>; 1],
    ) -> PyResult<Bound<'py, PyAny>> {
        let [Some(data)] = args else {
            return Err(fast_fn::missing(func, params[0]));
        };
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| fast_fn::wrong_type(func, params[0], "bytes", &data))?;
        super::decode(py, data.as_bytes())
    }

    fast_function!(dumps, ["value", "name"], 1, encode_call);
    fast_function!(encode_value, ["obj", "name"], 1, encode_call);
    fast_function!(loads, ["data"], 1, decode_call);
    fast_function!(decode_value, ["data"], 1, decode_call);

    /// Adds the four functions to the module.
    pub fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
        fast_fn::add(m, c"encode_value", ENCODE_VALUE_DOC, encode_value)?;
        fast_fn::add(m, c"decode_value", DECODE_VALUE_DOC, decode_value)?;
        fast_fn::add(m, c"dumps", DUMPS_DOC, dumps)?;
        fast_fn::add(m, c"loads", LOADS_DOC, loads)
    }
}
