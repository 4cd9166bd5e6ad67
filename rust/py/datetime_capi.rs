//! The `datetime` module's C API, for the codec: reading the fields of a `datetime`, `date`,
//! `time` or `timedelta` and making one, without a Python call.
//!
//! The extension is built for the stable ABI (`abi3`), which leaves out `datetime.h`; PyO3
//! then reaches these types through Python attribute access only, several calls per value.
//! But the module's C API capsule (`datetime.datetime_CAPI`) is reachable from the stable ABI,
//! and its table and the objects' field layout have not changed since Python 3.7 (`fold`, the
//! last addition). This module mirrors both, and checks the mirror at first use: it builds
//! known values through Python, reads them back through the mirror, builds them through the
//! table, and compares. If anything differs (a future Python that changed them), [`get`] gives
//! `None` and the codec keeps to attribute access: slower, never wrong.
// One of the few places where this crate talks to CPython without PyO3's safe API (listed in
// docs/internals.md, "Unsafe code").
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::session::codec::{Date, DateTime, Time, TimeDelta};

type Obj = *mut ffi::PyObject;
type Type = *mut ffi::PyTypeObject;

/// `PyDateTime_CAPI` from CPython's `datetime.h`, field for field.
#[repr(C)]
struct Capi {
    date_type: Type,
    datetime_type: Type,
    time_type: Type,
    delta_type: Type,
    tzinfo_type: Type,
    timezone_utc: Obj,
    date_from_date: unsafe extern "C" fn(c_int, c_int, c_int, Type) -> Obj,
    datetime_from_date_and_time:
        unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, c_int, Obj, Type) -> Obj,
    time_from_time: unsafe extern "C" fn(c_int, c_int, c_int, c_int, Obj, Type) -> Obj,
    delta_from_delta: unsafe extern "C" fn(c_int, c_int, c_int, c_int, Type) -> Obj,
    timezone_from_timezone: unsafe extern "C" fn(Obj, Obj) -> Obj,
    datetime_from_timestamp: unsafe extern "C" fn(Obj, Obj, Obj) -> Obj,
    date_from_timestamp: unsafe extern "C" fn(Obj, Obj) -> Obj,
    datetime_from_date_and_time_and_fold: unsafe extern "C" fn(
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        Obj,
        c_int,
        Type,
    ) -> Obj,
    time_from_time_and_fold:
        unsafe extern "C" fn(c_int, c_int, c_int, c_int, Obj, c_int, Type) -> Obj,
}

// The object layouts. CPython writes the shared head (`_PyTZINFO_HEAD`: PyObject_HEAD, hashcode,
// hastzinfo) as a macro, so the fields after it follow `hastzinfo` directly: a nested head struct
// would be padded to 32 bytes and shift them.

/// `PyDateTime_DateTime`; `tzinfo` exists only when `hastzinfo` is set (`fold` sits in the
/// padding of the smaller naive object, where CPython writes it too).
#[repr(C)]
struct RawDateTime {
    ob_base: ffi::PyObject,
    hashcode: ffi::Py_hash_t,
    hastzinfo: c_char,
    data: [u8; 10],
    fold: u8,
    tzinfo: Obj,
}

/// `PyDateTime_Time`, likewise.
#[repr(C)]
struct RawTime {
    ob_base: ffi::PyObject,
    hashcode: ffi::Py_hash_t,
    hastzinfo: c_char,
    data: [u8; 6],
    fold: u8,
    tzinfo: Obj,
}

/// `PyDateTime_Date`.
#[repr(C)]
struct RawDate {
    ob_base: ffi::PyObject,
    hashcode: ffi::Py_hash_t,
    hastzinfo: c_char,
    data: [u8; 4],
}

/// The offsets above, as CPython's headers lay them out on the 64- and 32-bit targets.
const _: () = {
    let p = std::mem::size_of::<usize>();
    assert!(std::mem::offset_of!(RawDateTime, data) == 3 * p + 1);
    assert!(std::mem::offset_of!(RawDateTime, fold) == 3 * p + 11);
    assert!(std::mem::offset_of!(RawTime, data) == 3 * p + 1);
    assert!(std::mem::offset_of!(RawDate, data) == 3 * p + 1);
};

