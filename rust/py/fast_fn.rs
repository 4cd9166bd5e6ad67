//! Module functions that CPython calls directly, for the codec's `dumps`/`loads` (and their
//! `_core` twins).
//!
//! A `#[pyfunction]` goes through PyO3's generic trampoline and argument extraction, about
//! 170 instructions per call, a thread-local lookup included: as much as encoding a short str.
//! These functions are plain `METH_FASTCALL | METH_KEYWORDS` C functions with a parser for
//! their one or two parameters; what they do otherwise is what PyO3 does: the same errors for
//! bad arguments, panics caught and raised as `pyo3_runtime.PanicException` (never unwound into
//! CPython), results returned as new references.
// One of the few places where this crate talks to CPython without PyO3's safe API (listed in
// docs/internals.md, "Unsafe code").
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// The C signature of a `METH_FASTCALL | METH_KEYWORDS` function.
pub type FastFn = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// Adds `f` to module `m` as `name`. `doc` starts with the text signature
/// (`"name(a, b='x')\n--\n\n"`), from which `inspect.signature` reads the parameters.
pub fn add(
    m: &Bound<'_, PyModule>,
    name: &'static CStr,
    doc: &'static CStr,
    f: FastFn,
) -> PyResult<()> {
    let py = m.py();
    // The definition must outlive the function object; a module is set up once per process.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: f,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }));
    let module_name = m.name()?;
    // SAFETY: `def` is 'static and well formed; the module and its name are live objects; the
    // returned pointer is a new reference or null with an exception set.
    let func = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(def, m.as_ptr(), module_name.as_ptr()),
        )?
    };
    m.add(
        name.to_str()
            .map_err(|e| PyTypeError::new_err(e.to_string()))?,
        func,
    )
}

/// Runs `body` as the whole of a CPython-called function: a new reference on success, null
/// with the exception set on error or panic.
///
/// # Safety
/// Only from a function CPython calls with the thread attached (holding the GIL).
pub unsafe fn run<F>(body: F) -> *mut ffi::PyObject
where
    F: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>>,
{
    // SAFETY: CPython calls module functions with the thread attached; the token does not
    // outlive this call.
    let py = unsafe { Python::assume_attached() };
    match catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(obj)) => obj.into_ptr(),
        Ok(Err(e)) => {
            e.restore(py);
            std::ptr::null_mut()
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic in tribes._core".to_owned());
            PanicException::new_err(msg).restore(py);
            std::ptr::null_mut()
        }
    }
}

/// The arguments of one call, matched to the parameters `params` by position or keyword:
/// `Some` for each one given. Errors are the `TypeError`s CPython's own functions raise.
///
/// # Safety
/// `args`, `nargs` and `kwnames` must be what CPython passed to a `METH_FASTCALL |
/// METH_KEYWORDS` function: `nargs` positional arguments, then one per name in `kwnames`
/// (a tuple of str, or null).
pub unsafe fn parse<'a, 'py, const N: usize>(
    py: Python<'py>,
    func: &str,
    params: [&str; N],
    required: usize,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<[Option<Borrowed<'a, 'py, PyAny>>; N]> {
    let mut out: [Option<Borrowed<'a, 'py, PyAny>>; N] = [None; N];
    let npos = usize::try_from(nargs).unwrap_or(0);
    if npos > N {
        return Err(PyTypeError::new_err(format!(
            "{func}() takes at most {N} argument{} ({npos} given)",
            if N == 1 { "" } else { "s" }
        )));
    }
    for (i, slot) in out.iter_mut().enumerate().take(npos) {
        // SAFETY: CPython passes `nargs` live borrowed references.
        *slot = Some(unsafe { Borrowed::from_ptr(py, *args.add(i)) });
    }
    if kwnames.is_null() && npos >= required {
        // The common call: positional arguments only.
        return Ok(out);
    }
    if !kwnames.is_null() {
        // SAFETY: `kwnames` is a live tuple of str, borrowed for the call.
        let names = unsafe { Borrowed::from_ptr(py, kwnames) }.cast::<PyTuple>()?;
        for (j, name) in names.iter().enumerate() {
            let name = name.cast_into::<PyString>()?;
            let name = name.to_str()?;
            let Some(i) = params.iter().position(|p| *p == name) else {
                return Err(PyTypeError::new_err(format!(
                    "{func}() got an unexpected keyword argument '{name}'"
                )));
            };
            if out[i].is_some() {
                return Err(PyTypeError::new_err(format!(
                    "{func}() got multiple values for argument '{name}'"
                )));
            }
            // SAFETY: the keyword values follow the positional ones, one per name.
            out[i] = Some(unsafe { Borrowed::from_ptr(py, *args.add(npos + j)) });
        }
    }
    if let Some((param, _)) = params[..required]
        .iter()
        .zip(&out)
        .find(|(_, a)| a.is_none())
    {
        return Err(missing(func, param));
    }
    Ok(out)
}

/// The `TypeError` for a required argument not given.
pub fn missing(func: &str, param: &str) -> PyErr {
    PyTypeError::new_err(format!("{func}() missing required argument '{param}'"))
}

/// The `TypeError` for an argument of the wrong type.
pub fn wrong_type(func: &str, param: &str, want: &str, got: &Bound<'_, PyAny>) -> PyErr {
    let got = got
        .get_type()
        .name()
        .map(|t| t.to_string())
        .unwrap_or_default();
    PyTypeError::new_err(format!(
        "{func}() argument '{param}' must be {want}, not {got}"
    ))
}

/// Defines `unsafe extern "C" fn $name`, a [`FastFn`] whose arguments are matched to `$params`
/// (the first `$required` of them required) and handed to `$body(py, name, params, args)`.
macro_rules! fast_function {
    ($name:ident, $params:expr, $required:expr, $body:expr) => {
        unsafe extern "C" fn $name(
            _module: *mut pyo3::ffi::PyObject,
            args: *const *mut pyo3::ffi::PyObject,
            nargs: pyo3::ffi::Py_ssize_t,
            kwnames: *mut pyo3::ffi::PyObject,
        ) -> *mut pyo3::ffi::PyObject {
            // SAFETY: CPython calls it as a METH_FASTCALL | METH_KEYWORDS function, with the
            // thread attached and the arguments laid out as `parse` expects.
            unsafe {
                $crate::py::fast_fn::run(|py| {
                    let name = stringify!($name);
                    let a = $crate::py::fast_fn::parse(
                        py, name, $params, $required, args, nargs, kwnames,
                    )?;
                    $body(py, name, $params, a)
                })
            }
        }
    };
}
pub(crate) use fast_function;
