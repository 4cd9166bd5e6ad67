//! The PyO3 bindings: `tribes._core`. Thin wrappers only; the only module that knows Python.
//!
//! Every call that can block (start, stop, acknowledged sends, waiting for events) releases the
//! GIL. Network tasks never call Python: the dispatcher thread in `tribes.cluster` drains events
//! through [`CoreChannel::next_events`] and runs the callbacks.

mod codec;
mod datetime_capi;
mod fast_fn;
mod session;

use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyTuple};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use crate::channel::Channel;
use crate::config::CoreConfig;
use crate::error::Error;
use crate::events::{self, Event, LogRecord};
use crate::member::{Member, MemberKey};
use crate::session::{Kind as SessionKind, Settings};
use crate::wire::options::{parse_send_options, send_options_to_string};

pyo3::import_exception!(tribes.errors, ConfigError);
pyo3::import_exception!(tribes.errors, ChannelError);
pyo3::import_exception!(tribes.errors, ProtocolError);
pyo3::import_exception!(tribes.errors, NotStartedError);
pyo3::import_exception!(tribes.errors, SessionError);
pyo3::import_exception!(tribes.errors, TooManySessionsError);

/// Maps a core error to its `tribes.errors` class.
pub(crate) fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    match err {
        Error::Config(msg) => match msg.split_once(": ") {
            // "field: reason" → ConfigError(reason, field), so `err.field` is set.
            Some((field, reason)) if !field.contains(' ') => {
                ConfigError::new_err((reason.to_string(), field.to_string()))
            }
            _ => ConfigError::new_err(msg),
        },
        Error::Io { .. } => PyOSError::new_err(err.to_string()),
        Error::Wire(e) => ProtocolError::new_err(e.to_string()),
        Error::NotStarted => NotStartedError::new_err("the cluster is not started"),
        Error::Session(msg) => SessionError::new_err(msg),
        Error::TooManySessions(msg) => TooManySessionsError::new_err(msg),
        Error::Channel { message, faulty } => {
            let items: Vec<(PyMember, String)> = faulty
                .into_iter()
                .map(|f| (PyMember { inner: f.member }, f.cause))
                .collect();
            match items.into_pyobject(py) {
                Ok(list) => ChannelError::new_err((message, list.unbind())),
                Err(e) => e,
            }
        }
    }
}

/// A cluster member (Tomcat's `Member`): identity is host + port + unique id.
#[pyclass(name = "Member", module = "tribes", frozen)]
#[derive(Clone)]
pub struct PyMember {
    pub(crate) inner: Arc<Member>,
}

#[pymethods]
impl PyMember {
    /// `tcp://<host>:<port>`.
    #[getter]
    fn name(&self) -> String {
        self.inner.name()
    }
    /// The member's IP address as text.
    #[getter]
    fn host(&self) -> String {
        self.inner.host_string()
    }
    /// Its TCP replication port.
    #[getter]
    fn port(&self) -> i32 {
        self.inner.packet.port
    }
    /// The 16-byte random id of the member's process.
    #[getter]
    fn unique_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.packet.unique_id)
    }
    /// Milliseconds the member has been running, as it last advertised.
    #[getter]
    fn alive_ms(&self) -> i64 {
        self.inner.packet.alive_ms
    }
    /// Its membership domain.
    #[getter]
    fn domain<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.packet.domain)
    }
    /// The application payload of its heartbeats.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.packet.payload)
    }
    /// The command field of its last heartbeat (empty, or `BABY-ALEX` at shutdown).
    #[getter]
    fn command<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.packet.command)
    }
    /// Secure port (-1: none).
    #[getter]
    fn secure_port(&self) -> i32 {
        self.inner.packet.secure_port
    }
    /// UDP port (-1: none).
    #[getter]
    fn udp_port(&self) -> i32 {
        self.inner.packet.udp_port
    }
    /// The Tribes member packet, as encoded.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.encoded)
    }
    fn __repr__(&self) -> String {
        let id: String = self
            .inner
            .packet
            .unique_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "Member(name={:?}, unique_id={id}, alive_ms={})",
            self.inner.name(),
            self.inner.packet.alive_ms
        )
    }
    fn __str__(&self) -> String {
        self.inner.name()
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PyMember>() {
            Ok(o) => self.inner.same_as(&o.get().inner),
            Err(_) => false,
        }
    }
    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.key().hash(&mut h);
        h.finish()
    }
}

/// Completes a synchronised-ack message once the Python listeners ran.
#[pyclass(module = "tribes._core", frozen)]
pub struct AckToken {
    reply: Mutex<Option<oneshot::Sender<bool>>>,
}

#[pymethods]
impl AckToken {
    /// Sends ACK (`ok=True`) or NACK to the sender; later calls do nothing.
    fn complete(&self, ok: bool) {
        if let Some(tx) = self.reply.lock().take() {
            let _ = tx.send(ok);
        }
    }
}