/// `PyDateTime_Delta`.
#[repr(C)]
struct RawDelta {
    ob_base: ffi::PyObject,
    hashcode: ffi::Py_hash_t,
    days: c_int,
    seconds: c_int,
    microseconds: c_int,
}

/// The checked C API. Only used with the GIL held.
pub struct DateTimeApi {
    capi: *const Capi,
}

// SAFETY: the table is immutable and lives as long as the interpreter; every use holds the GIL.
unsafe impl Send for DateTimeApi {}
// SAFETY: as above.
unsafe impl Sync for DateTimeApi {}

/// A `datetime`'s or `time`'s fields as stored: the packed bytes (the codec's own payload
/// layout), `fold`, and the tzinfo (`None` when naive).
pub struct Fields<'a, 'py, const N: usize> {
    pub data: [u8; N],
    pub fold: bool,
    pub tzinfo: Borrowed<'a, 'py, PyAny>,
}

static API: PyOnceLock<Option<DateTimeApi>> = PyOnceLock::new();

/// The C API, or `None` when it is missing or does not match the mirror here.
///
/// `TRIBES_CODEC_DATETIME_CAPI=0` in the environment turns it off (the tests compare both paths).
pub fn get(py: Python<'_>) -> Option<&'static DateTimeApi> {
    API.get_or_init(py, || {
        if std::env::var_os("TRIBES_CODEC_DATETIME_CAPI").is_some_and(|v| v == "0") {
            return None;
        }
        match load(py) {
            Ok(Some(api)) => Some(api),
            Ok(None) => {
                log::info!(
                    "datetime C API differs from the expected layout: the codec uses attribute access"
                );
                None
            }
            Err(e) => {
                log::info!("datetime C API unavailable ({e}): the codec uses attribute access");
                None
            }
        }
    })
    .as_ref()
}

fn load(py: Python<'_>) -> PyResult<Option<DateTimeApi>> {
    let dt = py.import("datetime")?;
    // SAFETY: a NUL-terminated name; the result is the capsule's pointer or null with an error.
    let capi = unsafe { ffi::PyCapsule_Import(c"datetime.datetime_CAPI".as_ptr(), 0) };
    if capi.is_null() {
        return Err(PyErr::fetch(py));
    }
    let api = DateTimeApi {
        capi: capi.cast::<Capi>(),
    };
    let types_match = [
        ("date", api.c().date_type),
        ("datetime", api.c().datetime_type),
        ("time", api.c().time_type),
        ("timedelta", api.c().delta_type),
        ("tzinfo", api.c().tzinfo_type),
    ]
    .iter()
    .all(|(name, tp)| {
        dt.getattr(*name)
            .is_ok_and(|t| t.as_ptr() == tp.cast::<ffi::PyObject>())
    });
    let utc = dt.getattr("timezone")?.getattr("utc")?;
    if !types_match || utc.as_ptr() != api.c().timezone_utc {
        return Ok(None);
    }
    Ok(api.self_check(py, &dt, &utc)?.then_some(api))
}

impl DateTimeApi {
    fn c(&self) -> &Capi {
        // SAFETY: the capsule's table lives as long as the interpreter.
        unsafe { &*self.capi }
    }

    /// Reads known values made by Python back through the mirror, and makes them through the
    /// table: every field must agree.
    fn self_check(
        &self,
        py: Python<'_>,
        dt: &Bound<'_, PyModule>,
        utc: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let fold1 = PyDict::new(py);
        fold1.set_item("fold", 1)?;
        let mut ok = true;
        for (args, tz) in [
            ((2001, 2, 3, 4, 5, 6, 789_012), Some(utc)),
            ((9999, 12, 31, 23, 59, 59, 999_999), None),
        ] {
            let (y, mo, d, h, mi, s, us): (u16, u8, u8, u8, u8, u8, u32) = args;
            let [y0, y1] = y.to_be_bytes();
            let [_, u0, u1, u2] = us.to_be_bytes();
            let want = [y0, y1, mo, d, h, mi, s, u0, u1, u2];
            let (Ok(mut v), Ok(mut t), Ok(date)) = (
                DateTime::from_payload(&want),
                Time::from_payload(&want[4..]),
                Date::from_payload(&want[..4]),
            ) else {
                return Ok(false);
            };
            (v.fold, t.fold) = (true, true);

            let py_made = dt
                .getattr("datetime")?
                .call((y, mo, d, h, mi, s, us, tz), Some(&fold1))?;
            let ours = self.new_datetime(py, &v, tz)?;
            ok &= py_made.eq(&ours)? && ours.getattr("fold")?.extract::<u8>()? == 1;
            let f = self.datetime_fields(&py_made);
            let same_tz = |got: Borrowed<'_, '_, PyAny>| got.as_ptr() == tz_ptr(tz);
            ok &= f.data == want && f.fold && same_tz(f.tzinfo);

            let t_made = dt.getattr("time")?.call((h, mi, s, us, tz), Some(&fold1))?;
            let t_ours = self.new_time(py, &t, tz)?;
            ok &= t_made.eq(&t_ours)? && t_ours.getattr("fold")?.extract::<u8>()? == 1;
            let f = self.time_fields(&t_made);
            ok &= f.data[..] == want[4..] && f.fold && same_tz(f.tzinfo);

            let d_made = dt.getattr("date")?.call1((y, mo, d))?;
            ok &= d_made.eq(self.new_date(py, &date)?)?;
            ok &= self.date_fields(&d_made) == want[..4];
        }
        let td = dt.getattr("timedelta")?.call1((-3, 5, 7))?;
        let delta = TimeDelta {
            days: -3,
            seconds: 5,
            microseconds: 7,
        };
        ok &= self.delta_fields(&td) == (-3, 5, 7) && td.eq(self.new_delta(py, &delta)?)?;
        Ok(ok)
    }

    /// The fields of `obj`, which must be exactly a `datetime` (the caller checked its type).
    pub fn datetime_fields<'a, 'py>(&self, obj: &'a Bound<'py, PyAny>) -> Fields<'a, 'py, 10> {
        debug_assert!(obj.get_type_ptr() == self.c().datetime_type);
        // SAFETY: `obj` is a live datetime, whose layout the self-check confirmed (the check
        // itself only compares the tzinfo pointer, and a null one is None); the tzinfo is read
        // only when present, and is kept alive by `obj` for 'a.
        unsafe {
            // Fields are read through the pointer, never a reference to the whole struct: a
            // naive object is allocated without the `tzinfo` field.
            let raw = obj.as_ptr().cast::<RawDateTime>().cast_const();
            Fields {
                data: (*raw).data,
                fold: (*raw).fold != 0,
                tzinfo: tzinfo(obj.py(), (*raw).hastzinfo, (*raw).tzinfo),
            }
        }
    }

    /// The fields of `obj`, which must be exactly a `time`.
    pub fn time_fields<'a, 'py>(&self, obj: &'a Bound<'py, PyAny>) -> Fields<'a, 'py, 6> {
        debug_assert!(obj.get_type_ptr() == self.c().time_type);
        // SAFETY: as for `datetime_fields`.
        unsafe {
            // Fields are read through the pointer, never a reference to the whole struct: a
            // naive object is allocated without the `tzinfo` field.
            let raw = obj.as_ptr().cast::<RawTime>().cast_const();
            Fields {
                data: (*raw).data,
                fold: (*raw).fold != 0,
                tzinfo: tzinfo(obj.py(), (*raw).hastzinfo, (*raw).tzinfo),
            }
        }
    }

    /// The packed year, month and day of `obj`, which must be exactly a `date`.
    pub fn date_fields(&self, obj: &Bound<'_, PyAny>) -> [u8; 4] {
        debug_assert!(obj.get_type_ptr() == self.c().date_type);
        // SAFETY: `obj` is a live date, whose layout the self-check confirmed.
        unsafe { (*obj.as_ptr().cast::<RawDate>().cast_const()).data }
    }

    /// `(days, seconds, microseconds)` of `obj`, which must be exactly a `timedelta`.
    pub fn delta_fields(&self, obj: &Bound<'_, PyAny>) -> (i32, i32, i32) {
        debug_assert!(obj.get_type_ptr() == self.c().delta_type);
        // SAFETY: `obj` is a live timedelta, whose layout the self-check confirmed.
        unsafe {
            let raw = obj.as_ptr().cast::<RawDelta>().cast_const();
            ((*raw).days, (*raw).seconds, (*raw).microseconds)
        }
    }

    /// A `datetime` (naive when `tz` is `None`); the table's function checks the ranges (a
    /// `ValueError` otherwise).
    pub fn new_datetime<'py>(
        &self,
        py: Python<'py>,
        v: &DateTime,
        tz: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c();
        let tz = tz_ptr(tz);
        // SAFETY: plain ints, a live tzinfo (or None) that the function takes its own
        // reference to, and the table's own type; a new reference or null with an error.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (c.datetime_from_date_and_time_and_fold)(
                    v.year.into(),
                    v.month.into(),
                    v.day.into(),
                    v.hour.into(),
                    v.minute.into(),
                    v.second.into(),
                    micros(v.microsecond),
                    tz,
                    c_int::from(v.fold),
                    c.datetime_type,
                ),
            )
        }
    }

    /// A `time`, checked like [`Self::new_datetime`].
    pub fn new_time<'py>(
        &self,
        py: Python<'py>,
        v: &Time,
        tz: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c();
        let tz = tz_ptr(tz);
        // SAFETY: as in `new_datetime`.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (c.time_from_time_and_fold)(
                    v.hour.into(),
                    v.minute.into(),
                    v.second.into(),
                    micros(v.microsecond),
                    tz,
                    c_int::from(v.fold),
                    c.time_type,
                ),
            )
        }
    }

    /// A `date`, checked.
    pub fn new_date<'py>(&self, py: Python<'py>, v: &Date) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c();
        // SAFETY: plain ints and the table's own type.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (c.date_from_date)(v.year.into(), v.month.into(), v.day.into(), c.date_type),
            )
        }
    }

    /// A `timedelta`, normalised and range-checked.
    pub fn new_delta<'py>(&self, py: Python<'py>, v: &TimeDelta) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c();
        // Out-of-range parts become values the table's range check refuses.
        let part = |x: u32| c_int::try_from(x).unwrap_or(c_int::MAX);
        // SAFETY: plain ints and the table's own type.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (c.delta_from_delta)(
                    v.days,
                    part(v.seconds),
                    part(v.microseconds),
                    1,
                    c.delta_type,
                ),
            )
        }
    }
}

/// The tzinfo of an object read through the mirror: the object, or None when it has none (or,
/// while the self-check runs on a layout that is not CPython's, when the pointer read is null).
///
/// # Safety
/// `ptr` must be null or a live object when `has` is not zero.
unsafe fn tzinfo<'a, 'py>(py: Python<'py>, has: c_char, ptr: Obj) -> Borrowed<'a, 'py, PyAny> {
    let ptr = if has != 0 && !ptr.is_null() {
        ptr
    } else {
        // SAFETY: `Py_None` is the None singleton.
        unsafe { ffi::Py_None() }
    };
    // SAFETY: a live object, by the contract above.
    unsafe { Borrowed::from_ptr(py, ptr) }
}

/// The tzinfo argument of the table's constructors: the object, or `None`.
fn tz_ptr(tz: Option<&Bound<'_, PyAny>>) -> Obj {
    // SAFETY: `Py_None` is the None singleton.
    tz.map_or_else(|| unsafe { ffi::Py_None() }, Bound::as_ptr)
}

/// Microseconds as the table takes them (a value above 999999 is refused by its range check).
fn micros(us: u32) -> c_int {
    c_int::try_from(us).unwrap_or(c_int::MAX)
}
