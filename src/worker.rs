//! One worker: a thread with its own monoio runtime (io_uring, or epoll as fallback), accepting
//! on its own `SO_REUSEPORT` listener and serving its connections to completion.
//!
//! The kernel spreads new connections across the workers' listeners, and a connection never
//! leaves the worker that accepted it, so the request path shares nothing mutable: each worker
//! has its own [`WorkerContext`] with its upstream pool, picker, buffers and counters. Besides
//! accepting, a worker runs its housekeeping (coarse timers, endpoint-set changes, published
//! statistics) and, on shutdown, its drain.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::TcpListener as StdTcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::access_log::{Sink, WorkerLog};
use crate::coarse_timer::CoarseTimers;
use crate::config::{Config, IoDriver};
use crate::context::{ActiveConnection, WorkerContext};
use crate::downstream;
use crate::endpoints::{Balancer, EndpointDirectory};
use crate::health::HealthTable;
use crate::refused::{self, RefusedTable};
use crate::retry::RetryBudget;
use crate::stats::WorkerStats;
use crate::tls::Acceptor;
use crate::upstream::{EndpointStats, Pool, PoolLinks};

/// What a worker shares with the rest of the process: read-only snapshots it reads, and the
/// one it publishes.
pub struct WorkerShared {
    pub directory: Arc<EndpointDirectory>,
    pub health: Arc<HealthTable>,
    /// Endpoints some worker found refusing connects, and where to report new refusals.
    pub refused: Arc<RefusedTable>,
    pub refusals: refused::Reporter,
    pub endpoint_stats: Arc<ArcSwap<Vec<EndpointStats>>>,
    pub stats: Arc<WorkerStats>,
    pub access_log: Option<Sink>,
}

/// The io driver actually in use, after `auto` was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedDriver {
    Uring,
    Epoll,
}

/// Resolve `--io-driver`: `auto` takes io_uring where the kernel and seccomp profile allow it,
/// else epoll, and says so in one log line.
pub fn resolve_driver(requested: IoDriver) -> io::Result<ResolvedDriver> {
    match requested {
        IoDriver::Epoll => Ok(ResolvedDriver::Epoll),
        IoDriver::Uring if monoio::utils::detect_uring() => Ok(ResolvedDriver::Uring),
        IoDriver::Uring => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--io-driver uring: io_uring is not available (kernel too old, disabled by \
             sysctl kernel.io_uring_disabled, or blocked by a seccomp profile)",
        )),
        IoDriver::Auto if monoio::utils::detect_uring() => Ok(ResolvedDriver::Uring),
        IoDriver::Auto => {
            warn!(
                "io_uring is not available (kernel, sysctl or seccomp profile); \
                 falling back to epoll"
            );
            Ok(ResolvedDriver::Epoll)
        }
    }
}

/// A worker's listeners: the cleartext one, the TLS one (with what accepting on it needs), or
/// both.
pub struct WorkerListeners {
    pub plain: Option<StdTcpListener>,
    pub tls: Option<(StdTcpListener, Acceptor)>,
}

/// Start worker `index` on a thread of its own, pinned to `core` when given, serving
/// `listener` until `stop` says so.
pub fn spawn(
    index: usize,
    driver: ResolvedDriver,
    config: Config,
    listeners: WorkerListeners,
    shared: WorkerShared,
    core: Option<core_affinity::CoreId>,
    stop: watch::Receiver<bool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("ringway-w{index}"))
        .spawn(move || {
            if let Some(core) = core {
                if !core_affinity::set_for_current(core) {
                    warn!(
                        worker = index,
                        core = core.id,
                        "could not pin worker to core"
                    );
                }
            }
            if let Err(e) = run(index, driver, &config, listeners, shared, stop) {
                tracing::error!(worker = index, error = %e, "worker failed");
            }
        })
}

