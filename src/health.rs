//! Active health checks, run by the control plane and published to the workers lock-free.
//!
//! One thread runs its own monoio runtime and checks every endpoint of the current set each
//! interval, all endpoints concurrently: a TCP connect (`tcp`), or a
//! `grpc.health.v1.Health/Check` call (`grpc`) made through an [`upstream::Pool`] of its own, so
//! gRPC checks ride persistent HTTP/2 connections instead of a connection per check. An endpoint
//! turns unhealthy after `unhealthy_threshold` failed checks in a row and healthy again after
//! `healthy_threshold` passed ones. The set of unhealthy endpoints is published as an immutable
//! snapshot ([`HealthTable`]); workers read it with one atomic load per call and never wait on
//! a check.
//!
//! New endpoints count as healthy until checks say otherwise, unlike Envoy, which holds a new
//! host back until its first check passes: that delay is one of the slow scale-up pickups ringway
//! exists to avoid, and passive outlier ejection covers a new endpoint that fails.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Uri};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::endpoints::EndpointDirectory;
use crate::upstream::{Pool, UpstreamConfig};

/// Which active check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthCheckKind {
    Off,
    Tcp,
    Grpc,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// `HealthCheckRequest.service`; empty asks about the server as a whole.
    pub service: String,
}

/// A health response larger than this is not a health response.
const HEALTH_RESPONSE_BYTES_MAX: usize = 4096;

/// The endpoints that failed their active checks, as an atomically swapped snapshot.
#[derive(Debug, Default)]
pub struct HealthTable {
    unhealthy: ArcSwap<HashSet<SocketAddr>>,
}

impl HealthTable {
    /// The current unhealthy set; empty whenever checks are off or everything passes.
    pub fn unhealthy(&self) -> Arc<HashSet<SocketAddr>> {
        self.unhealthy.load_full()
    }

    /// The current unhealthy set for the request path, as a guard that leaves the shared
    /// reference count alone (see `EndpointDirectory::current`).
    pub fn current_unhealthy(&self) -> arc_swap::Guard<Arc<HashSet<SocketAddr>>> {
        self.unhealthy.load()
    }

    fn publish(&self, unhealthy: HashSet<SocketAddr>) {
        self.unhealthy.store(Arc::new(unhealthy));
    }
}

/// The running checker; dropping it stops and joins the thread.
pub struct HealthChecker {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Start checking the endpoints of `directory`, publishing into `table`. `None` when checks
/// are off.
pub fn spawn(
    config: HealthConfig,
    directory: Arc<EndpointDirectory>,
    table: Arc<HealthTable>,
    upstream: UpstreamConfig,
) -> io::Result<Option<HealthChecker>> {
    if config.kind == HealthCheckKind::Off {
        return Ok(None);
    }
    let (stop, stop_rx) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("ringway-health".into())
        .spawn(move || {
            // The control plane is not on the request path: epoll is enough and always works.
            let runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build();
            match runtime {
                Ok(mut runtime) => {
                    runtime.block_on(check_loop(config, directory, table, upstream, stop_rx))
                }
                Err(e) => warn!(error = %e, "health checker could not start its runtime"),
            }
        })?;
    Ok(Some(HealthChecker {
        stop,
        thread: Some(thread),
    }))
}

/// Consecutive results of one endpoint's checks.
#[derive(Debug, Clone, Copy)]
struct Streak {
    healthy: bool,
    passes: u32,
    failures: u32,
}

impl Default for Streak {
    /// A new endpoint starts healthy (see the module doc).
    fn default() -> Self {
        Streak {
            healthy: true,
            passes: 0,
            failures: 0,
        }
    }
}

impl Streak {
    /// Record one check; returns the new health when it changed.
    fn record(&mut self, passed: bool, config: &HealthConfig) -> Option<bool> {
        if passed {
            self.passes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.passes = 0;
        }
        let turn = if self.healthy {
            self.failures >= config.unhealthy_threshold
        } else {
            self.passes >= config.healthy_threshold
        };
        if turn {
            self.healthy = !self.healthy;
            return Some(self.healthy);
        }
        None
    }
}

async fn check_loop(
    config: HealthConfig,
    directory: Arc<EndpointDirectory>,
    table: Arc<HealthTable>,
    upstream: UpstreamConfig,
    mut stop: watch::Receiver<bool>,
) {
    let pool = Rc::new(Pool::new(upstream));
    let config = Rc::new(config);
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    loop {
        let set = directory.snapshot();
        pool.reconcile(&set);
        streaks.retain(|addr, _| set.endpoints.contains(addr));
        let checks: Vec<_> = set
            .endpoints
            .iter()
            .map(|&addr| {
                let (pool, config) = (pool.clone(), config.clone());
                (
                    addr,
                    monoio::spawn(async move { check(addr, &config, &pool).await }),
                )
            })
            .collect();
        let mut changed = false;
        for (addr, check) in checks {
            let result = check.await;
            let streak = streaks.entry(addr).or_default();
            if streak.record(result.is_ok(), &config).is_some() {
                changed = true;
                match &result {
                    Ok(()) => info!(endpoint = %addr, "endpoint passed health checks; healthy"),
                    Err(reason) => {
                        warn!(endpoint = %addr, reason = %reason, "endpoint failed health checks; unhealthy")
                    }
                }
            }
        }
        if changed || table.unhealthy().iter().any(|a| !streaks.contains_key(a)) {
            table.publish(
                streaks
                    .iter()
                    .filter(|(_, s)| !s.healthy)
                    .map(|(a, _)| *a)
                    .collect(),
            );
        }
        monoio::select! {
            _ = monoio::time::sleep(config.interval) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn check(addr: SocketAddr, config: &HealthConfig, pool: &Pool) -> Result<(), String> {
    let attempt = async {
        match config.kind {
            HealthCheckKind::Off => Ok(()),
            HealthCheckKind::Tcp => monoio::net::TcpStream::connect_addr(addr)
                .await
                .map(drop)
                .map_err(|e| format!("connect: {e}")),
            HealthCheckKind::Grpc => grpc_check(addr, &config.service, pool).await,
        }
    };
    monoio::time::timeout(config.timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {} ms",
                config.timeout.as_millis()
            ))
        })
}

/// One `grpc.health.v1.Health/Check` call; passes only on grpc-status 0 and `SERVING`.
async fn grpc_check(addr: SocketAddr, service: &str, pool: &Pool) -> Result<(), String> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query("/grpc.health.v1.Health/Check")
        .build()
        .map_err(|e| e.to_string())?;
    let request = || {
        Request::post(uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("static method, a valid uri and static headers make a valid request")
    };
    let mut call = pool
        .start_call(addr, request, false)
        .await
        .map_err(|e| e.to_string())?;
    call.body
        .send_data(health_request(service), true)
        .map_err(|e| e.to_string())?;
    let response = call.response.await.map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("HTTP {}", response.status()));
    }
    if let Some(status) = response.headers().get("grpc-status") {
        // Trailers-only reply: no message.
        return Err(format!(
            "grpc-status {}",
            String::from_utf8_lossy(status.as_bytes())
        ));
    }
    let mut body = response.into_body();
    let mut received = BytesMut::new();
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(data.len());
        if received.len() + data.len() > HEALTH_RESPONSE_BYTES_MAX {
            return Err("health response too large".into());
        }
        received.extend_from_slice(&data);
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    let status = trailers.as_ref().and_then(|t| t.get("grpc-status"));
    if status.map(|s| s.as_bytes()) != Some(b"0") {
        return Err(format!("grpc-status {status:?}"));
    }
    match serving_status(received.freeze()) {
        Some(1) => Ok(()),
        Some(other) => Err(format!("health status {other} (1 = SERVING)")),
        None => Err("malformed HealthCheckResponse".into()),
    }
}

