//! The running proxy as a whole: bind every worker's listener, start the control plane
//! (discovery, health checks, the access-log writer) and the workers, expose what the admin page
//! reads, and stop everything on shutdown.
//!
//! This is the only place that sees all workers; each worker is started by `worker::spawn` and
//! from then on shares nothing mutable with the others.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;
use tracing::info;

use crate::access_log::Sink;
use crate::config::Config;
use crate::discovery::{self, DiscoveryHandle, DiscoveryStatus, StatusReader};
use crate::endpoints::EndpointDirectory;
use crate::health::{self, HealthChecker, HealthTable};
use crate::refused::{self, RefusedControl, RefusedTable};
use crate::stats::WorkerStats;
use crate::tls::{ConfigHandle, Reloader, TlsSettings};
use crate::upstream::EndpointStats;
use crate::worker::{self, ResolvedDriver, WorkerListeners, WorkerShared};

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
    /// The TLS certificate in use and its reload counters, with `--tls-listen`.
    pub tls: Option<ConfigHandle>,
}

/// A running proxy: its workers and the handle that stops them.
pub struct Server {
    /// The cleartext listener's address, or the TLS one's when cleartext is off.
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    /// Re-reads the certificate when it changes, with `--tls-listen`; dropping it stops it.
    _tls_reloader: Option<Reloader>,
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
        let driver = worker::resolve_driver(config.io_driver)?;
        let worker_count = config.worker_count();
        let bind = |addr| bind_listeners(addr, worker_count, config.backlog);
        let plain = config.listen.0.map(bind).transpose()?;
        let tls = config.tls_listen.0.map(bind).transpose()?;
        let first_addr = |listeners: &Option<Vec<StdTcpListener>>| {
            listeners.as_ref().map(|l| l[0].local_addr()).transpose()
        };
        let (plain_addr, tls_addr) = (first_addr(&plain)?, first_addr(&tls)?);
        // The certificate is loaded (and its errors reported) before any worker starts.
        let tls_settings = TlsSettings::from_flags(config);
        let reloader = tls_settings
            .as_ref()
            .map(TlsSettings::start_reloader)
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
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
        let mut plain = plain.map(Vec::into_iter);
        let mut tls = tls.map(Vec::into_iter);
        for index in 0..worker_count {
            let listeners = WorkerListeners {
                plain: plain.as_mut().and_then(Iterator::next),
                tls: tls.as_mut().and_then(Iterator::next).map(|listener| {
                    let settings = tls_settings
                        .as_ref()
                        .expect("TLS settings with a TLS listener");
                    let handle = reloader.as_ref().expect("a reloader with TLS").handle();
                    (listener, settings.acceptor(handle))
                }),
            };
            let endpoint_stats = Arc::new(ArcSwap::from_pointee(Vec::new()));
            worker_stats.push(endpoint_stats.clone());
            let stats = Arc::new(WorkerStats::default());
            counters.push(stats.clone());
            let shared = WorkerShared {
                directory: directory.clone(),
                health: health.clone(),
                refused: refused.clone(),
                refusals: refused_control.reporter(),
                endpoint_stats,
                stats,
                access_log: access_log_sink.clone(),
            };
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            workers.push(worker::spawn(
                index,
                driver,
                config.clone(),
                listeners,
                shared,
                core,
                stop_rx.clone(),
            )?);
        }
        let local_addr = plain_addr
            .or(tls_addr)
            .expect("validate() requires a listener");
        let shown =
            |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        info!(
            listen = %shown(plain_addr),
            tls_listen = %shown(tls_addr),
            workers = worker_count,
            io_driver = ?driver,
            upstream_targets = config.upstream.len(),
            "ringway serving"
        );
        Ok(Server {
            local_addr,
            tls_addr,
            _tls_reloader: reloader,
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

    /// The cleartext listener's address (the TLS listener's when cleartext is off).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS listener's address, with `--tls-listen`.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
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
            tls: self._tls_reloader.as_ref().map(Reloader::handle),
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
