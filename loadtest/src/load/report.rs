//! Turning a run's numbers into what people read: the [`Report`] itself, its terminal table,
//! its JSON file and an SVG chart of each pod's share of calls over time.
//!
//! The chart is written by hand rather than with a plotting crate: it is a few polylines, axes
//! and a legend, and hand-written SVG stays small, dependency-free and diffable.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serializer;

use super::stats::{self, Tally};
use super::{imbalance, CallKind, ConfigSummary, LoadConfig, Mode, Percentiles, Protocol, Report};

/// Serializes a duration as seconds (a float), the unit the JSON fields' names carry.
pub(crate) fn secs<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Assembles the report from the merged tally and histogram of a finished run.
pub(crate) fn build(
    config: &LoadConfig,
    duration: Duration,
    tally: &Tally,
    histogram: &Histogram<u64>,
) -> Report {
    let seconds = duration.as_secs_f64().max(1e-9);
    let not_sent = ["connect", "tls", "unfinished"]
        .iter()
        .map(|kind| tally.errors_by_kind.get(*kind).copied().unwrap_or(0))
        .sum::<u64>();
    let finished = (tally.calls_ok + tally.errors).saturating_sub(not_sent);
    let latency_us = if histogram.is_empty() {
        Percentiles::default()
    } else {
        Percentiles {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    };
    let last_recorded = tally.windows.keys().next_back().map_or(0, |last| last + 1);
    let window_count = stats::window_count(duration, config.window).max(last_recorded);
    Report {
        config: ConfigSummary {
            target: config.target.to_string(),
            host_header: config.host_header.clone(),
            connections: config.connections,
            threads: config.threads,
            method: config.method.clone(),
            payload_bytes: config.payload_bytes,
            mode: config.mode,
            call: config.call,
            metadata: config.metadata.clone(),
            backend_header: config.backend_header.clone(),
            window_s: config.window.as_secs_f64(),
            call_timeout_s: config.call_timeout.as_secs_f64(),
            io_driver: config.io_driver,
            http2: config.http2,
            streams: config.streams,
            protocol: config.protocol,
            tls_server_name: config.tls.as_ref().map(|t| t.server_name.clone()),
            tls_key_exchange: config.tls.as_ref().map(|t| t.key_exchange),
            tls_resumption: config.tls.as_ref().is_some_and(|t| t.resumption),
            connection_per_call: config.connection_per_call,
        },
        duration,
        calls_ok: tally.calls_ok,
        errors: tally.errors,
        errors_by_kind: tally.errors_by_kind.clone(),
        requests_per_s: finished as f64 / seconds,
        target_rate: config.rate,
        achieved_rate: tally.calls_sent as f64 / seconds,
        connects: tally.connects,
        tls_handshakes: tally.tls_handshakes,
        tls_resumed: tally.tls_resumed,
        tls_negotiated: tally.tls_negotiated.clone(),
        latency_us,
        per_pod: tally.per_pod.clone(),
        windows: super::windows(tally, window_count, config.window),
        imbalance: imbalance(&tally.per_pod),
    }
}

impl Report {
    /// The report as a plain-text table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_summary(&mut out);
        self.write_pods(&mut out);
        self.write_windows(&mut out);
        out
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        std::fs::write(path, json + "\n")
    }

    /// Writes an SVG line chart of each pod's share of calls per window.
    pub fn write_chart_svg(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.chart_svg())
    }

    fn write_summary(&self, out: &mut String) {
        let c = &self.config;
        let mode = match c.mode {
            Mode::Binary => "binary",
            Mode::Text => "text",
        };
        let call = match c.call {
            CallKind::Unary => "unary",
            CallKind::ServerStream => "server-stream",
        };
        let load = match self.target_rate {
            Some(rate) => format!("open loop at {} calls/s", thousands(rate)),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "ringway-load: POST {} to {} (host {})",
            c.method, c.target, c.host_header
        );
        let protocol = match c.protocol {
            Protocol::GrpcWeb => "gRPC-Web",
            Protocol::Grpc => "gRPC",
            Protocol::Connect => "Connect",
        };
        let transport = match (c.http2, &c.tls_server_name) {
            (false, None) => "HTTP/1.1".to_owned(),
            (true, None) => "HTTP/2".to_owned(),
            (false, Some(name)) => format!("HTTP/1.1 over TLS to {name}"),
            (true, Some(name)) => format!("HTTP/2 over TLS to {name}"),
        };
        let protocol = format!("{protocol} over {transport}");
        let mut connections = if c.http2 {
            format!("{} connections × {} streams", c.connections, c.streams)
        } else {
            format!("{} connections", c.connections)
        };
        if c.connection_per_call {
            connections.push_str(" (a new connection per call)");
        }
        let _ = writeln!(
            out,
            "  {protocol}, {call}, {mode}, {} B payload, {connections} on {} thread{}, {load}, {:.2} s",
            c.payload_bytes,
            c.threads,
            if c.threads == 1 { "" } else { "s" },
            self.duration.as_secs_f64()
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  calls ok     {:>14}    requests/s  {:>14}",
            count(self.calls_ok),
            thousands(self.requests_per_s)
        );
        let rate = match self.target_rate {
            Some(target) => format!(
                "{:>14}  ({:.1}% of the {} target)",
                thousands(self.achieved_rate),
                100.0 * self.achieved_rate / target,
                thousands(target)
            ),
            None => format!("{:>14}", thousands(self.achieved_rate)),
        };
        let _ = writeln!(
            out,
            "  errors       {:>14}    sent/s      {rate}",
            count(self.errors)
        );
        let _ = writeln!(out, "  connects     {:>14}", count(self.connects));
        if c.tls_server_name.is_some() {
            let _ = writeln!(
                out,
                "  handshakes   {:>14}    resumed     {:>14}",
                count(self.tls_handshakes),
                count(self.tls_resumed)
            );
            for (negotiated, n) in &self.tls_negotiated {
                let _ = writeln!(out, "    {negotiated:<40} {:>10}", count(*n));
            }
        }
        let _ = writeln!(out);
        let l = &self.latency_us;
        if self.calls_ok == 0 {
            let _ = writeln!(out, "  latency: no successful calls");
        } else {
            let _ = writeln!(
                out,
                "  latency (successful calls)  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                micros(l.p50),
                micros(l.p90),
                micros(l.p99),
                micros(l.p999),
                micros(l.max)
            );
        }
        if !self.errors_by_kind.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "  errors by kind");
            for (kind, n) in &self.errors_by_kind {
                let _ = writeln!(out, "    {kind:<24} {:>14}", count(*n));
            }
        }
    }

    fn write_pods(&self, out: &mut String) {
        let _ = writeln!(out);
        if self.per_pod.is_empty() {
            let _ = writeln!(
                out,
                "  per pod: no response carried {}",
                self.config.backend_header
            );
            return;
        }
        let total: u64 = self.per_pod.values().sum();
        let width = self
            .per_pod
            .keys()
            .map(|k| k.len())
            .max()
            .unwrap_or(0)
            .max(24);
        let _ = writeln!(out, "  per pod ({})", self.config.backend_header);
        let _ = writeln!(out, "    {:<width$} {:>14}  {:>7}", "pod", "calls", "share");
        for (pod, n) in &self.per_pod {
            let _ = writeln!(
                out,
                "    {pod:<width$} {:>14}  {:>6.2}%",
                count(*n),
                percent(*n, total)
            );
        }
        let _ = writeln!(
            out,
            "  imbalance (max/min share): {}",
            ratio(self.imbalance)
        );
    }

    fn write_windows(&self, out: &mut String) {
        if self.windows.is_empty() {
            return;
        }
        let window_s = self.config.window_s;
        let pods: Vec<&String> = self.per_pod.keys().collect();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  per window ({window_s} s): calls/s, errors, each pod's share of the window's calls"
        );
        let mut header = format!("    {:>8} {:>12} {:>8}", "start", "calls/s", "errors");
        let widths: Vec<usize> = pods.iter().map(|p| p.len().max(7)).collect();
        for (pod, width) in pods.iter().zip(&widths) {
            let _ = write!(header, " {pod:>width$}");
        }
        let _ = writeln!(out, "{header} {:>9}", "imbalance");
        for window in &self.windows {
            let total: u64 = window.per_pod.values().sum();
            let mut line = format!(
                "    {:>7.1}s {:>12} {:>8}",
                window.start.as_secs_f64(),
                thousands((window.calls_ok + window.errors) as f64 / window_s),
                count(window.errors)
            );
            for (pod, width) in pods.iter().zip(&widths) {
                match window.per_pod.get(*pod) {
                    Some(n) => {
                        let _ = write!(line, " {:>w$.1}%", percent(*n, total), w = width - 1);
                    }
                    None => {
                        let _ = write!(line, " {:>width$}", "-");
                    }
                }
            }
            let _ = writeln!(out, "{line} {:>9}", ratio(imbalance(&window.per_pod)));
        }
    }

    /// The chart: x is time from the run's start, y each pod's share of the calls that finished
    /// in a window (at the window's middle). A dashed grey step marks the even share
    /// (1 / pods answering in that window), so a new pod climbing to it is easy to see.
    pub fn chart_svg(&self) -> String {
        const WIDTH: f64 = 960.0;
        const HEIGHT: f64 = 440.0;
        const LEFT: f64 = 64.0;
        const RIGHT: f64 = 200.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 50.0;
        const COLORS: [&str; 10] = [
            "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac",
        ];
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let window_s = self.config.window_s.max(1e-9);
        let span_s = (self.windows.len() as f64 * window_s).max(window_s);
        let shares: Vec<BTreeMap<&str, f64>> = self
            .windows
            .iter()
            .map(|w| {
                let total: u64 = w.per_pod.values().sum();
                w.per_pod
                    .iter()
                    .map(|(pod, n)| (pod.as_str(), percent(*n, total)))
                    .collect()
            })
            .collect();
        let top_share = shares
            .iter()
            .flat_map(|s| s.values().copied())
            .fold(0.0f64, f64::max);
        let y_max = ((top_share * 1.1 / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
        let x = |t: f64| LEFT + plot_w * t / span_s;
        let y = |share: f64| TOP + plot_h * (1.0 - share / y_max);

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="22" font-size="14">Share of calls per pod ({}), {} s windows, {} to {}</text>"#,
            xml(&self.config.backend_header),
            window_s,
            xml(&self.config.method),
            xml(&self.config.target)
        );
        // Grid and axes.
        for step in 0..=5 {
            let share = y_max * step as f64 / 5.0;
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{share:.0}%</text>"##,
                LEFT + plot_w,
                y(share),
                y(share),
                LEFT - 6.0,
                y(share) + 4.0
            );
        }
        let ticks = 10usize.min(self.windows.len().max(1));
        for step in 0..=ticks {
            let t = span_s * step as f64 / ticks as f64;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}s</text>"#,
                x(t),
                TOP + plot_h + 18.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{:.1}" stroke="black"/><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#,
            TOP + plot_h,
            LEFT + plot_w,
            TOP + plot_h,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 12.0
        );
        // Even share: a step per window.
        let mut even = String::new();
        for (index, share) in shares.iter().enumerate() {
            if share.is_empty() {
                continue;
            }
            let level = 100.0 / share.len() as f64;
            let t0 = index as f64 * window_s;
            let _ = write!(
                even,
                "M{:.1},{:.1}H{:.1}",
                x(t0),
                y(level),
                x(t0 + window_s)
            );
        }
        if !even.is_empty() {
            let _ = writeln!(
                svg,
                r##"<path d="{even}" fill="none" stroke="#999" stroke-dasharray="4 3"/>"##
            );
        }
        // One line per pod, broken where the pod answered nothing.
        for (pod_index, pod) in self.per_pod.keys().enumerate() {
            let color = COLORS[pod_index % COLORS.len()];
            let mut path = String::new();
            let mut pen_down = false;
            for (index, share) in shares.iter().enumerate() {
                match share.get(pod.as_str()) {
                    Some(value) => {
                        let t = (index as f64 + 0.5) * window_s;
                        let _ = write!(
                            path,
                            "{}{:.1},{:.1}",
                            if pen_down { "L" } else { "M" },
                            x(t),
                            y(*value)
                        );
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            let _ = writeln!(
                svg,
                r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"><title>{}</title></path>"#,
                xml(pod)
            );
            let legend_y = TOP + 16.0 * pod_index as f64;
            let total: u64 = self.per_pod.values().sum();
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{} ({:.1}%)</text>"#,
                LEFT + plot_w + 14.0,
                legend_y,
                LEFT + plot_w + 32.0,
                legend_y + 10.0,
                xml(pod),
                percent(self.per_pod[pod], total)
            );
        }
        let _ = writeln!(svg, "</svg>");
        svg
    }
}

