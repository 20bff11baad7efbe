//! A server TLS connection over a monoio `TcpStream` with owned buffers: the handshake, then a
//! stream that implements monoio's `AsyncReadRent`/`AsyncWriteRent` whether records are sealed
//! by rustls in userspace or by the kernel (kTLS).
//!
//! Ciphertext moves through two buffers the stream owns and hands to the ring for each read or
//! write (io_uring needs the memory to stay put until the operation completes, so it cannot be
//! the caller's borrowed slice). rustls decrypts from the read buffer into its own plaintext
//! queue and encrypts into the write buffer; the caller's owned buffer only ever sees plaintext.
//!
//! `monoio_compat::StreamWrapper` (which gives h2 tokio's `AsyncRead`/`AsyncWrite`) keeps a read
//! and a write future of the same stream alive at once. Both may therefore be suspended in the
//! middle of a socket operation, so the two directions own disjoint buffers and touch the rustls
//! state only between awaits; a read that has something to send (an alert, a KeyUpdate answer)
//! sends it only when no write is in flight, and otherwise leaves it to that write.

use std::io::{self, BufRead, IoSlice, Write};
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ServerConnection;

use super::ktls;
use crate::transport::Transport;

/// Ciphertext read buffer to start with: a request of a few KiB (a gRPC-Web call, an HTTP/2
/// preface with its first HEADERS) fits, and an idle connection holds only this much while its
/// read waits in the ring.
pub const CIPHERTEXT_READ_BYTES_MIN: usize = 4 * 1024;

/// Largest ciphertext read buffer: one whole maximum-size record (16 KiB of plaintext, up to
/// 256 bytes of expansion and the 5-byte header), so bulk uploads decrypt a record per read.
/// The buffer grows to it when a read fills the smaller one.
pub const CIPHERTEXT_READ_BYTES_MAX: usize = 16 * 1024 + 256 + 5;

/// Ciphertext write buffer kept between writes: a small gRPC-Web response's records fit. A
/// larger one (a burst of records) is freed after its write, so a thousand idle connections do
/// not each keep the size of their largest response.
pub const CIPHERTEXT_WRITE_BYTES_KEPT: usize = 4 * 1024;

/// Plaintext rustls accepts before it must be encrypted and sent (its own default, stated so
/// the bound on a stalled writer's memory is visible here): a write past it waits for the socket.
pub const PLAINTEXT_BUFFERED_BYTES_MAX: usize = 64 * 1024;

/// The record header: content type, version, length.
const RECORD_HEADER_BYTES: usize = 5;

/// The error a stream returns after a cancelled operation lost one of its buffers: the
/// direction is unusable, and the connection must be closed.
fn cancelled() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "TLS stream used after a cancelled read or write",
    )
}

/// The ciphertext read buffer: bytes `start..end` were read from the socket and not yet given
/// to rustls. Owned (`Option` so it can travel to the ring and back).
#[derive(Debug)]
struct ReadSpace {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Where the next socket read must stop: the buffer's end, or the end of the current
    /// record when reads must not run past a record (before kTLS takes the socket over).
    limit: usize,
}

// SAFETY: the pointer and length describe `buf[end..limit]`, which stays valid and unaliased
// while the ring owns the value; `set_init` only advances `end` within that range.
unsafe impl IoBufMut for ReadSpace {
    fn write_ptr(&mut self) -> *mut u8 {
        // `end <= limit <= buf.len()` always holds, so the offset stays within the allocation.
        unsafe { self.buf.as_mut_ptr().add(self.end) }
    }
    fn bytes_total(&mut self) -> usize {
        self.limit - self.end
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.end += pos;
    }
}

impl ReadSpace {
    fn new(bytes: usize) -> ReadSpace {
        ReadSpace {
            buf: vec![0; bytes].into_boxed_slice(),
            start: 0,
            end: 0,
            limit: bytes,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Makes room at the end for the next read, growing the buffer if the last read filled it,
    /// and going back to the small one once reads are small again (an idle connection after an
    /// upload should not keep a full record's buffer in its waiting read).
    fn prepare(&mut self, filled_last: bool) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if !filled_last && self.buf.len() > CIPHERTEXT_READ_BYTES_MIN {
                self.buf = vec![0; CIPHERTEXT_READ_BYTES_MIN].into_boxed_slice();
            }
        }
        if filled_last && self.buf.len() < CIPHERTEXT_READ_BYTES_MAX {
            let mut grown = vec![0; CIPHERTEXT_READ_BYTES_MAX].into_boxed_slice();
            grown[..self.end - self.start].copy_from_slice(self.pending());
            self.end -= self.start;
            self.start = 0;
            self.buf = grown;
        } else if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.limit = self.buf.len();
    }

