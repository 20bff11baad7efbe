//! Response bytes for one HTTP/1.1 connection, gathered for vectored writes.
//!
//! A response is a list of `Bytes` slices: slices of upstream DATA frames (never copied in
//! binary mode) interleaved with small framing pieces (the head, chunk-size lines, CRLFs, the
//! gRPC-Web trailer frame) written into a scratch buffer and sealed into a slice before the next
//! data slice. [`Output::flush`] writes them all with as few vectored writes as the socket
//! allows, resuming after partial writes. Everything but `flush` is sans-IO.

use bytes::{Bytes, BytesMut};
use monoio::buf::IoVecBuf;

use super::write::chunk_size_line;
use crate::grpc_web;
use crate::transport::Transport;

/// Output is flushed once this much is gathered, even if the upstream has more ready, so a fast
/// upstream cannot make a slow client's buffer grow: flow control then holds the upstream.
pub const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;
/// At most this many slices per vectored write (well under IOV_MAX = 1024).
pub const OUTPUT_SLICES_MAX: usize = 256;

const CRLF: &[u8] = b"\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Response bytes gathered for one vectored write.
#[derive(Default)]
pub struct Output {
    slices: IoSlices,
    scratch: BytesMut,
}

impl Output {
    /// Room for head and framing bytes; they are sealed into a slice before the next data slice.
    pub fn scratch(&mut self) -> &mut BytesMut {
        // 512 bytes hold a typical response head, chunk framing and trailer frame; the
        // allocation lives until the response is written, so in-flight calls each hold one.
        if self.scratch.capacity() - self.scratch.len() < 256 {
            self.scratch.reserve(512);
        }
        &mut self.scratch
    }

    fn seal_scratch(&mut self) {
        if !self.scratch.is_empty() {
            self.slices.push(self.scratch.split().freeze());
        }
    }

    /// Append a slice as it is (no copy).
    pub fn push(&mut self, bytes: Bytes) {
        self.seal_scratch();
        self.slices.push(bytes);
    }

    pub fn push_static(&mut self, bytes: &'static [u8]) {
        self.push(Bytes::from_static(bytes));
    }

    /// One upstream DATA frame as response body: a chunk of its own in HTTP/1.1, base64-encoded
    /// in text mode (each piece padded, so the client can decode it without waiting for more).
    pub fn body_piece(&mut self, data: Bytes, text: bool, chunked: bool) {
        if data.is_empty() {
            return;
        }
        if text {
            let mut encoded = BytesMut::with_capacity(data.len().div_ceil(3) * 4);
            grpc_web::encode_base64_flush(&data, &mut encoded);
            self.chunk(encoded.freeze(), chunked);
        } else {
            self.chunk(data, chunked);
        }
    }

    fn chunk(&mut self, data: Bytes, chunked: bool) {
        if chunked {
            let (line, len) = chunk_size_line(data.len());
            self.scratch().extend_from_slice(&line[..len]);
            self.push(data);
            self.scratch().extend_from_slice(CRLF);
        } else {
            self.push(data);
        }
    }

