//! The byte stream under a downstream connection, as the HTTP/1.1 code needs it.
//!
//! Heads are read with the io driver's owned-buffer reads (one ring operation each) and
//! responses written with vectored writes, through monoio's `AsyncReadRent`/`AsyncWriteRent`.
//! While a call runs, though, the connection reads in futures that the call may drop when an
//! upstream event wins a `select!`: an io_uring read dropped in flight would lose the bytes it
//! received. Those reads are therefore split into a readiness wait, which is safe to drop, and a
//! read that takes only what is already there without waiting ([`Transport::try_read`]). A TLS
//! stream implements the same trait over its decrypted bytes.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

/// A downstream byte stream.
pub trait Transport: AsyncReadRent + AsyncWriteRent + AsRawFd {
    /// Resolve once a read would find bytes or the end of the stream. Safe to drop at any time.
    fn readable(&self) -> impl Future<Output = io::Result<()>>;

    /// Append what the stream holds now to `buf`'s free room (growing it by `room_min` when
    /// less is free), without waiting: `Ok(0)` at the end of the stream, `WouldBlock` when
    /// nothing is there. Never suspends, so it cannot be cut short.
    fn try_read(&mut self, buf: &mut BytesMut, room_min: usize) -> io::Result<usize>;
}

/// Shut both directions of socket `fd` down at once, so that a write stuck on a client that
/// stopped reading fails now. The write itself must not be dropped while in flight: with
/// io_uring the kernel may still read the buffers it owns.
pub fn shutdown_now(fd: RawFd) {
    // SAFETY: shutdown on a descriptor is harmless even if it is not a socket, and it does not
    // close it; callers pass the descriptor of a stream they still own.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

impl Transport for TcpStream {
    async fn readable(&self) -> io::Result<()> {
        // Not relaxed: on the epoll driver, readiness is re-checked with poll(2), because
        // `try_read` reads behind the driver's back and it cannot know readiness was used up.
        TcpStream::readable(self, false).await
    }

    fn try_read(&mut self, buf: &mut BytesMut, room_min: usize) -> io::Result<usize> {
        if buf.capacity() - buf.len() < room_min {
            buf.reserve(room_min.max(buf.len()));
        }
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf`; recv writes
        // at most that many bytes into it, and the length is only advanced by what it wrote.
        let received = unsafe {
            libc::recv(
                self.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = received as usize;
        // SAFETY: recv initialised the first `received` bytes of the spare room.
        unsafe { buf.set_len(buf.len() + received) };
        Ok(received)
    }
}
