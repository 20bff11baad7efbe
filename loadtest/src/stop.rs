//! SIGINT and SIGTERM as a flag, for the long-running commands (scenario, demo) whose loops
//! poll it and then stop everything they started in order instead of dying mid-way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often [`wait`] looks at the flag.
const POLL_MS: u64 = 20;

/// A flag set once SIGINT or SIGTERM arrives, watched by a thread of its own.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let thread_flag = flag.clone();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut terminate), Ok(mut interrupt)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                thread_flag.store(true, Ordering::Relaxed);
            });
        });
    if spawned.is_err() {
        tracing::warn!("no signal thread: Ctrl-C will not stop cleanly");
    }
    flag
}

/// Sleeps for `duration` (forever for `None`) unless the flag is set first; returns whether
/// it was.
pub fn wait(flag: &AtomicBool, duration: Option<Duration>) -> bool {
    let deadline = duration.map(|duration| Instant::now() + duration);
    loop {
        if flag.load(Ordering::Relaxed) {
            return true;
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}