fn run(
    index: usize,
    driver: ResolvedDriver,
    config: &Config,
    listeners: WorkerListeners,
    shared: WorkerShared,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let WorkerShared {
        directory,
        health,
        refused,
        refusals,
        endpoint_stats,
        stats,
        access_log,
    } = shared;
    let context = Rc::new(WorkerContext {
        index,
        limits: config.downstream_limits(),
        cors: config.cors_policy(),
        directory,
        health,
        balancer: Balancer::new(config.lb, config.all_unhealthy, index),
        pool: Pool::with_links(
            config.upstream_config(),
            PoolLinks {
                stats: stats.clone(),
                refused: refused.clone(),
                reporter: refusals,
            },
        ),
        refused,
        retries: RetryBudget::new(config.retry_attempts_max, config.retry_budget_percent),
        warm_connections: config.warm_connections,
        endpoint_stats,
        stats,
        draining: Cell::new(false),
        drain_started: tokio::sync::Notify::new(),
        drain_expired: Cell::new(false),
        drain_ended: tokio::sync::Notify::new(),
        timers: Rc::new(CoarseTimers::default()),
        access_log: RefCell::new(
            access_log.map(|sink| WorkerLog::new(sink, config.access_log_format)),
        ),
    });
    let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
    match driver {
        ResolvedDriver::Uring => {
            let build = |flags: io_uring::Builder| {
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(config.uring_entries)
                    .uring_builder(flags)
                    .enable_timer()
                    .build()
            };
            // COOP_TASKRUN: a completion does not interrupt the worker (no IPI to run its task
            // work); the work runs at the worker's next syscall, which on a busy worker is the
            // next submit anyway. SINGLE_ISSUER: only this thread submits, so the kernel skips
            // its locking. 18 % less proxy CPU per call and fewer wake-ups for the peers
            // (docs/benchmarks.md). DEFER_TASKRUN measured 2 % better still, but defers
            // completions until monoio waits, and monoio submits without waiting while tasks
            // are runnable, so a busy worker could starve its own completions.
            let mut tuned = io_uring::IoUring::builder();
            tuned.setup_coop_taskrun().setup_single_issuer();
            let mut runtime = match build(tuned) {
                Ok(runtime) => runtime,
                Err(e) => {
                    // Kernels before 6.0 refuse these flags; the ring works without them.
                    debug!(error = %e, "io_uring COOP_TASKRUN/SINGLE_ISSUER refused; default flags");
                    build(io_uring::IoUring::builder())?
                }
            };
            runtime.block_on(accept_loop(listeners, context, stop, drain_timeout))
        }
        ResolvedDriver::Epoll => {
            let mut runtime = RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .build()?;
            runtime.block_on(accept_loop(listeners, context, stop, drain_timeout))
        }
    }
}

