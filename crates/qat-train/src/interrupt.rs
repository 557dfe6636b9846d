//! Stopping a run cleanly on a scheduler's signal.
//!
//! Slurm sends `SIGTERM` when it preempts, cancels or requeues a job (and `SIGKILL` after its
//! `KillWait`, 30 s by default), and `SIGUSR1` (or whatever `--signal` names) some time before
//! the job's time limit. Once [`install`]ed, the first `SIGTERM` or `SIGUSR1` lets a run finish
//! the step (or the block-wise block) it is in, write a checkpoint and stop with an error that
//! says so; the same command then continues from there. A second signal of the same kind
//! terminates at once, so a user who does not want to wait still can.

use crate::TrainError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// `qat train` / `qat sweep` exit status of a run stopped by a signal after writing its
/// checkpoint (`EX_TEMPFAIL`: try again later — the same command resumes).
pub const EXIT_INTERRUPTED: i32 = 75;

/// The signals that stop a run cleanly.
const SIGNALS: [(i32, &str); 2] = [(signal_hook::consts::SIGTERM, "SIGTERM"), (signal_hook::consts::SIGUSR1, "SIGUSR1")];

/// Per entry of [`SIGNALS`]: set once that signal arrived; `None` before [`install`].
static RECEIVED: OnceLock<Result<[Arc<AtomicBool>; 2], String>> = OnceLock::new();

/// Installs the handlers (once per process; later calls return the first result). Before
/// this, the signals keep their default action (terminate).
pub fn install() -> Result<(), TrainError> {
    RECEIVED
        .get_or_init(|| {
            let flags = [Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))];
            for ((signal, name), flag) in SIGNALS.iter().zip(&flags) {
                // Registered first, so that a second signal (flag already set) terminates.
                signal_hook::flag::register_conditional_shutdown(*signal, 1, flag.clone()).map_err(|e| format!("{name} handler: {e}"))?;
                signal_hook::flag::register(*signal, flag.clone()).map_err(|e| format!("{name} handler: {e}"))?;
            }
            Ok(flags)
        })
        .as_ref()
        .map(|_| ())
        .map_err(|e| TrainError::Run(e.clone()))
}

/// The name of the signal that asked the run to stop, if one did.
pub fn requested() -> Option<&'static str> {
    let flags = RECEIVED.get()?.as_ref().ok()?;
    SIGNALS.iter().zip(flags).find(|(_, f)| f.load(Ordering::SeqCst)).map(|((_, name), _)| *name)
}
