//! The access log: one line per request, in text or JSON, without ever blocking a worker.
//!
//! Each worker formats lines into a buffer of its own. A full buffer (and, from the worker's
//! housekeeping, whatever is buffered every quarter second) is handed to the writer thread
//! through a bounded channel; the writer does the blocking `write` to stdout or the file. When the writer
//! falls behind (a slow pipe, a full disk) and the channel is full, the buffer is dropped and its
//! lines are counted as lost: a slow log must not slow calls down.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::ValueEnum;

/// A worker hands its buffer over once it holds this much.
const BUFFER_BYTES: usize = 32 * 1024;
/// Buffers waiting for the writer, per process; beyond this they are dropped.
const QUEUE_BUFFERS_MAX: usize = 64;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Off,
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        Ok(match value {
            "off" | "" => Target::Off,
            "stdout" | "-" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `time method path status grpc-status upstream duration_us bytes_in bytes_out`
    Text,
    Json,
}

/// The process-wide sink: the writer thread and the count of lines it could not take.
#[derive(Clone)]
pub struct Sink {
    sender: SyncSender<Vec<u8>>,
    lost_lines: Arc<AtomicU64>,
}

impl Sink {
    /// Start the writer thread; `None` when the log is off.
    pub fn start(target: &Target) -> io::Result<Option<Sink>> {
        let mut out: Box<dyn Write + Send> = match target {
            Target::Off => return Ok(None),
            Target::Stdout => Box::new(io::stdout()),
            Target::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let (sender, receiver): (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) =
            sync_channel(QUEUE_BUFFERS_MAX);
        std::thread::Builder::new()
            .name("ringway-access-log".into())
            .spawn(move || {
                for buffer in receiver {
                    if out.write_all(&buffer).and_then(|()| out.flush()).is_err() {
                        // Nowhere left to say it: the log's own destination failed.
                        continue;
                    }
                }
            })?;
        Ok(Some(Sink {
            sender,
            lost_lines: Arc::new(AtomicU64::new(0)),
        }))
    }

    pub fn lost_lines(&self) -> u64 {
        self.lost_lines.load(Ordering::Relaxed)
    }
}

/// One request, as the access log records it.
pub struct Entry<'a> {
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub http_status: u16,
    /// `None` for requests that were not gRPC calls (preflights, health checks, refusals).
    pub grpc_status: Option<u32>,
    pub upstream: Option<SocketAddr>,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A worker's log buffer.
pub struct WorkerLog {
    sink: Sink,
    format: Format,
    buffer: Vec<u8>,
    lines: u64,
}

impl WorkerLog {
    pub fn new(sink: Sink, format: Format) -> Self {
        WorkerLog {
            sink,
            format,
            buffer: Vec::with_capacity(BUFFER_BYTES),
            lines: 0,
        }
    }

    pub fn record(&mut self, entry: &Entry<'_>) {
        let mut line = String::with_capacity(160);
        format_entry(&mut line, entry, self.format, SystemTime::now());
        self.buffer.extend_from_slice(line.as_bytes());
        self.lines += 1;
        if self.buffer.len() >= BUFFER_BYTES {
            self.hand_over();
        }
    }

    /// Give the buffered lines to the writer without waiting; drop them if it is behind.
    pub fn hand_over(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let buffer = std::mem::replace(&mut self.buffer, Vec::with_capacity(BUFFER_BYTES));
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sink.sender.try_send(buffer)
        {
            self.sink
                .lost_lines
                .fetch_add(self.lines, Ordering::Relaxed);
        }
        self.lines = 0;
    }
}

/// Format one line, with the newline. Request-controlled text is escaped in both formats so a
/// path cannot forge a line or break the JSON.
pub fn format_entry(out: &mut String, entry: &Entry<'_>, format: Format, now: SystemTime) {
    let time_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let grpc = entry.grpc_status.map_or("-".to_string(), |s| s.to_string());
    let upstream = entry.upstream.map_or("-".to_string(), |u| u.to_string());
    let duration_us = entry.duration.as_micros();
    match format {
        Format::Text => {
            let _ = write!(out, "{time_ms} ");
            escape_text(out, entry.method);
            out.push(' ');
            escape_text(out, entry.path);
            let _ = writeln!(
                out,
                " {} {grpc} {upstream} {duration_us}us {} {}",
                entry.http_status, entry.bytes_in, entry.bytes_out
            );
        }
        Format::Json => {
            let _ = write!(out, "{{\"time_ms\":{time_ms},\"method\":\"");
            escape_json(out, entry.method);
            out.push_str("\",\"path\":\"");
            escape_json(out, entry.path);
            let _ = writeln!(
                out,
                "\",\"status\":{},\"grpc_status\":{},\"upstream\":{},\"duration_us\":{duration_us},\"bytes_in\":{},\"bytes_out\":{}}}",
                entry.http_status,
                entry.grpc_status.map_or("null".to_string(), |s| s.to_string()),
                entry.upstream.map_or("null".to_string(), |u| format!("\"{u}\"")),
                entry.bytes_in,
                entry.bytes_out
            );
        }
    }
}

fn escape_text(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

fn escape_json(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            method: b"POST",
            path: b"/pkg.Svc/Call",
            http_status: 200,
            grpc_status: Some(0),
            upstream: Some("10.0.0.7:9000".parse().unwrap()),
            duration: Duration::from_micros(1234),
            bytes_in: 21,
            bytes_out: 80,
        }
    }

    #[test]
    fn text_and_json_lines() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(42);
        let mut text = String::new();
        format_entry(&mut text, &entry(), Format::Text, at);
        assert_eq!(
            text,
            "42 POST /pkg.Svc/Call 200 0 10.0.0.7:9000 1234us 21 80\n"
        );
        let mut json = String::new();
        format_entry(&mut json, &entry(), Format::Json, at);
        assert_eq!(
            json,
            "{\"time_ms\":42,\"method\":\"POST\",\"path\":\"/pkg.Svc/Call\",\"status\":200,\"grpc_status\":0,\"upstream\":\"10.0.0.7:9000\",\"duration_us\":1234,\"bytes_in\":21,\"bytes_out\":80}\n"
        );
    }

    #[test]
    fn hostile_paths_cannot_forge_lines_or_break_json() {
        let hostile = Entry {
            path: b"/a\"b\\c\n{\x01}",
            grpc_status: None,
            upstream: None,
            ..entry()
        };
        let mut text = String::new();
        format_entry(&mut text, &hostile, Format::Text, SystemTime::UNIX_EPOCH);
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.contains("/a\"b\\c\\x0a{\\x01}"), "{text}");
        let mut json = String::new();
        format_entry(&mut json, &hostile, Format::Json, SystemTime::UNIX_EPOCH);
        assert!(
            json.contains("\"path\":\"/a\\\"b\\\\c\\u000a{\\u0001}\""),
            "{json}"
        );
        assert!(
            json.contains("\"grpc_status\":null,\"upstream\":null"),
            "{json}"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (sender, receiver) = sync_channel(1);
        let sink = Sink {
            sender,
            lost_lines: Arc::new(AtomicU64::new(0)),
        };
        let mut log = WorkerLog::new(sink.clone(), Format::Text);
        for _ in 0..3 {
            log.record(&entry());
            log.hand_over();
        }
        assert_eq!(
            sink.lost_lines(),
            2,
            "the writer took one buffer; two were dropped"
        );
        assert_eq!(receiver.try_iter().count(), 1);
    }
}