    /// The trailers as the final gRPC-Web frame, then the end of the chunked body.
    pub fn trailer_frame<'a>(
        &mut self,
        trailers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        text: bool,
        chunked: bool,
    ) {
        let mut frame = BytesMut::with_capacity(64);
        grpc_web::encode_trailer_frame(trailers, &mut frame);
        self.body_piece(frame.freeze(), text, chunked);
        if chunked {
            self.scratch().extend_from_slice(LAST_CHUNK);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slices.bufs.is_empty() && self.scratch.is_empty()
    }

    /// Give back the memory kept from earlier responses (scratch room, slice and iovec lists)
    /// once everything is written: an idle keep-alive connection should hold none of it.
    pub fn release(&mut self) {
        if self.is_empty() {
            *self = Output::default();
        }
    }

    pub fn len_bytes(&self) -> usize {
        self.slices.bufs.iter().map(Bytes::len).sum::<usize>() + self.scratch.len()
    }

    /// Whether enough is gathered that it should be written before taking more.
    pub fn is_full(&self) -> bool {
        self.len_bytes() >= OUTPUT_FLUSH_BYTES || self.slices.bufs.len() >= OUTPUT_SLICES_MAX
    }

    /// Write everything gathered with vectored writes, resuming after partial writes.
    ///
    /// monoio 0.2.4's `write_vectored_all` does not advance the iovec base after a partial
    /// write (`IoVecMeta::consume` discards `iov_base.add(amt)`), which cut large responses to
    /// slow readers; this loop advances the `Bytes` slices themselves instead.
    pub async fn flush<S: Transport>(&mut self, stream: &mut S) -> std::io::Result<()> {
        self.seal_scratch();
        let mut slices = std::mem::take(&mut self.slices);
        let mut result = Ok(());
        while !slices.bufs.is_empty() {
            slices.prepare();
            let (written, returned) = stream.writev(slices).await;
            slices = returned;
            match written {
                Ok(0) => {
                    result = Err(std::io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => slices.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        slices.clear();
        self.slices = slices;
        // Give the scratch allocation back rather than keep it per idle connection; the next
        // response allocates a fresh one.
        self.scratch = BytesMut::new();
        result
    }
}

/// Owned `Bytes` plus the iovecs pointing into them, handed to the io driver as one value so
/// the memory stays alive until the kernel is done with it.
#[derive(Default)]
pub struct IoSlices {
    iovecs: Vec<libc::iovec>,
    bufs: Vec<Bytes>,
}

impl IoSlices {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.bufs.push(bytes);
        }
    }

    fn prepare(&mut self) {
        self.iovecs.clear();
        self.iovecs.extend(self.bufs.iter().map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
    }

    /// Drop the first `written` bytes: whole slices, then the front of a partly written one.
    fn advance(&mut self, mut written: usize) {
        let done = self
            .bufs
            .iter()
            .take_while(|b| {
                let whole = b.len() <= written;
                if whole {
                    written -= b.len();
                }
                whole
            })
            .count();
        self.bufs.drain(..done);
        if written > 0 {
            bytes::Buf::advance(&mut self.bufs[0], written);
        }
    }

    fn clear(&mut self) {
        self.iovecs.clear();
        self.bufs.clear();
    }
}

// SAFETY: the iovecs point into `bufs`, whose heap memory does not move or change while the
// value is owned by the driver (Bytes are immutable and `bufs` is not touched during the write).
unsafe impl IoVecBuf for IoSlices {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc_web::Base64Decoder;
    use crate::testing::{Frame, FrameParser};

    /// Everything gathered, as the bytes a write would send.
    fn wire(output: &mut Output) -> Vec<u8> {
        output.seal_scratch();
        output.slices.bufs.iter().flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn data_slices_are_not_copied_in_binary_mode() {
        let mut output = Output::default();
        let data = Bytes::from_static(b"\0\0\0\0\x02hi");
        output.body_piece(data.clone(), false, true);
        output.seal_scratch();
        assert_eq!(output.slices.bufs.len(), 3, "size line, data, CRLF");
        assert_eq!(output.slices.bufs[1].as_ptr(), data.as_ptr());
    }

    #[test]
    fn chunked_body_with_trailer_frame_and_last_chunk() {
        let mut output = Output::default();
        output.scratch().extend_from_slice(b"HEAD\r\n\r\n");
        output.body_piece(Bytes::from_static(b"abc"), false, true);
        output.body_piece(Bytes::new(), false, true);
        output.trailer_frame([(&b"grpc-status"[..], &b"0"[..])], false, true);
        let expected: &[u8] =
            b"HEAD\r\n\r\n3\r\nabc\r\n14\r\n\x80\0\0\0\x0fgrpc-status:0\r\n\r\n0\r\n\r\n";
        assert_eq!(wire(&mut output), expected);
    }

    #[test]
    fn http10_body_is_not_chunked() {
        let mut output = Output::default();
        output.body_piece(Bytes::from_static(b"abc"), false, false);
        output.trailer_frame([(&b"grpc-status"[..], &b"0"[..])], false, false);
        assert_eq!(wire(&mut output), b"abc\x80\0\0\0\x0fgrpc-status:0\r\n");
    }

    #[test]
    fn text_mode_encodes_each_piece_padded_and_decodes_back() {
        let mut output = Output::default();
        output.body_piece(Bytes::from_static(b"\0\0\0\0\x01a"), true, false);
        output.body_piece(Bytes::from_static(b"\0\0\0\0\x02bc"), true, false);
        output.trailer_frame([(&b"grpc-status"[..], &b"7"[..])], true, false);
        let bytes = wire(&mut output);
        // Every piece is padded on its own, so a client can decode as pieces arrive.
        assert_eq!(&bytes[..8], b"AAAAAAFh");
        let mut decoded = BytesMut::new();
        Base64Decoder::new().decode(&bytes, &mut decoded).unwrap();
        let mut parser = FrameParser::new(1024);
        let mut frames = Vec::new();
        while let Some(frame) = parser.parse(&mut decoded).unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[2],
            Frame::Trailers(vec![(
                Bytes::from_static(b"grpc-status"),
                Bytes::from_static(b"7")
            )])
        );
    }

    #[test]
    fn is_full_by_bytes_or_by_slices() {
        let mut output = Output::default();
        assert!(output.is_empty() && !output.is_full());
        output.push(Bytes::from(vec![0; OUTPUT_FLUSH_BYTES - 1]));
        assert!(!output.is_full());
        output.push_static(b"x");
        assert!(output.is_full());

        let mut output = Output::default();
        for _ in 0..OUTPUT_SLICES_MAX - 1 {
            output.push_static(b"x");
        }
        assert!(!output.is_full());
        output.push_static(b"x");
        assert!(output.is_full());
        assert_eq!(output.len_bytes(), OUTPUT_SLICES_MAX);
    }

    #[test]
    fn advance_drops_whole_slices_then_the_front_of_one() {
        let mut slices = IoSlices::default();
        for piece in [&b"abc"[..], b"de", b"fghij"] {
            slices.push(Bytes::from_static(piece));
        }
        slices.push(Bytes::new());
        assert_eq!(slices.bufs.len(), 3, "empty slices are never queued");
        slices.advance(0);
        assert_eq!(slices.bufs.len(), 3);
        slices.advance(4);
        assert_eq!(&slices.bufs[0][..], b"e");
        slices.advance(1);
        assert_eq!(&slices.bufs[0][..], b"fghij");
        slices.advance(3);
        assert_eq!(&slices.bufs[0][..], b"ij");
        slices.prepare();
        assert_eq!(slices.read_iovec_len(), 1);
        // SAFETY (test): the pointer was just prepared from `bufs`.
        let iov = unsafe { *slices.read_iovec_ptr() };
        assert_eq!(
            (iov.iov_base as *const u8, iov.iov_len),
            (slices.bufs[0].as_ptr(), 2)
        );
        slices.advance(2);
        assert!(slices.bufs.is_empty());
    }

    #[test]
    fn framing_bytes_keep_their_order_around_data() {
        let mut output = Output::default();
        output.scratch().extend_from_slice(b"a");
        output.push_static(b"b");
        output.scratch().extend_from_slice(b"c");
        output.push_static(b"d");
        assert_eq!(output.len_bytes(), 4);
        assert_eq!(wire(&mut output), b"abcd");
    }
}