/// `HealthCheckRequest { service }` in a gRPC frame (field 1, length-delimited).
fn health_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame.freeze()
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The `status` field (1, varint) of the `HealthCheckResponse` in one gRPC frame; 0 (UNKNOWN)
/// when absent, as proto3 omits default values.
fn serving_status(mut frame: Bytes) -> Option<u64> {
    if frame.len() < 5 || frame[0] != 0 {
        return None;
    }
    frame.advance(1);
    let length = frame.get_u32() as usize;
    if frame.len() != length {
        return None;
    }
    let mut status = 0;
    while frame.has_remaining() {
        let key = get_varint(&mut frame)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut frame)?,
            (_, 0) => {
                get_varint(&mut frame)?;
            }
            (_, 2) => {
                let skip = usize::try_from(get_varint(&mut frame)?).ok()?;
                if skip > frame.len() {
                    return None;
                }
                frame.advance(skip);
            }
            (_, 1) if frame.len() >= 8 => frame.advance(8),
            (_, 5) if frame.len() >= 4 => frame.advance(4),
            _ => return None,
        }
    }
    Some(status)
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HealthConfig {
        HealthConfig {
            kind: HealthCheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 3,
            service: String::new(),
        }
    }

    #[test]
    fn streak_turns_on_thresholds_only() {
        let config = config();
        let mut streak = Streak::default();
        assert_eq!(streak.record(false, &config), None);
        assert_eq!(
            streak.record(true, &config),
            None,
            "a pass resets the failure streak"
        );
        assert_eq!(streak.record(false, &config), None);
        assert_eq!(streak.record(false, &config), Some(false));
        assert_eq!(streak.record(true, &config), None);
        assert_eq!(streak.record(true, &config), None);
        assert_eq!(streak.record(true, &config), Some(true));
    }

    #[test]
    fn health_request_encodes_the_service() {
        assert_eq!(&health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &health_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
    }

    #[test]
    fn serving_status_reads_the_field_and_rejects_garbage() {
        let frame = |m: &[u8]| {
            let mut f = vec![0, 0, 0, 0, m.len() as u8];
            f.extend_from_slice(m);
            Bytes::from(f)
        };
        assert_eq!(serving_status(frame(&[0x08, 0x01])), Some(1));
        assert_eq!(serving_status(frame(&[0x08, 0x02])), Some(2));
        assert_eq!(serving_status(frame(&[])), Some(0));
        // An unknown length-delimited field is skipped.
        assert_eq!(
            serving_status(frame(&[0x12, 0x01, b'x', 0x08, 0x01])),
            Some(1)
        );
        assert_eq!(serving_status(frame(&[0x08])), None);
        assert_eq!(serving_status(frame(&[0x12, 0x05, b'x'])), None);
        assert_eq!(
            serving_status(Bytes::from_static(&[0, 0, 0, 0, 9, 0x08])),
            None
        );
        assert_eq!(serving_status(Bytes::from_static(&[1, 0, 0, 0, 0])), None);
        assert_eq!(
            serving_status(frame(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])),
            None
        );
    }
}