async fn accept_loop(
    listeners: WorkerListeners,
    context: Rc<WorkerContext>,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> io::Result<()> {
    let plain = listeners
        .plain
        .map(monoio::net::TcpListener::from_std)
        .transpose()?;
    let (tls, acceptor) = match listeners.tls {
        Some((listener, acceptor)) => (
            Some(monoio::net::TcpListener::from_std(listener)?),
            Some(Rc::new(acceptor)),
        ),
        None => (None, None),
    };
    monoio::spawn(housekeeping(context.clone()));
    let mut accept_log = AcceptFailureLog::default();
    loop {
        let (accepted, secure) = monoio::select! {
            accepted = accept_on(plain.as_ref()) => (accepted, false),
            accepted = accept_on(tls.as_ref()) => (accepted, true),
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => serve(stream, peer, &context, secure, &acceptor),
            // Running out of descriptors or memory must not kill the worker, nor the open
            // connections: the new ones wait in the kernel's queue while the worker backs off
            // briefly (so the loop does not spin), and are accepted once descriptors free up.
            Err(e) => {
                context.stats.accept_failures.add(1);
                accept_log.failed(context.index, &e);
                monoio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    context.draining.set(true);
    // Connections the kernel completed but nobody accepted yet would be reset when the
    // listener closes: a client that reconnected a moment ago (told `Connection: close` by
    // another worker) would see its request fail. They are accepted and served (and told to
    // close) like the others.
    for (listener, secure) in [(plain.as_ref(), false), (tls.as_ref(), true)] {
        let Some(listener) = listener else { continue };
        for (stream, peer) in take_queued(listener) {
            if let Ok(stream) = monoio::net::TcpStream::from_std(stream) {
                serve(stream, peer, &context, secure, &acceptor);
            }
        }
    }
    drop((plain, tls));
    drain(&context, drain_timeout).await;
    if let Some(log) = context.access_log.borrow_mut().as_mut() {
        log.hand_over();
    }
    Ok(())
}

/// How long a worker waits after a failed accept before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// At most one warning per this interval about failed accepts, per worker.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limits the warning about failed accepts: at the descriptor limit, accept fails a hundred
/// times a second for as long as it lasts.
#[derive(Default)]
struct AcceptFailureLog {
    last: Option<std::time::Instant>,
    /// Failures since the last warning.
    unlogged: u64,
}

impl AcceptFailureLog {
    fn failed(&mut self, worker: usize, error: &io::Error) {
        self.unlogged += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < ACCEPT_LOG_INTERVAL)
        {
            return;
        }
        let hint = match error.raw_os_error() {
            Some(libc::EMFILE) => {
                ": the process is at its file-descriptor limit (RLIMIT_NOFILE); new connections wait in the listen queue"
            }
            Some(libc::ENFILE) => ": the system is at its file limit (fs.file-max)",
            _ => "",
        };
        tracing::warn!(
            worker,
            error = %error,
            failures = self.unlogged,
            "accept failed{hint}"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// Serve an accepted connection in a task of its own: TLS when it came from the TLS listener.
fn serve(
    stream: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
    context: &Rc<WorkerContext>,
    secure: bool,
    acceptor: &Option<Rc<Acceptor>>,
) {
    // Responses are written whole per flush; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let active = ActiveConnection::new(&context.stats);
    match (secure, acceptor) {
        (true, Some(acceptor)) => monoio::spawn(downstream::serve_tls(
            stream,
            peer,
            context.clone(),
            acceptor.clone(),
            active,
        )),
        _ => monoio::spawn(downstream::serve(stream, peer, context.clone(), active)),
    };
}

/// The connections waiting in `listener`'s queue, accepted without waiting for more.
fn take_queued(
    listener: &monoio::net::TcpListener,
) -> Vec<(std::net::TcpStream, std::net::SocketAddr)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a second handle on the listener's descriptor, never dropped (ManuallyDrop), so
    // the descriptor is closed once, by its owner. Making it non-blocking affects only accepts
    // from here on, and the listener is closed right after.
    let std_listener = std::mem::ManuallyDrop::new(unsafe {
        std::net::TcpListener::from_raw_fd(listener.as_raw_fd())
    });
    if std_listener.set_nonblocking(true).is_err() {
        return Vec::new();
    }
    // Accepted sockets do not inherit O_NONBLOCK, and monoio's epoll driver expects it: a
    // blocking socket would block the whole worker in recv.
    std::iter::from_fn(|| std_listener.accept().ok())
        .take(QUEUED_ACCEPT_MAX)
        .filter(|(stream, _)| stream.set_nonblocking(true).is_ok())
        .collect()
}

/// At most this many queued connections are taken when a worker stops accepting (the listen
/// backlog is 1,024).
const QUEUED_ACCEPT_MAX: usize = 4096;

/// Accept on `listener`; never when there is none.
async fn accept_on(
    listener: Option<&monoio::net::TcpListener>,
) -> io::Result<(monoio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// How often a draining worker checks whether its connections are gone.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Tell this worker's connections to finish, and wait for them up to `timeout`.
async fn drain(context: &WorkerContext, timeout: Duration) {
    context.draining.set(true);
    context.drain_started.notify_waiters();
    let deadline = std::time::Instant::now() + timeout;
    while context.stats.connections_active.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
    let left = context.stats.connections_active.get();
    if left == 0 {
        debug!(worker = context.index, "drained");
        return;
    }
    tracing::warn!(
        worker = context.index,
        connections = left,
        "drain timeout: ending the calls still running with UNAVAILABLE"
    );
    // The calls still running end with a status their clients can read (a trailer frame, or
    // trailers), then their connections close; the worker waits a moment for those writes.
    context.drain_expired.set(true);
    context.drain_ended.notify_waiters();
    let deadline = std::time::Instant::now() + DRAIN_FINAL_WRITE;
    while context.stats.connections_active.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
}

/// How long a worker whose drain timed out waits for the calls it ended to write their final
/// status before it exits and closes what is left.
const DRAIN_FINAL_WRITE: Duration = Duration::from_secs(1);

/// How often a worker fires its connections' coarse timeouts, looks for a new endpoint set
/// without waiting for a call, and republishes its endpoint statistics (every fourth time).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);

/// Per-worker background work off the request path: pick up endpoint-set changes even when
/// idle (so new endpoints are warmed and removed ones drained promptly), and publish stats.
async fn housekeeping(context: Rc<WorkerContext>) {
    for tick in 0u64.. {
        context.timers.fire_expired(Instant::now());
        let set = context.directory.current();
        context.reconcile(&set);
        context.pool.housekeeping(&set);
        if tick % 4 == 0 {
            context.endpoint_stats.store(Arc::new(context.pool.stats()));
        }
        if let Some(log) = context.access_log.borrow_mut().as_mut() {
            log.hand_over();
        }
        monoio::time::sleep(HOUSEKEEPING_INTERVAL).await;
    }
}
