//! The `ringway` binary: parse flags, start the workers, run until SIGINT or SIGTERM.
//! `ringway demo` instead runs the demo of ringway-load with an in-process ringway.

use std::process::ExitCode;

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Parser;
use ringway::admin::{self, DrainReason, Lifecycle};
use ringway::config::{Admin, Command, Config, DemoArgs};
use ringway::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs from `.init_array`, before Rust's runtime makes its first allocation, because mimalloc
/// reads this option when it creates its first arena.
///
/// With eager arena commit (mimalloc's default) a fresh process commits most of a 4 MiB
/// segment per thread up front, which tripled the resident size of an idle two-worker proxy
/// (4.9 MB → 12.5 MB measured). Committing on demand keeps the footprint proportional to the
/// connections actually served; the sidecar this replaces ran under a 20 Mi limit.
///
/// Purging after 10 ms instead of mimalloc v3's 1 s gives pages freed by one size class back
/// in time for another to reuse them: a burst of 1,000 new connections peaked 0.3-0.9 MB lower
/// (docs/benchmarks.md), for about 400 `madvise` calls a second under that load and no
/// CPU cost per call measurable beside the run-to-run noise.
extern "C" fn configure_allocator() {
    // Indices in mimalloc v3's `mi_option_e` (include/mimalloc.h), the version libmimalloc-sys
    // builds by default; its Rust constants predate these options.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option is a plain store into mimalloc's option table.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 10);
    }
}

#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Demo(args)) = config.command {
        return demo(args);
    }
    ringway::log::init(&config.log_level, config.log_format);
    if let Err(e) = config.validate() {
        eprintln!("ringway: {e}");
        return ExitCode::from(2);
    }
    raise_fd_limit();
    // Block the stop signals before any thread starts so every thread inherits the mask and
    // the signals are only ever taken by sigwait in the signal thread.
    let signals = stop_signals();
    let server = match Server::start(&config) {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "ringway could not start");
            return ExitCode::FAILURE;
        }
    };
    let (drain_tx, drain_rx) = mpsc::channel();
    let lifecycle = Arc::new(Lifecycle::default());
    let _admin = match config.admin {
        Admin::Off => None,
        Admin::Listen(addr) => {
            match admin::spawn(
                addr,
                config.clone(),
                server.view(),
                lifecycle.clone(),
                drain_tx.clone(),
            ) {
                Ok(admin) => Some(admin),
                Err(e) => {
                    tracing::error!(admin = %addr, error = %e, "admin listener could not start");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let signalled = lifecycle.clone();
    std::thread::spawn(move || loop {
        let signal = wait_for(&signals);
        if signalled.draining.load(Ordering::Relaxed) {
            // A second Ctrl-C (or SIGTERM) during the drain: the operator does not want to wait.
            tracing::warn!(signal, "second stop signal while draining: exiting now");
            std::process::exit(1);
        }
        let _ = drain_tx.send(DrainReason::Signal(signal));
    });
    let reason = drain_rx.recv().unwrap_or(DrainReason::AdminRequest);
    drain(server, &config, &lifecycle, reason);
    ExitCode::SUCCESS
}

/// The drain: fail readiness, keep serving while the load balancer in front notices, then stop
/// accepting and let calls in flight finish (bounded by --drain-timeout-ms).
fn drain(server: Server, config: &Config, lifecycle: &Lifecycle, reason: DrainReason) {
    lifecycle.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        ?reason,
        drain_delay_ms = config.drain_delay_ms,
        drain_timeout_ms = config.drain_timeout_ms,
        "draining: readiness now fails (a second Ctrl-C or SIGTERM exits at once)"
    );
    std::thread::sleep(Duration::from_millis(config.drain_delay_ms));
    tracing::info!("draining: no longer accepting; finishing calls in flight");
    server.shutdown();
    tracing::info!("drained; exiting");
}

/// `ringway demo`: three pods, their DNS server and ringway on one machine, a short load, a
/// scale to five, then serving until Ctrl-C.
#[cfg(feature = "demo")]
fn demo(args: DemoArgs) -> ExitCode {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = ringway_load::demo::DemoConfig {
        listen: args.listen,
        pods_start: args.pods,
        pods_scaled: args.scale_to,
        ..Default::default()
    };
    let workers = args.workers.to_string();
    let result = ringway_load::demo::run(config, |request| {
        let mut flags = vec!["ringway".to_owned(), "--workers".to_owned(), workers];
        flags.extend(request.ringway_args());
        let config = Config::from_args(flags)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Server::start(&config)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringway demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A production build (`--no-default-features`) has no demo: say how to get one.
#[cfg(not(feature = "demo"))]
fn demo(_: DemoArgs) -> ExitCode {
    eprintln!(
        "ringway demo: this build has no demo (built without the `demo` feature); \
         run `cargo run --release -- demo` from the source tree"
    );
    ExitCode::from(2)
}

/// Raise the soft limit on open descriptors to the hard limit: every connection is one (two with
/// its upstream share), and the soft limit is often 1,024 while the hard one allows far more.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the rlimit struct we own.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        (before < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0)
            .then_some(before)
    };
    match raised {
        Some(before) => tracing::info!(
            from = before,
            to = limit.rlim_cur,
            "raised the open-file limit to its hard limit"
        ),
        None => tracing::info!(limit = limit.rlim_cur, "open-file limit"),
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a sigset_t we own; pthread_sigmask only changes this thread's
    // mask, which threads spawned afterwards inherit.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: `set` is a valid, initialised signal set; sigwait writes the signal number.
    unsafe { libc::sigwait(set, &mut signal) };
    signal
}
