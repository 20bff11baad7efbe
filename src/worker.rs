//! Workers: one thread per core, each running its own monoio runtime, accepting on its own
//! `SO_REUSEPORT` listener and serving its connections to completion.
//!
//! The kernel spreads new connections across the workers' listeners, and a connection never
//! leaves the worker that accepted it, so the request path shares nothing mutable: each worker
//! has its own upstream [`Pool`], picker and buffers. The only shared state is the endpoint
//! directory, read lock-free.
//!
//! The io driver is io_uring where the kernel and seccomp profile allow it, else epoll; `auto`
//! decides once at start-up and says which in one log line.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::access_log::{Sink, WorkerLog};
use crate::coarse_timer::CoarseTimers;
use crate::config::{Config, DownstreamLimits, IoDriver};
use crate::connection;
use crate::cors::CorsPolicy;
use crate::discovery::{self, DiscoveryHandle, DiscoveryStatus, StatusReader};
use crate::endpoints::{Balancer, EndpointDirectory, EndpointSet};
use crate::health::{self, HealthChecker, HealthTable};
use crate::refused::{self, RefusedControl, RefusedTable};
use crate::stats::WorkerStats;
use crate::upstream::{EndpointStats, Pool, PoolLinks};

/// What one worker's connections share: read-only settings and the worker's own upstream pool.
pub struct WorkerContext {
    pub index: usize,
    pub limits: DownstreamLimits,
    pub cors: CorsPolicy,
    pub directory: Arc<EndpointDirectory>,
    pub health: Arc<HealthTable>,
    /// Endpoints some worker found refusing connects; read per pick with `load()`.
    pub refused: Arc<RefusedTable>,
    pub balancer: Balancer,
    pub pool: Pool,
    pub retries: RetryBudget,
    pub warm_connections: bool,
    /// This worker's counters; only this worker writes them.
    pub stats: Arc<WorkerStats>,
    /// Set when the drain began: connections finish their current request and close.
    pub draining: Cell<bool>,
    /// Wakes idle keep-alive connections when the drain begins, so they close at once.
    pub drain_started: tokio::sync::Notify,
    /// The connections' idle, read, write and drain-grace timeouts, fired by housekeeping.
    pub timers: Rc<CoarseTimers>,
    /// This worker's access log buffer, when the log is on.
    pub access_log: std::cell::RefCell<Option<WorkerLog>>,
    /// This worker's per-endpoint view, republished by `housekeeping` for readers off the
    /// worker (the admin page); the request path never touches it.
    pub endpoint_stats: Arc<ArcSwap<Vec<EndpointStats>>>,
}

impl WorkerContext {
    /// Apply a new endpoint set to this worker's pool and warm connections to new endpoints
    /// in the background.
    pub fn reconcile(self: &Rc<Self>, set: &EndpointSet) {
        for addr in self.pool.reconcile(set) {
            if self.warm_connections {
                let context = self.clone();
                monoio::spawn(async move { context.pool.warm(addr).await });
            }
        }
    }
}

/// How often a worker fires its connections' coarse timeouts, looks for a new endpoint set
/// without waiting for a call, and republishes its endpoint statistics (every fourth time).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);