/// The Rust group channel behind `tribes.Cluster`.
#[pyclass(module = "tribes._core", frozen)]
pub struct CoreChannel {
    pub(crate) inner: Channel,
}

fn options_from_py(options: &Bound<'_, PyAny>) -> PyResult<u32> {
    // Check the type first: a failed extract() builds an exception, which costs more than the send.
    if let Ok(s) = options.cast::<PyString>() {
        return parse_send_options(s.to_str()?)
            .map_err(|e| ConfigError::new_err(format!("send_options: {e}")));
    }
    if let Ok(n) = options.cast::<PyInt>() {
        let n: i64 = n.extract()?;
        return u32::try_from(n)
            .map_err(|_| ConfigError::new_err(format!("send_options: {n} is out of range")));
    }
    Err(PyTypeError::new_err("send options must be an int or a str"))
}

fn event_to_py(py: Python<'_>, ev: Event) -> PyResult<Py<PyAny>> {
    let t = match ev {
        Event::MemberAdded(m) => ("added", PyMember { inner: m })
            .into_pyobject(py)?
            .into_any(),
        Event::MemberDisappeared(m) => ("disappeared", PyMember { inner: m })
            .into_pyobject(py)?
            .into_any(),
        Event::Message {
            sender,
            data,
            reply,
        } => {
            let token = match reply {
                Some(tx) => Some(Py::new(
                    py,
                    AckToken {
                        reply: Mutex::new(Some(tx)),
                    },
                )?),
                None => None,
            };
            (
                "message",
                PyMember { inner: sender },
                PyBytes::new(py, &data),
                token,
            )
                .into_pyobject(py)?
                .into_any()
        }
        Event::Session(e) => return session::session_event_to_py(py, e),
        Event::SendFailed { member, cause } => ("send_failed", PyMember { inner: member }, cause)
            .into_pyobject(py)?
            .into_any(),
    };
    Ok(t.unbind())
}

fn logs_to_py<'py>(py: Python<'py>, logs: Vec<LogRecord>) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<(u8, String, String)> = logs
        .into_iter()
        .map(|r| (r.level, r.logger, r.message))
        .collect();
    PyList::new(py, items)
}

#[pymethods]
impl CoreChannel {
    /// Makes a stopped channel from `ClusterConfig.to_core_json()`.
    #[new]
    fn new(config_json: &str) -> PyResult<Self> {
        let cfg =
            CoreConfig::from_json(config_json).map_err(|e| Python::attach(|py| to_pyerr(py, e)))?;
        let inner = Channel::new(cfg).map_err(|e| Python::attach(|py| to_pyerr(py, e)))?;
        Ok(CoreChannel { inner })
    }