    /// Limits the next read to the rest of the record being received (or its header), so that
    /// nothing past the record that ends the handshake is taken from the socket.
    fn prepare_record_exact(&mut self) {
        self.prepare(false);
        let have = self.end - self.start;
        let want = if have < RECORD_HEADER_BYTES {
            RECORD_HEADER_BYTES
        } else {
            let p = self.pending();
            RECORD_HEADER_BYTES + usize::from(u16::from_be_bytes([p[3], p[4]]))
        };
        let want = want.min(CIPHERTEXT_READ_BYTES_MAX);
        if self.start + want > self.buf.len() {
            let mut grown = vec![0; CIPHERTEXT_READ_BYTES_MAX].into_boxed_slice();
            grown[..have].copy_from_slice(self.pending());
            self.buf = grown;
            self.start = 0;
            self.end = have;
        }
        self.limit = self.start + want;
    }

    /// The complete records at the front, if any: what may be given to rustls when it must not
    /// see part of a later record.
    fn whole_records(&self) -> usize {
        let mut at = 0;
        let p = self.pending();
        while p.len() - at >= RECORD_HEADER_BYTES {
            let len = usize::from(u16::from_be_bytes([p[at + 3], p[at + 4]]));
            if p.len() - at < RECORD_HEADER_BYTES + len {
                break;
            }
            at += RECORD_HEADER_BYTES + len;
        }
        at
    }
}

/// rustls in userspace over the socket.
#[derive(Debug)]
pub(crate) struct UserspaceTls {
    pub(crate) io: TcpStream,
    pub(crate) conn: ServerConnection,
    rx: Option<ReadSpace>,
    tx: Option<Vec<u8>>,
    /// A socket write is in flight (from either direction); the other waits its turn. A
    /// cancelled write leaves this set: the stream is then unusable and must be closed.
    writing: bool,
    write_waiter: Option<std::task::Waker>,
    /// Whether the last socket read filled the read buffer (it then grows).
    filled_last: bool,
    /// Read the handshake record by record (kTLS must find the socket at a record boundary).
    record_exact: bool,
    /// rustls holds plaintext no read has taken yet (or the end of the stream): a read into a
    /// buffer smaller than what one record decrypted to leaves the rest there, and data that
    /// followed the client's last handshake message is decrypted with it. Readiness must not
    /// wait on the socket for bytes already received.
    plaintext_waiting: bool,
}

/// What rustls had for the reader.
enum Plain {
    Bytes(usize),
    Eof,
    None,
}

/// What a socket read brought.
enum Fed {
    Bytes,
    Eof,
}

impl UserspaceTls {
    pub(crate) fn new(io: TcpStream, mut conn: ServerConnection, record_exact: bool) -> Self {
        conn.set_buffer_limit(Some(PLAINTEXT_BUFFERED_BYTES_MAX));
        UserspaceTls {
            io,
            conn,
            rx: Some(ReadSpace::new(CIPHERTEXT_READ_BYTES_MIN)),
            tx: Some(Vec::new()),
            writing: false,
            write_waiter: None,
            filled_last: false,
            record_exact,
            plaintext_waiting: false,
        }
    }

    /// The first bytes received, if any, without consuming them (to tell a TLS client from a
    /// plain HTTP one before rustls sees them).
    pub(crate) fn peek_received(&self) -> &[u8] {
        self.rx.as_ref().map_or(&[], |rx| rx.pending())
    }

    /// Reads more ciphertext from the socket into the read buffer.
    async fn read_socket(&mut self) -> io::Result<Fed> {
        let mut rx = self.rx.take().ok_or_else(cancelled)?;
        if self.record_exact {
            rx.prepare_record_exact();
        } else {
            rx.prepare(self.filled_last);
        }
        let (result, rx) = self.io.read(rx).await;
        let n = result?;
        self.filled_last = rx.end == rx.buf.len();
        self.rx = Some(rx);
        Ok(if n == 0 { Fed::Eof } else { Fed::Bytes })
    }

