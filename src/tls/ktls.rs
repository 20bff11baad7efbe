//! Kernel TLS: after rustls finishes the handshake, the record layer is handed to the kernel
//! (`TCP_ULP` "tls", then `SOL_TLS` `TLS_TX`/`TLS_RX` with the traffic secrets), so reads and
//! writes stay plain socket operations on the ring and a zero-copy send stays zero-copy.
//!
//! Where the kernel has no `tls` module (`setsockopt(TCP_ULP)` fails with ENOENT, as on
//! kernels built without `CONFIG_TLS`) the first connection finds out, one line is logged, and
//! every connection after it stays in userspace rustls without asking again.
//!
//! What the kernel path gives up, and why it is acceptable: the kernel opens only application
//! data records on a plain read; a control record (the client's `close_notify` alert, a TLS 1.3
//! KeyUpdate) makes that read fail with EIO, which ends the connection as an EOF would. Browsers
//! send KeyUpdate only after amounts of data a gRPC-Web connection does not reach.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, Ordering};

use monoio::BufResult;
use rustls::{ConnectionTrafficSecrets, ProtocolVersion};

/// `TCP_ULP` from linux/tcp.h.
const TCP_ULP: libc::c_int = 31;
/// `SOL_TLS` and the directions from linux/tls.h.
const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
/// `TLS_SET_RECORD_TYPE`: the cmsg that sends a record of another type than application data.
const TLS_SET_RECORD_TYPE: libc::c_int = 1;

const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_1_3_VERSION: u16 = 0x0304;

const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

/// The largest `tls12_crypto_info_*` structure used: AES-256-GCM and ChaCha20-Poly1305 are 56
/// bytes.
const CRYPTO_INFO_BYTES_MAX: usize = 56;

/// Which direction of the record layer the kernel takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Transmit,
    Receive,
}

/// A `struct tls12_crypto_info_*` as the kernel reads it: `{u16 version; u16 cipher_type;}`
/// then the byte arrays iv, key, salt, rec_seq, with no padding (every field after the header is
/// a byte array).
#[derive(Clone)]
pub struct CryptoInfo {
    bytes: [u8; CRYPTO_INFO_BYTES_MAX],
    len: usize,
}

