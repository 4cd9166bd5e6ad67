//! Bindings for the session managers: `CoreManager`, driven by `tribes.managers`.
//!
//! Every call that may send (create, get on a BackupManager, commit, invalidate, change_id,
//! waiting for state transfer) releases the GIL.

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyTuple};
use std::sync::Arc;

use super::to_pyerr;
use crate::completions::Completions;
use crate::session::manager::{AttrWrite, SessionEvent, SessionView};
use crate::session::message::Action;
use crate::session::Manager;

/// One session manager of a running channel.
#[pyclass(module = "tribes._core", frozen)]
pub struct CoreManager {
    inner: Arc<Manager>,
    /// Outcomes of `commit_background`, for an asyncio loop (created on first use).
    background: std::sync::OnceLock<Arc<Completions<crate::error::Result<bool>>>>,
}

fn view_to_py<'py>(py: Python<'py>, v: SessionView) -> PyResult<Bound<'py, PyTuple>> {
    let attrs = PyDict::new(py);
    for (k, b) in &v.attrs {
        attrs.set_item(k, PyBytes::new(py, b))?;
    }
    (
        v.id,
        v.created_ms,
        v.last_accessed_ms,
        v.max_inactive,
        v.is_new,
        v.principal,
        v.auth_type,
        attrs,
    )
        .into_pyobject(py)
}

/// Turns a session event into `("session", manager, kind, id, name, old, new)`.
pub(crate) fn session_event_to_py(py: Python<'_>, e: SessionEvent) -> PyResult<Py<PyAny>> {
    let old = e.old.map(|b| PyBytes::new(py, &b));
    let new = e.new.map(|b| PyBytes::new(py, &b));
    Ok(("session", &*e.manager, e.kind, e.id, e.name, old, new)
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

fn meta_action(kind: &str, value: &Bound<'_, PyAny>) -> PyResult<Action> {
    Ok(match kind {
        "principal" => Action::Principal(value.extract()?),
        "auth_type" => Action::AuthType(value.extract()?),
        "is_new" => Action::IsNew(value.extract()?),
        "max_inactive" => Action::MaxInactive(value.extract()?),
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown session field {other:?}"
            )))
        }
    })
}

impl CoreManager {
    /// Wraps a manager of a running channel.
    pub(crate) fn wrap(inner: Arc<Manager>) -> Self {
        CoreManager {
            inner,
            background: std::sync::OnceLock::new(),
        }
    }

    fn background(&self) -> PyResult<&Arc<Completions<crate::error::Result<bool>>>> {
        if let Some(b) = self.background.get() {
            return Ok(b);
        }
        let made = Completions::new().map_err(|e| {
            PyOSError::new_err(format!("cannot create the commit wake-up socket: {e}"))
        })?;
        Ok(self.background.get_or_init(|| Arc::new(made)))
    }
}