    /// Gives buffered ciphertext to rustls and processes it. With `record_exact`, only whole
    /// records are given, and the handshake's end stops the feeding.
    fn feed(&mut self) -> Result<usize, rustls::Error> {
        // A cancelled socket read took the buffer with it; the next read reports that.
        let Some(rx) = self.rx.as_mut() else {
            return Ok(0);
        };
        let mut fed = 0;
        loop {
            let available = if self.record_exact {
                rx.whole_records().min(rx.pending().len())
            } else {
                rx.pending().len()
            };
            if available == 0 {
                return Ok(fed);
            }
            let mut input = if self.record_exact {
                // One record at a time, so that the handshake's last record is the last one fed.
                let p = rx.pending();
                let len = usize::from(u16::from_be_bytes([p[3], p[4]]));
                &p[..RECORD_HEADER_BYTES + len]
            } else {
                &rx.pending()[..available]
            };
            // An error means rustls's own buffers are full: process what it has, then come back.
            let consumed = self.conn.read_tls(&mut input).unwrap_or_default();
            rx.start += consumed;
            fed += consumed;
            self.conn.process_new_packets()?;
            if consumed == 0 || (self.record_exact && !self.conn.is_handshaking()) {
                return Ok(fed);
            }
        }
    }

    fn feed_eof(&mut self) {
        // An empty reader tells rustls the peer closed its side.
        let _ = self.conn.read_tls(&mut io::empty());
    }

    /// Encrypted records waiting to be sent, sent.
    pub(crate) async fn flush_records(&mut self) -> io::Result<()> {
        loop {
            self.write_turn().await;
            if !self.conn.wants_write() {
                return Ok(());
            }
            let mut tx = self.tx.take().ok_or_else(cancelled)?;
            tx.clear();
            while self.conn.wants_write() {
                self.conn.write_tls(&mut tx)?;
            }
            self.writing = true;
            let (result, mut tx) = self.io.write_all(tx).await;
            self.writing = false;
            if let Some(waiter) = self.write_waiter.take() {
                waiter.wake();
            }
            if tx.capacity() > CIPHERTEXT_WRITE_BYTES_KEPT {
                tx = Vec::new();
            }
            self.tx = Some(tx);
            result?;
        }
    }