/// Per-worker background work off the request path: pick up endpoint-set changes even when
/// idle (so new endpoints are warmed and removed ones drained promptly), and publish stats.
async fn housekeeping(context: Rc<WorkerContext>) {
    for tick in 0u64.. {
        context.timers.fire_expired(Instant::now());
        let set = context.directory.snapshot();
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

/// Bounds on retrying calls the upstream provably did not process, per worker: at most
/// `attempts_max` retries per call, and retries in flight at most `budget_percent` of calls in
/// flight (but always `RETRY_CONCURRENCY_MIN`), so a failing endpoint cannot double the load
/// on the others (Envoy's retry budget, without its shared counters).
pub struct RetryBudget {
    attempts_max: u32,
    budget_percent: usize,
    calls_active: Rc<Cell<usize>>,
    retries_active: Rc<Cell<usize>>,
}

/// Retries always allowed in flight per worker, however few calls are running (Envoy's
/// `min_retry_concurrency`).
const RETRY_CONCURRENCY_MIN: usize = 3;

impl RetryBudget {
    pub fn new(attempts_max: u32, budget_percent: u32) -> Self {
        RetryBudget {
            attempts_max,
            budget_percent: budget_percent as usize,
            calls_active: Rc::new(Cell::new(0)),
            retries_active: Rc::new(Cell::new(0)),
        }
    }

    /// Count a call as active until the guard drops.
    pub fn call_started(&self) -> ActiveGuard {
        ActiveGuard::new(&self.calls_active)
    }

    /// Permission for retry number `attempt` of a call, or `None` when the per-call limit or
    /// the budget is spent.
    pub fn try_retry(&self, attempt: u32) -> Option<RetryGuard> {
        let allowed =
            (self.calls_active.get() * self.budget_percent / 100).max(RETRY_CONCURRENCY_MIN);
        if attempt > self.attempts_max || self.retries_active.get() >= allowed {
            return None;
        }
        Some(RetryGuard {
            attempt,
            _active: ActiveGuard::new(&self.retries_active),
        })
    }
}

/// Holds one unit of an active count; gives it back on drop.
pub struct ActiveGuard(Rc<Cell<usize>>);

impl ActiveGuard {
    fn new(count: &Rc<Cell<usize>>) -> Self {
        count.set(count.get() + 1);
        ActiveGuard(count.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A granted retry: which attempt it is, counted as active while it runs.
pub struct RetryGuard {
    pub attempt: u32,
    _active: ActiveGuard,
}

/// What a worker shares with the rest of the process: read-only snapshots it reads, and the
/// one it publishes.
struct WorkerShared {
    directory: Arc<EndpointDirectory>,
    health: Arc<HealthTable>,
    refused: Arc<RefusedTable>,
    refusals: refused::Reporter,
    endpoint_stats: Arc<ArcSwap<Vec<EndpointStats>>>,
    stats: Arc<WorkerStats>,
    access_log: Option<Sink>,
}

/// What readers off the workers (the admin page) may look at: published snapshots and
/// single-writer counters, never a worker's own state.
#[derive(Clone)]
pub struct ServerView {
    pub directory: Arc<EndpointDirectory>,
    pub health: Arc<HealthTable>,
    pub refused: Arc<RefusedTable>,
    pub worker_stats: Vec<Arc<WorkerStats>>,
    pub endpoint_stats: Vec<Arc<ArcSwap<Vec<EndpointStats>>>>,
    pub discovery: Option<StatusReader>,
    /// The access log's writer, for the count of lines it had to drop.
    pub access_log: Option<Sink>,
}

/// The io driver actually in use, after `auto` was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedDriver {
    Uring,
    Epoll,
}

/// A running proxy: its workers and the handle that stops them.
pub struct Server {
    local_addr: SocketAddr,
    driver: ResolvedDriver,
    directory: Arc<EndpointDirectory>,
    /// The DNS control plane, when any upstream target is a name; dropping it stops it.
    discovery: Option<DiscoveryHandle>,
    /// Active health checks, when on; dropping it stops them.
    _health_checker: Option<HealthChecker>,
    health: Arc<HealthTable>,
    /// Shares refused connects between workers; dropping it stops its thread.
    _refused_control: RefusedControl,
    refused: Arc<RefusedTable>,
    /// Each worker's latest per-endpoint view (republished about every second).
    worker_stats: Vec<Arc<ArcSwap<Vec<EndpointStats>>>>,
    counters: Vec<Arc<WorkerStats>>,
    access_log: Option<Sink>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Bind every worker's listener and start the workers. Errors (bad address, port in use,
    /// io_uring demanded but unavailable) are returned before any thread starts serving.
    pub fn start(config: &Config) -> io::Result<Server> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let driver = resolve_driver(config.io_driver)?;
        let worker_count = config.worker_count();
        let listeners = bind_listeners(config.listen, worker_count, config.backlog)?;
        let local_addr = listeners[0].local_addr()?;
        let directory = Arc::new(EndpointDirectory::new(discovery::static_addresses(
            &config.upstream,
        )));
        // Names are resolved before the workers start, so they do not begin with an empty set
        // when DNS works; the control-plane thread keeps them current from then on.
        let discovery = if config.resolves_names() {
            Some(discovery::spawn(
                config.discovery_config(),
                directory.clone(),
            )?)
        } else {
            None
        };
        let cores = if config.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let access_log_sink = Sink::start(&config.access_log)?;
        let health = Arc::new(HealthTable::default());
        let health_checker = health::spawn(
            config.health_config(),
            directory.clone(),
            health.clone(),
            config.upstream_config(),
        )?;
        let refused = Arc::new(RefusedTable::default());
        let refused_control = refused::spawn(
            directory.clone(),
            refused.clone(),
            discovery
                .as_ref()
                .and_then(DiscoveryHandle::refresh_requester),
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let mut workers = Vec::with_capacity(worker_count);
        let mut worker_stats = Vec::with_capacity(worker_count);
        let mut counters = Vec::with_capacity(worker_count);
        for (index, listener) in listeners.into_iter().enumerate() {
            let config = config.clone();
            let directory = directory.clone();
            let health = health.clone();
            let (refused, refusals) = (refused.clone(), refused_control.reporter());
            let stop_rx = stop_rx.clone();
            let endpoint_stats = Arc::new(ArcSwap::from_pointee(Vec::new()));
            worker_stats.push(endpoint_stats.clone());
            let stats = Arc::new(WorkerStats::default());
            counters.push(stats.clone());
            let access_log = access_log_sink.clone();
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let handle = std::thread::Builder::new()
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
                    let result = run_worker(
                        index,
                        driver,
                        &config,
                        listener,
                        WorkerShared {
                            directory,
                            health,
                            refused,
                            refusals,
                            endpoint_stats,
                            stats,
                            access_log,
                        },
                        stop_rx,
                    );
                    if let Err(e) = result {
                        tracing::error!(worker = index, error = %e, "worker failed");
                    }
                })?;
            workers.push(handle);
        }
        info!(
            listen = %local_addr,
            workers = worker_count,
            io_driver = ?driver,
            upstream_targets = config.upstream.len(),
            "ringway serving"
        );
        Ok(Server {
            local_addr,
            driver,
            directory,
            discovery,
            _health_checker: health_checker,
            health,
            _refused_control: refused_control,
            refused,
            worker_stats,
            counters,
            access_log: access_log_sink,
            stop,
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn io_driver(&self) -> ResolvedDriver {
        self.driver
    }

    /// The endpoint directory the workers read; the control plane publishes into it.
    pub fn directory(&self) -> &Arc<EndpointDirectory> {
        &self.directory
    }

    /// What the admin page reads.
    pub fn view(&self) -> ServerView {
        ServerView {
            directory: self.directory.clone(),
            health: self.health.clone(),
            refused: self.refused.clone(),
            worker_stats: self.counters.clone(),
            endpoint_stats: self.worker_stats.clone(),
            discovery: self.discovery.as_ref().map(DiscoveryHandle::status_reader),
            access_log: self.access_log.clone(),
        }
    }

    /// What DNS discovery last saw, per target; `None` when every target is static.
    pub fn discovery_status(&self) -> Option<Arc<DiscoveryStatus>> {
        self.discovery.as_ref().map(DiscoveryHandle::status)
    }

    /// Stop accepting, let each worker's connections finish their calls (keep-alive clients are
    /// told `Connection: close`, idle ones closed) for up to `--drain-timeout-ms`, then join.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn resolve_driver(requested: IoDriver) -> io::Result<ResolvedDriver> {
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

/// One listener per worker on the same address with SO_REUSEPORT, so the kernel balances
/// accepts across workers without a shared accept queue. Port 0 is resolved by the first bind.
fn bind_listeners(addr: SocketAddr, count: usize, backlog: i32) -> io::Result<Vec<StdTcpListener>> {
    let mut listeners: Vec<StdTcpListener> = Vec::with_capacity(count);
    let mut bind_addr = addr;
    for _ in 0..count {
        let socket = Socket::new(
            Domain::for_address(bind_addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bind_addr.into())?;
        socket.listen(backlog)?;
        let listener: StdTcpListener = socket.into();
        bind_addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn run_worker(
    index: usize,
    driver: ResolvedDriver,
    config: &Config,
    listener: StdTcpListener,
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
        timers: Rc::new(CoarseTimers::default()),
        access_log: std::cell::RefCell::new(
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
            runtime.block_on(accept_loop(listener, context, stop, drain_timeout))
        }
        ResolvedDriver::Epoll => {
            let mut runtime = RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .build()?;
            runtime.block_on(accept_loop(listener, context, stop, drain_timeout))
        }
    }
}

async fn accept_loop(
    listener: StdTcpListener,
    context: Rc<WorkerContext>,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> io::Result<()> {
    let listener = monoio::net::TcpListener::from_std(listener)?;
    monoio::spawn(housekeeping(context.clone()));
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Responses are written whole per flush; Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                let active = connection::ActiveConnection::new(&context.stats);
                monoio::spawn(connection::serve(stream, peer, context.clone(), active));
            }
            // Running out of descriptors or memory must not kill the worker: back off briefly
            // so the loop does not spin while the condition lasts.
            Err(e) => {
                debug!(worker = context.index, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    drain(&context, drain_timeout).await;
    if let Some(log) = context.access_log.borrow_mut().as_mut() {
        log.hand_over();
    }
    Ok(())
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
    if left > 0 {
        tracing::warn!(
            worker = context.index,
            connections = left,
            "drain timeout: closing connections with calls still running"
        );
    } else {
        debug!(worker = context.index, "drained");
    }
}
