//! The one tokio runtime the bindings run on, and how Python waits for it: without the GIL,
//! so other threads run while bytes move, and waking every 50 ms to let Ctrl-C through; and
//! the lock an iterator's `__next__` holds while it waits.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors::to_py;

/// How often a wait looks for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ckptio")
            .build()
            .expect("a tokio runtime starts")
    })
}

/// Runs `future` to completion without the GIL. A signal handler that raises (Ctrl-C's
/// `KeyboardInterrupt`) stops the wait and drops the future, which cancels its requests; a
/// download keeps what it saved for a resume.
pub(crate) fn wait<F, T>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = ckptio::Result<T>> + Send,
    T: Send,
{
    let mut future = std::pin::pin!(future);
    loop {
        let step = py.detach(|| {
            runtime().block_on(async {
                tokio::select! {
                    done = &mut future => Some(done),
                    () = tokio::time::sleep(SIGNAL_CHECK) => None,
                }
            })
        });
        match step {
            Some(done) => return done.map_err(to_py),
            None => py.check_signals()?,
        }
    }
}

/// The state of an iterator that `__next__` waits on without the GIL, locked: a second thread
/// calling `__next__` meanwhile gets `ValueError`, as a generator already running does (waiting
/// for the lock while holding the GIL would deadlock).
pub(crate) fn held<T>(state: &Mutex<T>) -> PyResult<MutexGuard<'_, T>> {
    state.try_lock().map_err(|e| match e {
        TryLockError::WouldBlock => {
            PyValueError::new_err("the iterator is already running in another thread")
        }
        TryLockError::Poisoned(_) => PyValueError::new_err("the iterator failed earlier"),
    })
}