    /// Waits until no write of the other direction is in flight, so records leave in the order
    /// rustls sealed them (their sequence numbers must arrive in order).
    async fn write_turn(&mut self) {
        std::future::poll_fn(|cx| {
            if self.writing {
                self.write_waiter = Some(cx.waker().clone());
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await
    }

    /// After a protocol error: rustls queued an alert for the peer; send it (the connection is
    /// closed next either way, so a failure to send is not reported).
    async fn send_alert(&mut self) {
        let _ = self.flush_records().await;
    }

    /// Runs the server handshake to its end, sending the session tickets with the last flight.
    pub(crate) async fn handshake(&mut self) -> Result<(), HandshakeError> {
        let mut first_read = true;
        loop {
            if self.conn.wants_write() {
                self.flush_records().await.map_err(HandshakeError::Io)?;
            }
            if !self.conn.is_handshaking() {
                self.plaintext_waiting = self.plaintext_waiting_now();
                return Ok(());
            }
            match self.read_socket().await.map_err(HandshakeError::Io)? {
                Fed::Eof => return Err(HandshakeError::Closed),
                Fed::Bytes if first_read => {
                    first_read = false;
                    if let Some(kind) = not_tls(self.peek_received()) {
                        return Err(kind);
                    }
                }
                Fed::Bytes => {}
            }
            if let Err(error) = self.feed() {
                self.send_alert().await;
                return Err(HandshakeError::Tls(error));
            }
        }
    }

    async fn read_plain<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        loop {
            match self.conn.reader().fill_buf() {
                Ok(plain) => {
                    // An empty chunk here means close_notify was received: a clean end.
                    let n = plain.len().min(buf.bytes_total());
                    // SAFETY: `write_ptr` points at `bytes_total` writable bytes of `buf`, which
                    // does not overlap rustls's plaintext queue.
                    unsafe {
                        std::ptr::copy_nonoverlapping(plain.as_ptr(), buf.write_ptr(), n);
                        buf.set_init(n);
                    }
                    self.conn.reader().consume(n);
                    self.plaintext_waiting = self.plaintext_waiting_now();
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed TCP without close_notify, as most browsers do: the end of the
                // stream, and the HTTP framing above says whether anything was cut short.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
            // Ciphertext left over from the last read is offered first; a socket read follows
            // only when rustls took none of it, so this loop always waits on something.
            let consumed = match self.feed() {
                Ok(consumed) => consumed,
                Err(error) => {
                    self.send_alert().await;
                    return (Err(io::Error::new(io::ErrorKind::InvalidData, error)), buf);
                }
            };
            // A renegotiation refusal or a KeyUpdate answer: send it now, not at the next
            // response, so a client waiting for it is not left hanging.
            if self.conn.wants_write() {
                if let Err(e) = self.flush_records().await {
                    return (Err(e), buf);
                }
            }
            if consumed == 0 {
                match self.read_socket().await {
                    Ok(Fed::Bytes) => {}
                    Ok(Fed::Eof) => {
                        // rustls took all it was given and made no plaintext of it: nothing
                        // more can come. Telling rustls lets a later read see the same end.
                        self.feed_eof();
                        return (Ok(0), buf);
                    }
                    Err(e) => return (Err(e), buf),
                }
            }
        }
    }

    /// Whether a read can make progress without the socket: plaintext (or the end) waits in
    /// rustls, or ciphertext read from the socket waits to be given to it.
    fn has_input(&self) -> bool {
        self.plaintext_waiting || self.rx.as_ref().is_some_and(|rx| !rx.pending().is_empty())
    }

    /// Whether rustls holds plaintext or the end of the stream for the next read, taking
    /// nothing.
    fn plaintext_waiting_now(&mut self) -> bool {
        !matches!(self.conn.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Move all the plaintext rustls holds to the end of `out`.
    fn take_plaintext(&mut self, out: &mut BytesMut) -> io::Result<Plain> {
        let mut taken = 0;
        loop {
            match self.conn.reader().fill_buf() {
                // An empty chunk means close_notify was received: a clean end.
                Ok([]) => {
                    return Ok(if taken > 0 {
                        Plain::Bytes(taken)
                    } else {
                        Plain::Eof
                    })
                }
                Ok(plain) => {
                    let n = plain.len();
                    out.extend_from_slice(plain);
                    self.conn.reader().consume(n);
                    taken += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(if taken > 0 {
                        Plain::Bytes(taken)
                    } else {
                        Plain::None
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(if taken > 0 {
                        Plain::Bytes(taken)
                    } else {
                        Plain::Eof
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The non-waiting read of [`crate::transport::Transport::try_read`]: plaintext rustls
    /// holds, else what the ciphertext already read decrypts to, else what the socket has now
    /// (a `recv` that does not wait, so it is never cut short by a dropped future). Records
    /// rustls wants to send in answer (an alert, a KeyUpdate) go out with the next write.
    fn try_read_plain(&mut self, out: &mut BytesMut) -> io::Result<usize> {
        let read = self.try_read_plain_once(out);
        self.plaintext_waiting = self.plaintext_waiting_now();
        read
    }

    fn try_read_plain_once(&mut self, out: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.take_plaintext(out)? {
                Plain::Bytes(n) => return Ok(n),
                Plain::Eof => return Ok(0),
                Plain::None => {}
            }
            let fed = self
                .feed()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if fed > 0 {
                continue;
            }
            let filled_last = self.filled_last;
            let rx = self.rx.as_mut().ok_or_else(cancelled)?;
            rx.prepare(filled_last);
            let fd = self.io.as_raw_fd();
            let room = &mut rx.buf[rx.end..rx.limit];
            // SAFETY: `room` is writable memory of `room.len()` bytes owned by the read buffer;
            // recv writes at most that many.
            let received =
                unsafe { libc::recv(fd, room.as_mut_ptr().cast(), room.len(), libc::MSG_DONTWAIT) };
            if received < 0 {
                return Err(io::Error::last_os_error());
            }
            if received == 0 {
                self.feed_eof();
                return Ok(0);
            }
            rx.end += received as usize;
            self.filled_last = rx.end == rx.buf.len();
        }
    }

    async fn write_plain(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = slices.iter().map(|s| s.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        loop {
            let n = self.conn.writer().write_vectored(slices)?;
            self.flush_records().await?;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_records().await?;
        self.io.shutdown().await
    }
}

/// Why a handshake did not finish (before mapping to [`super::TlsError`]).
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Io(io::Error),
    Closed,
    NotTls,
    PlainHttp,
    Tls(rustls::Error),
}

/// A TLS client's first record is a handshake record (22) of version 3.x. Anything else is not
/// TLS; a request line that starts with an upper-case method is HTTP sent to the TLS port.
fn not_tls(first: &[u8]) -> Option<HandshakeError> {
    let &content_type = first.first()?;
    if content_type == 22 && first.get(1).is_none_or(|major| *major == 3) {
        return None;
    }
    let method = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method >= 3 && first.get(method).is_none_or(|b| *b == b' ') {
        return Some(HandshakeError::PlainHttp);
    }
    Some(HandshakeError::NotTls)
}

/// The answer to a plain HTTP request on the TLS port, as nginx gives: an operator who pointed
/// `http://` at it sees why it fails instead of a reset.
pub(crate) const PLAIN_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain\r\ncontent-length: 40\r\nconnection: close\r\n\r\n\
This port speaks HTTPS, not plain HTTP.\n";

/// A TLS connection after its handshake: records sealed by rustls, or by the kernel.
#[derive(Debug)]
pub struct TlsStream {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Userspace(Box<UserspaceTls>),
    Kernel(TcpStream),
}

impl TlsStream {
    pub(crate) fn userspace(tls: Box<UserspaceTls>) -> TlsStream {
        TlsStream {
            inner: Inner::Userspace(tls),
        }
    }

    pub(crate) fn kernel(io: TcpStream) -> TlsStream {
        TlsStream {
            inner: Inner::Kernel(io),
        }
    }

    /// Whether the kernel seals and opens the records (reads and writes are plain socket
    /// operations, and a zero-copy send stays zero-copy).
    pub fn is_kernel_tls(&self) -> bool {
        matches!(self.inner, Inner::Kernel(_))
    }

    /// The socket, for options such as TCP_NODELAY and for the peer address.
    pub fn tcp(&self) -> &TcpStream {
        match &self.inner {
            Inner::Userspace(tls) => &tls.io,
            Inner::Kernel(io) => io,
        }
    }
}

impl AsRawFd for TlsStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.tcp().as_raw_fd()
    }
}

impl Transport for TlsStream {
    async fn readable(&self) -> io::Result<()> {
        match &self.inner {
            Inner::Userspace(tls) if tls.has_input() => Ok(()),
            _ => self.tcp().readable(false).await,
        }
    }

    fn try_read(&mut self, buf: &mut BytesMut, room_min: usize) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Userspace(tls) => tls.try_read_plain(buf),
            Inner::Kernel(io) => match Transport::try_read(io, buf, room_min) {
                // The client's close_notify (or a record the kernel does not hand over).
                Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
                other => other,
            },
        }
    }
}

/// Slices over a monoio iovec buffer, for rustls's vectored write.
fn iovec_slices<T: IoVecBuf>(buf: &T) -> Vec<IoSlice<'_>> {
    let ptr = buf.read_iovec_ptr();
    let len = buf.read_iovec_len();
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: `IoVecBuf` promises `len` valid iovecs at `ptr`, each describing initialised
    // bytes that live as long as `buf`.
    let iovecs = unsafe { std::slice::from_raw_parts(ptr, len) };
    iovecs
        .iter()
        .filter(|v| v.iov_len > 0)
        .map(|v| {
            IoSlice::new(unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) })
        })
        .collect()
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.inner {
            Inner::Userspace(tls) => tls.read_plain(buf).await,
            Inner::Kernel(io) => ktls::map_read(io.read(buf).await),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        match &mut self.inner {
            Inner::Userspace(_) => {
                // Fill the first non-empty iovec: the HTTP code reads into one buffer, and a
                // short read is allowed.
                let raw = unsafe { monoio::buf::RawBuf::new_from_iovec_mut(&mut buf) };
                let result = match raw {
                    Some(raw) => self.read(raw).await.0,
                    None => Ok(0),
                };
                if let Ok(n) = result {
                    unsafe { buf.set_init(n) };
                }
                (result, buf)
            }
            Inner::Kernel(io) => ktls::map_read(io.readv(buf).await),
        }
    }
}

impl AsyncWriteRent for TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.inner {
            Inner::Userspace(tls) => {
                // SAFETY: `read_ptr` points at `bytes_init` initialised bytes owned by `buf`.
                let slice = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
                let result = tls.write_plain(&[IoSlice::new(slice)]).await;
                (result, buf)
            }
            Inner::Kernel(io) => io.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.inner {
            Inner::Userspace(tls) => {
                // All slices go into as few records as their size allows, and the records out in
                // one socket write: the HTTP/1.1 head and body of a response share a record.
                let slices = iovec_slices(&buf);
                let result = tls.write_plain(&slices).await;
                drop(slices);
                (result, buf)
            }
            Inner::Kernel(io) => io.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Userspace(tls) => {
                tls.conn.writer().flush()?;
                tls.flush_records().await
            }
            Inner::Kernel(_) => Ok(()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Userspace(tls) => tls.shutdown().await,
            Inner::Kernel(io) => {
                ktls::send_close_notify(io.as_raw_fd());
                io.shutdown().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_not_mistaken_for_anything_else() {
        assert!(not_tls(&[22, 3, 1, 0, 200]).is_none());
        assert!(not_tls(&[22]).is_none());
        assert!(not_tls(&[]).is_none());
    }

    #[test]
    fn http_requests_and_garbage_are_told_apart() {
        assert!(matches!(
            not_tls(b"GET / HTTP/1.1\r\n"),
            Some(HandshakeError::PlainHttp)
        ));
        assert!(matches!(not_tls(b"POST"), Some(HandshakeError::PlainHttp)));
        assert!(matches!(
            not_tls(b"PRI * HTTP/2.0\r\n"),
            Some(HandshakeError::PlainHttp)
        ));
        assert!(matches!(
            not_tls(b"\x00\x01garbage"),
            Some(HandshakeError::NotTls)
        ));
        assert!(matches!(
            not_tls(&[22, 0x47, 0x45]),
            Some(HandshakeError::NotTls)
        ));
        assert!(matches!(not_tls(b"GETX/"), Some(HandshakeError::NotTls)));
    }

    #[test]
    fn plain_http_answer_has_the_length_it_declares() {
        let text = std::str::from_utf8(PLAIN_HTTP_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn exact_reads_stop_at_the_record_boundary() {
        let mut rx = ReadSpace::new(CIPHERTEXT_READ_BYTES_MIN);
        rx.prepare_record_exact();
        assert_eq!(rx.limit - rx.end, RECORD_HEADER_BYTES);
        rx.buf[..5].copy_from_slice(&[22, 3, 3, 0x10, 0x00]);
        rx.end = 5;
        rx.prepare_record_exact();
        // A 4096-byte body after the header: the buffer grows to hold the record whole.
        assert_eq!(rx.limit, 5 + 4096);
        assert!(rx.buf.len() >= rx.limit);
        assert_eq!(rx.whole_records(), 0);
        rx.end = rx.limit;
        assert_eq!(rx.whole_records(), 5 + 4096);
    }

    #[test]
    fn a_lying_record_length_cannot_overrun_the_buffer() {
        let mut rx = ReadSpace::new(CIPHERTEXT_READ_BYTES_MIN);
        rx.buf[..5].copy_from_slice(&[22, 3, 3, 0xff, 0xff]);
        rx.end = 5;
        rx.prepare_record_exact();
        assert!(rx.limit <= rx.buf.len());
    }

    #[test]
    fn an_emptied_buffer_goes_back_to_the_small_size_after_a_small_read() {
        let mut rx = ReadSpace::new(CIPHERTEXT_READ_BYTES_MIN);
        rx.end = CIPHERTEXT_READ_BYTES_MIN;
        rx.prepare(true);
        assert_eq!(rx.buf.len(), CIPHERTEXT_READ_BYTES_MAX);
        rx.start = rx.end;
        rx.prepare(true);
        assert_eq!(rx.buf.len(), CIPHERTEXT_READ_BYTES_MAX, "still bulk: kept");
        rx.prepare(false);
        assert_eq!(rx.buf.len(), CIPHERTEXT_READ_BYTES_MIN);
        assert_eq!(rx.limit, CIPHERTEXT_READ_BYTES_MIN);
    }

    #[test]
    fn a_full_buffer_grows_once_and_keeps_its_bytes() {
        let mut rx = ReadSpace::new(CIPHERTEXT_READ_BYTES_MIN);
        rx.buf.fill(7);
        rx.start = 100;
        rx.end = CIPHERTEXT_READ_BYTES_MIN;
        rx.prepare(true);
        assert_eq!(rx.buf.len(), CIPHERTEXT_READ_BYTES_MAX);
        assert_eq!(rx.pending().len(), CIPHERTEXT_READ_BYTES_MIN - 100);
        assert!(rx.pending().iter().all(|b| *b == 7));
        assert_eq!(rx.limit, CIPHERTEXT_READ_BYTES_MAX);
    }
}