impl std::fmt::Debug for CryptoInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Holds a traffic key: never printed.
        f.debug_struct("CryptoInfo")
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        // The key should not outlive its use in this process's memory.
        for b in self.bytes.iter_mut() {
            // SAFETY: a valid, aligned pointer to a byte of `self`.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl CryptoInfo {
    /// Builds the kernel's structure for one direction: `seq` is the next record's sequence
    /// number (the kernel's `rec_seq`, big-endian). rustls's 12-byte IV is, for AES-GCM, the
    /// 4-byte salt followed by the 8-byte IV the kernel combines with the sequence number; for
    /// ChaCha20-Poly1305 it is the whole 12-byte IV and there is no salt. `None` for a version
    /// or AEAD the kernel does not offload.
    pub fn new(
        version: ProtocolVersion,
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
    ) -> Option<CryptoInfo> {
        let version = match version {
            ProtocolVersion::TLSv1_2 => TLS_1_2_VERSION,
            ProtocolVersion::TLSv1_3 => TLS_1_3_VERSION,
            _ => return None,
        };
        let (cipher, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (TLS_CIPHER_AES_GCM_128, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (TLS_CIPHER_AES_GCM_256, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (TLS_CIPHER_CHACHA20_POLY1305, key, iv)
            }
            _ => return None,
        };
        let iv: &[u8; 12] = iv.as_ref().try_into().ok()?;
        CryptoInfo::from_parts(version, cipher, key.as_ref(), iv, seq)
    }

    /// The structure from its parts; `None` if the key length is not the cipher's.
    fn from_parts(
        version: u16,
        cipher: u16,
        key: &[u8],
        iv: &[u8; 12],
        seq: u64,
    ) -> Option<CryptoInfo> {
        let (key_bytes, salt_bytes) = match cipher {
            TLS_CIPHER_AES_GCM_128 => (16, 4),
            TLS_CIPHER_AES_GCM_256 => (32, 4),
            TLS_CIPHER_CHACHA20_POLY1305 => (32, 0),
            _ => return None,
        };
        if key.len() != key_bytes {
            return None;
        }
        let (salt, iv) = iv.split_at(salt_bytes);
        let mut info = CryptoInfo {
            bytes: [0; CRYPTO_INFO_BYTES_MAX],
            len: 0,
        };
        for part in [
            &version.to_ne_bytes()[..],
            &cipher.to_ne_bytes()[..],
            iv,
            key,
            salt,
            &seq.to_be_bytes()[..],
        ] {
            info.bytes[info.len..info.len + part.len()].copy_from_slice(part);
            info.len += part.len();
        }
        Some(info)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn setsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is a live buffer of the length given; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs the "tls" upper-layer protocol on a TCP socket. Until `TLS_TX`/`TLS_RX` are set
/// the socket behaves as plain TCP, so this is done before the handshake: a kernel without
/// the module is found out while the connection can still fall back.
pub fn install_ulp(fd: RawFd) -> io::Result<()> {
    setsockopt(fd, libc::SOL_TCP, TCP_ULP, b"tls")
}

/// Gives one direction of the record layer to the kernel.
pub fn set_crypto(fd: RawFd, direction: Direction, info: &CryptoInfo) -> io::Result<()> {
    let name = match direction {
        Direction::Transmit => TLS_TX,
        Direction::Receive => TLS_RX,
    };
    setsockopt(fd, SOL_TLS, name, info.as_bytes())
}

/// What this process knows about the kernel's TLS support.
const SUPPORT_UNKNOWN: u8 = 0;
const SUPPORT_YES: u8 = 1;
const SUPPORT_NO: u8 = 2;
static SUPPORT: AtomicU8 = AtomicU8::new(SUPPORT_UNKNOWN);

/// Whether it is worth trying kTLS on a new connection: not once a connection found the kernel
/// without it.
pub fn may_be_available() -> bool {
    SUPPORT.load(Ordering::Relaxed) != SUPPORT_NO
}

/// Tries to install the ULP; on failure records (and logs once per process) that the kernel
/// cannot do TLS, so later connections do not ask again.
pub fn try_install_ulp(fd: RawFd) -> io::Result<()> {
    match install_ulp(fd) {
        Ok(()) => {
            SUPPORT.store(SUPPORT_YES, Ordering::Relaxed);
            Ok(())
        }
        Err(error) => {
            if SUPPORT.swap(SUPPORT_NO, Ordering::Relaxed) != SUPPORT_NO {
                tracing::warn!(
                    %error,
                    "kernel TLS unavailable (setsockopt TCP_ULP \"tls\" failed; is the tls module \
                     loaded?): TLS records stay in userspace rustls"
                );
            }
            Err(error)
        }
    }
}

/// A read on a kTLS socket: a control record the kernel will not open on a plain read (the
/// client's close_notify, a KeyUpdate) fails with EIO; it ends the stream like an EOF.
pub fn map_read<T>((result, buf): BufResult<usize, T>) -> BufResult<usize, T> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => (Ok(0), buf),
        other => (other, buf),
    }
}

/// Sends a `close_notify` alert through the kernel's record layer (a record of type 21 set by
/// a cmsg). Best effort and non-blocking: the connection is being closed.
pub fn send_close_notify(fd: RawFd) {
    const ALERT: u8 = 21;
    let payload: [u8; 2] = [1, 0]; // warning, close_notify
    let mut control = [0u8; 64];
    // SAFETY: all pointers refer to live local buffers of the stated lengths; CMSG_* compute
    // offsets inside `control`, which is large enough for one cmsg of one byte.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(1) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return;
        }
        (*cmsg).cmsg_level = SOL_TLS;
        (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = ALERT;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn iv() -> Iv {
        Iv::new([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    }

    #[test]
    fn aes_128_gcm_layout_matches_linux_tls_h() {
        let iv12 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let info = CryptoInfo::from_parts(
            TLS_1_3_VERSION,
            TLS_CIPHER_AES_GCM_128,
            &[0xaa; 16],
            &iv12,
            0x0102_0304_0506_0708,
        )
        .expect("AES-128-GCM is offloaded");
        let b = info.as_bytes();
        // struct tls12_crypto_info_aes_gcm_128: info(4) iv(8) key(16) salt(4) rec_seq(8)
        assert_eq!(b.len(), 40);
        assert_eq!(&b[0..2], &0x0304u16.to_ne_bytes());
        assert_eq!(&b[2..4], &51u16.to_ne_bytes());
        assert_eq!(&b[4..12], &[5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(&b[12..28], &[0xaa; 16]);
        assert_eq!(&b[28..32], &[1, 2, 3, 4]);
        assert_eq!(&b[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        let iv12 = [0; 12];
        assert!(CryptoInfo::from_parts(
            TLS_1_3_VERSION,
            TLS_CIPHER_AES_GCM_128,
            &[0; 32],
            &iv12,
            0
        )
        .is_none());
        assert!(CryptoInfo::from_parts(TLS_1_3_VERSION, 99, &[0; 16], &iv12, 0).is_none());
    }

    #[test]
    fn aes_256_gcm_layout_matches_linux_tls_h() {
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: aead_key(&[0xbb; 32]),
            iv: iv(),
        };
        let info = CryptoInfo::new(ProtocolVersion::TLSv1_2, 7, &secrets).unwrap();
        let b = info.as_bytes();
        // struct tls12_crypto_info_aes_gcm_256: info(4) iv(8) key(32) salt(4) rec_seq(8)
        assert_eq!(b.len(), 56);
        assert_eq!(&b[0..2], &0x0303u16.to_ne_bytes());
        assert_eq!(&b[2..4], &52u16.to_ne_bytes());
        assert_eq!(&b[4..12], &[5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(&b[12..44], &[0xbb; 32]);
        assert_eq!(&b[44..48], &[1, 2, 3, 4]);
        assert_eq!(&b[48..56], &[0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn chacha20_poly1305_layout_matches_linux_tls_h() {
        let secrets = ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: aead_key(&[0xcc; 32]),
            iv: iv(),
        };
        let info = CryptoInfo::new(ProtocolVersion::TLSv1_3, u64::MAX, &secrets).unwrap();
        let b = info.as_bytes();
        // struct tls12_crypto_info_chacha20_poly1305: info(4) iv(12) key(32) salt(0) rec_seq(8)
        assert_eq!(b.len(), 56);
        assert_eq!(&b[2..4], &54u16.to_ne_bytes());
        assert_eq!(&b[4..16], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(&b[16..48], &[0xcc; 32]);
        assert_eq!(&b[48..56], &[0xff; 8]);
    }

    #[test]
    fn versions_the_kernel_does_not_offload_are_refused() {
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: aead_key(&[0; 32]),
            iv: iv(),
        };
        assert!(CryptoInfo::new(ProtocolVersion::TLSv1_1, 0, &secrets).is_none());
    }

    #[test]
    fn an_eio_read_on_a_ktls_socket_is_an_end_of_stream() {
        let (result, ()) = map_read((Err(io::Error::from_raw_os_error(libc::EIO)), ()));
        assert_eq!(result.unwrap(), 0);
        let (result, ()) = map_read((Err(io::Error::from_raw_os_error(libc::ECONNRESET)), ()));
        assert!(result.is_err());
    }

    /// This machine's kernel has no `tls` module: installing the ULP fails with ENOENT, and the
    /// failure is what the fallback keys on. Where a kernel has the module the call succeeds,
    /// which this test also accepts; it checks that the call reaches the kernel and that the
    /// error, if any, is the one the fallback expects.
    #[test]
    fn installing_the_ulp_reaches_the_kernel() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        use std::os::fd::AsRawFd;
        match install_ulp(server.as_raw_fd()) {
            Ok(()) => {}
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}"),
        }
        drop(client);
    }

    /// rustls lets code outside it make only full-length (256-bit) keys.
    fn aead_key(bytes: &[u8; 32]) -> AeadKey {
        AeadKey::from(*bytes)
    }
}