fn percent(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * n as f64 / total as f64
    }
}

fn ratio(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        Some(_) => "inf".to_owned(),
        None => "-".to_owned(),
    }
}

/// An integer with thousands separators: 1234567 → "1,234,567".
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A rate with thousands separators and one decimal.
fn thousands(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return format!("{value}");
    }
    let tenths = (value * 10.0).round() as u64;
    format!("{}.{}", count(tenths / 10), tenths % 10)
}

/// A latency in microseconds, in the unit that reads best.
fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let config = LoadConfig::default();
        let mut tally = Tally::default();
        for window in 0..3u64 {
            for _ in 0..10 {
                tally.record(window, None, Some("pod-a"));
            }
            for _ in 0..window * 5 {
                tally.record(window, None, Some("pod-<b>"));
            }
        }
        tally.record(1, Some("http_503"), None);
        tally.calls_sent = 46;
        let mut histogram = stats::latency_histogram();
        stats::record_latency(&mut histogram, Duration::from_micros(1500));
        build(&config, Duration::from_secs(3), &tally, &histogram)
    }

    #[test]
    fn report_numbers() {
        let report = sample();
        assert_eq!((report.calls_ok, report.errors), (45, 1));
        assert_eq!(report.windows.len(), 3, "a 3 s run has three windows");
        assert_eq!(report.windows[2].per_pod["pod-<b>"], 10);
        assert_eq!(report.windows[2].start, Duration::from_secs(2));
        assert_eq!(report.imbalance, Some(2.0));
        assert!((report.requests_per_s - 46.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.latency_us.p50, 1500);
    }

    #[test]
    fn table_json_and_chart() {
        let report = sample();
        let table = report.table();
        assert!(table.contains("http_503"), "{table}");
        assert!(table.contains("imbalance (max/min share): 2.00"), "{table}");
        assert!(table.contains("1.50 ms"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["calls_ok"], 45);
        assert_eq!(json["duration_s"], 3.0);
        assert_eq!(json["windows"][1]["start_s"], 1.0);
        assert_eq!(json["per_pod"]["pod-a"], 30);
        assert_eq!(json["config"]["mode"], "binary");
        let svg = report.chart_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("pod-&lt;b&gt;") && !svg.contains("pod-<b>"));
    }

    #[test]
    fn number_formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(thousands(51234.56), "51,234.6");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(1500), "1.50 ms");
        assert_eq!(micros(2_500_000), "2.50 s");
        assert_eq!(ratio(Some(f64::INFINITY)), "inf");
    }
}