    /// Binds sockets and starts the runtime.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.start())
            .map_err(|e| to_pyerr(py, e))
    }

    /// Sends the shutdown heartbeat, stops every task and closes every socket.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.inner.stop());
    }

    /// True between start and stop.
    #[getter]
    fn running(&self) -> bool {
        self.inner.is_running()
    }

    /// Members in the view, oldest-running first.
    fn members(&self) -> Vec<PyMember> {
        self.inner
            .members()
            .into_iter()
            .map(|inner| PyMember { inner })
            .collect()
    }

    /// The local member (None when stopped).
    fn local_member(&self) -> Option<PyMember> {
        self.inner
            .local_member()
            .map(|m| PyMember { inner: Arc::new(m) })
    }

    /// (host, port) of the bound receiver.
    fn receiver_address(&self) -> Option<(String, u16)> {
        self.inner
            .receiver_address()
            .map(|a| (a.ip().to_string(), a.port()))
    }

    /// Sends bytes; see `tribes.Cluster.send`.
    #[pyo3(signature = (data, to=None, options=None))]
    fn send(
        &self,
        py: Python<'_>,
        data: PyBackedBytes,
        to: Option<Vec<PyRef<'_, PyMember>>>,
        options: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let bits = match options {
            Some(o) => options_from_py(o)?,
            None => self.inner.config().send_options,
        };
        let keys: Option<Vec<MemberKey>> = to.map(|v| v.iter().map(|m| m.inner.key()).collect());
        // Even an async send may wait for room in a full queue: never hold the GIL meanwhile.
        py.detach(|| self.inner.send(&data, keys.as_deref(), bits))
            .map_err(|e| to_pyerr(py, e))
    }

    /// The session manager `name`, created on first use with these settings (its state transfer
    /// starts at once; see `CoreManager.wait_transfer`).
    #[pyo3(signature = (name, kind, send_options, max_inactive, max_active, batch_size,
                        state_transfer_timeout_ms, rpc_timeout_ms, route=None, transfer=true))]
    #[allow(clippy::too_many_arguments)]
    fn manager(
        &self,
        py: Python<'_>,
        name: &str,
        kind: &str,
        send_options: u32,
        max_inactive: i32,
        max_active: i64,
        batch_size: usize,
        state_transfer_timeout_ms: u64,
        rpc_timeout_ms: u64,
        route: Option<String>,
        transfer: bool,
    ) -> PyResult<session::CoreManager> {
        if name.is_empty() || name.len() > crate::session::message::MAX_NAME {
            return Err(PyValueError::new_err(
                "a manager name must have 1 to 255 bytes",
            ));
        }
        let kind = match kind {
            "delta" => SessionKind::Delta,
            "backup" => SessionKind::Backup,
            other => {
                return Err(PyValueError::new_err(format!(
                    "manager kind must be 'delta' or 'backup', not {other:?}"
                )))
            }
        };
        let settings = Settings {
            kind,
            send_options,
            max_inactive,
            max_active,
            batch_size: batch_size.max(1),
            state_transfer_timeout: Duration::from_millis(state_transfer_timeout_ms),
            rpc_timeout: Duration::from_millis(rpc_timeout_ms.max(1)),
            route,
        };
        let inner = py
            .detach(|| self.inner.manager(name, settings, transfer))
            .map_err(|e| to_pyerr(py, e))?;
        Ok(session::CoreManager::wrap(inner))
    }

    /// Turns delivery of messages to Python on (when a listener exists) or off.
    fn set_deliver_messages(&self, on: bool) {
        self.inner.set_deliver_messages(on);
    }

    /// Waits up to `timeout_ms` (GIL released) and returns `(events, logs, closed)`.
    /// Events: `("added", m)`, `("disappeared", m)`, `("message", m, data, token|None)`,
    /// `("send_failed", m, cause)`. Logs: `(level, logger, message)`.
    #[pyo3(signature = (max=512, timeout_ms=200))]
    fn next_events<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        timeout_ms: u64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let Some(rx) = self.inner.events() else {
            let logs = logs_to_py(py, events::drain_logs(max))?;
            return (PyList::empty(py), logs, true).into_pyobject(py);
        };
        let batch = py.detach(|| rx.next_batch(max.max(1), Duration::from_millis(timeout_ms)));
        let evs = PyList::empty(py);
        for ev in batch.events {
            evs.append(event_to_py(py, ev)?)?;
        }
        let logs = logs_to_py(py, batch.logs)?;
        (evs, logs, batch.closed).into_pyobject(py)
    }

    /// Counters as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.inner.stats().snapshot() {
            d.set_item(k, v)?;
        }
        d.set_item("logs_dropped", events::logs_dropped())?;
        Ok(d)
    }
}

/// Parses Tomcat send options ("use_ack,sync", "async", "6") into bits.
#[pyfunction(name = "parse_send_options")]
fn py_parse_send_options(text: &str) -> PyResult<u32> {
    parse_send_options(text).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Tomcat's text for option bits ("async, sync, use_ack, byte").
#[pyfunction(name = "send_options_to_string")]
fn py_send_options_to_string(bits: u32) -> String {
    send_options_to_string(bits)
}

/// Sets the most verbose Python logging level forwarded from Rust (a `logging` level number).
#[pyfunction]
fn set_log_level(level: i32) {
    let filter = match level {
        l if l <= 5 => log::LevelFilter::Trace,
        l if l <= 10 => log::LevelFilter::Debug,
        l if l <= 20 => log::LevelFilter::Info,
        l if l <= 30 => log::LevelFilter::Warn,
        l if l <= 50 => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    };
    events::set_log_level(filter);
}

/// Log records waiting for a dispatcher (used at stop and when no cluster runs).
#[pyfunction]
#[pyo3(signature = (max=10000))]
fn drain_logs(py: Python<'_>, max: usize) -> PyResult<Bound<'_, PyList>> {
    logs_to_py(py, events::drain_logs(max))
}

/// Panics inside Rust on purpose: tests check that PyO3 turns it into a Python exception
/// (`pyo3_runtime.PanicException`) instead of aborting the process.
#[pyfunction]
fn _panic_for_tests() {
    panic!("deliberate panic for tests");
}

/// Whether the value codec reaches datetimes through the `datetime` C API (it checked out at
/// first use) rather than attribute access: tests assert it, so a Python whose layout differs
/// does not silently make the codec slower.
#[pyfunction]
fn _codec_uses_datetime_capi(py: Python<'_>) -> bool {
    datetime_capi::get(py).is_some()
}

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    events::install_logger(log::LevelFilter::Info);
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<CoreChannel>()?;
    m.add_class::<PyMember>()?;
    m.add_class::<AckToken>()?;
    m.add_class::<session::CoreManager>()?;
    m.add_function(wrap_pyfunction!(py_parse_send_options, m)?)?;
    m.add_function(wrap_pyfunction!(py_send_options_to_string, m)?)?;
    m.add_function(wrap_pyfunction!(set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(drain_logs, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(_codec_uses_datetime_capi, m)?)?;
    codec::entry::add_to(m)?;
    Ok(())
}