fn commit_args(
    writes: Vec<(String, Option<PyBackedBytes>, bool)>,
    meta: Vec<(String, Bound<'_, PyAny>)>,
) -> PyResult<(Vec<AttrWrite>, Vec<Action>)> {
    let writes: Vec<AttrWrite> = writes
        .into_iter()
        .map(|(name, value, local)| AttrWrite {
            name,
            value: value.map(|b| Bytes::copy_from_slice(&b)),
            local,
        })
        .collect();
    let meta = meta
        .iter()
        .map(|(k, v)| meta_action(k, v))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((writes, meta))
}

#[pymethods]
impl CoreManager {
    /// The manager's name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Creates a session; returns its view tuple.
    fn create<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let v = py
            .detach(|| self.inner.create())
            .map_err(|e| to_pyerr(py, e))?;
        view_to_py(py, v)
    }

    /// The session's view tuple, or None.
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let v = py
            .detach(|| self.inner.get(id))
            .map_err(|e| to_pyerr(py, e))?;
        v.map(|v| view_to_py(py, v)).transpose()
    }

    /// `(view, role)` as held here, without side effects, or None.
    fn peek<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match self.inner.peek(id) {
            None => Ok(None),
            Some((v, role)) => Ok(Some((view_to_py(py, v)?, role.as_str()).into_pyobject(py)?)),
        }
    }

    /// Commits `writes` = [(name, bytes | None, local)] and `meta` = [(field, value)].
    fn commit(
        &self,
        py: Python<'_>,
        id: &str,
        writes: Vec<(String, Option<PyBackedBytes>, bool)>,
        meta: Vec<(String, Bound<'_, PyAny>)>,
    ) -> PyResult<bool> {
        let (writes, meta) = commit_args(writes, meta)?;
        py.detach(|| self.inner.commit(id, writes, meta))
            .map_err(|e| to_pyerr(py, e))
    }

    /// Like `commit` without waiting: returns once the change is on its way; the outcome
    /// (True/False, or the exception `commit` would raise) is collected under `token` by
    /// `take_completed` once `completion_fd()` is readable.
    fn commit_background(
        &self,
        py: Python<'_>,
        token: u64,
        id: String,
        writes: Vec<(String, Option<PyBackedBytes>, bool)>,
        meta: Vec<(String, Bound<'_, PyAny>)>,
    ) -> PyResult<()> {
        let (writes, meta) = commit_args(writes, meta)?;
        let done = self.background()?.clone();
        // Writes to idle connections happen on this thread: without the GIL.
        py.detach(|| {
            self.inner
                .commit_then(&id, writes, meta, move |outcome| done.push(token, outcome));
        });
        Ok(())
    }

    /// The descriptor that becomes readable when background commits have finished.
    fn completion_fd(&self) -> PyResult<i32> {
        Ok(self.background()?.fd())
    }

    /// `[(token, True | False | exception)]` of the background commits finished so far.
    fn take_completed<'py>(&self, py: Python<'py>) -> PyResult<Vec<(u64, Bound<'py, PyAny>)>> {
        let Some(b) = self.background.get() else {
            return Ok(Vec::new());
        };
        b.take()
            .into_iter()
            .map(|(token, outcome)| {
                let value = match outcome {
                    Ok(alive) => PyBool::new(py, alive).to_owned().into_any(),
                    Err(e) => to_pyerr(py, e).into_value(py).into_bound(py).into_any(),
                };
                Ok((token, value))
            })
            .collect()
    }

    /// Invalidates a session everywhere; False when it was not held here.
    fn invalidate(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        py.detach(|| self.inner.invalidate(id))
            .map_err(|e| to_pyerr(py, e))
    }

    /// Gives a session a new id (with `route`, or the manager's) and returns it.
    #[pyo3(signature = (id, route=None))]
    fn change_id(&self, py: Python<'_>, id: &str, route: Option<String>) -> PyResult<String> {
        py.detach(|| self.inner.change_id(id, route.as_deref()))
            .map_err(|e| to_pyerr(py, e))
    }

    /// Sessions held with data.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Ids of the sessions held with data.
    fn ids(&self) -> Vec<String> {
        self.inner.ids()
    }

    /// `[(id, role, primary_uid, backup_uid)]`, proxies included.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<_> = self
            .inner
            .entries()
            .into_iter()
            .map(|(id, role, p, b)| {
                (
                    id,
                    role.as_str(),
                    PyBytes::new(py, &p),
                    PyBytes::new(py, &b),
                )
            })
            .collect();
        PyList::new(py, items)
    }

    /// Runs expiry as of `now_ms`; returns the ids that ended.
    fn process_expires(&self, py: Python<'_>, now_ms: i64) -> Vec<String> {
        py.detach(|| self.inner.process_expires(now_ms))
    }

    /// Starts the state transfer (once; a manager made with `transfer=False`).
    fn begin_transfer(&self, py: Python<'_>) {
        py.detach(|| self.inner.begin_transfer());
    }

    /// Waits for the state transfer; returns its outcome.
    fn wait_transfer(&self, py: Python<'_>) -> &'static str {
        py.detach(|| self.inner.wait_transfer()).as_str()
    }

    /// The state transfer's state.
    #[getter]
    fn transfer_state(&self) -> &'static str {
        self.inner.current_transfer_state().as_str()
    }

    /// Posts replication events for listeners (on) or not.
    fn set_listening(&self, on: bool) {
        self.inner.set_listening(on);
    }

    /// Counters as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.inner.stats() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}
