//! etcd's Go client of release 3.4 (so `etcdctl` 3.4) makes its per-endpoint calls —
//! `endpoint status`, `endpoint hashkv`, `defrag`, `snapshot save`, and every `--cluster`
//! form — with the endpoint's URL, `http://host:port`, as the HTTP/2 `:authority`. etcd's gRPC
//! server lets that pass; the HTTP/2 server here (h2) refuses the request as malformed
//! (`RST_STREAM PROTOCOL_ERROR`). [`AuthorityFix`] rewrites such an authority on the way in.
//!
//! It reads the connection's preface and its first header block. If that block's `:authority`
//! carries a scheme, every header block the client sends on the connection is decoded (HPACK,
//! in the client's compression context) and encoded again (in a context of its own, the one
//! the server then decodes with), the authority cut to `host:port`; other frames pass
//! unchanged. Otherwise — every other client, and HTTP/1.1 — the bytes pass untouched from
//! then on, so the common case costs one header block decoded per connection.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest maximum frame size a peer must accept (HTTP/2 §4.2): what this sends.
const MAX_FRAME: usize = 16_384;
/// The longest header block taken (longer ones close the connection).
const MAX_BLOCK: usize = 1 << 20;
/// Bytes a connection may send before its first header block is complete; past it, it passes
/// untouched.
const SNIFF_LIMIT: usize = 256 * 1024;

enum Mode {
    /// Before the first header block.
    Sniffing,
    /// Every header block is rewritten.
    Translating(Box<Translator>),
    /// Bytes pass untouched.
    Passing,
}

struct Translator {
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

/// A client connection whose `:authority` is mended on the way in (module docs).
pub(crate) struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the client and not yet handled.
    input: BytesMut,
    /// Bytes ready for the server.
    output: BytesMut,
    /// Whether the connection preface went on.
    preface_passed: bool,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub(crate) fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Sniffing,
            input: BytesMut::new(),
            output: BytesMut::new(),
            preface_passed: false,
            eof: false,
        }
    }

    /// Handles what `input` holds.
    fn process(&mut self) -> io::Result<()> {
        if matches!(self.mode, Mode::Sniffing) {
            self.sniff();
        }
        if let Mode::Translating(translator) = &mut self.mode {
            translator.translate(&mut self.input, &mut self.output)?;
        }
        if matches!(self.mode, Mode::Passing) {
            let all = self.input.split();
            self.output.unsplit(all);
        }
        Ok(())
    }

    /// Hands on the preface and the frames before the first header block at once (the
    /// server answers the preface before the client sends requests); holds the first header
    /// block until it is complete, then decides the mode.
    fn sniff(&mut self) {
        if !self.preface_passed {
            let prefix = self.input.len().min(PREFACE.len());
            if self.input[..prefix] != PREFACE[..prefix] {
                self.mode = Mode::Passing;
                return;
            }
            if self.input.len() < PREFACE.len() {
                if self.eof {
                    self.mode = Mode::Passing;
                }
                return;
            }
            let preface = self.input.split_to(PREFACE.len());
            self.output.unsplit(preface);
            self.preface_passed = true;
        }
        // Frames before the first HEADERS pass on.
        while let Some(frame) = Frame::at(&self.input, 0) {
            if frame.kind == HEADERS {
                break;
            }
            let bytes = self.input.split_to(FRAME_HEADER + frame.length);
            self.output.unsplit(bytes);
        }
        if self.eof || self.input.len() > SNIFF_LIMIT {
            self.mode = Mode::Passing;
            return;
        }
        match header_block(&self.input) {
            Ok(Some(found)) => self.decide(found),
            Ok(None) => {}
            // h2 will refuse the connection.
            Err(_) => self.mode = Mode::Passing,
        }
    }

    /// `found`, the first header block, is at the head of the input.
    fn decide(&mut self, found: HeaderBlock) {
        let mut decoder = loona_hpack::Decoder::new();
        let Ok(fields) = decoder.decode(&found.block) else {
            self.mode = Mode::Passing;
            return;
        };
        if !fields.iter().any(|(name, value)| needs_fix(name, value)) {
            self.mode = Mode::Passing;
            return;
        }
        let mut translator = Translator {
            decoder,
            encoder: loona_hpack::Encoder::new(),
        };
        translator.emit(
            found.first.stream,
            found.first.flags,
            fields,
            &mut self.output,
        );
        self.input.advance(found.end);
        self.mode = Mode::Translating(Box::new(translator));
    }
}

fn needs_fix(name: &[u8], value: &[u8]) -> bool {
    name == b":authority" && value.windows(3).any(|w| w == b"://")
}

/// `http://host:port/…` → `host:port`.
fn mend(value: &[u8]) -> Vec<u8> {
    let after = value
        .windows(3)
        .position(|w| w == b"://")
        .map_or(value, |at| &value[at + 3..]);
    let end = after.iter().position(|&b| b == b'/').unwrap_or(after.len());
    after[..end].to_vec()
}

/// A frame header.
#[derive(Clone, Copy)]
struct Frame {
    length: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Frame {
    /// The frame at `offset`, if all of it is there.
    fn at(input: &[u8], offset: usize) -> Option<Frame> {
        let header = input.get(offset..offset + FRAME_HEADER)?;
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        input.get(offset + FRAME_HEADER..offset + FRAME_HEADER + length)?;
        Some(Frame {
            length,
            kind: header[3],
            flags: header[4],
            stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        })
    }

    /// A HEADERS frame's block fragment, without padding and priority.
    fn fragment<'a>(&self, payload: &'a [u8]) -> Option<&'a [u8]> {
        let mut body = payload;
        let mut padding = 0;
        if self.flags & PADDED != 0 {
            padding = usize::from(*body.first()?);
            body = &body[1..];
        }
        if self.flags & PRIORITY != 0 {
            body = body.get(5..)?;
        }
        body.get(..body.len().checked_sub(padding)?)
    }
}

/// A header block: a HEADERS frame and the CONTINUATION frames up to END_HEADERS.
struct HeaderBlock {
    /// The HEADERS frame.
    first: Frame,
    /// The fragments, joined.
    block: Vec<u8>,
    /// The bytes its frames span.
    end: usize,
}

/// The header block at the head of `input`; `None` until all of it is there.
fn header_block(input: &[u8]) -> Result<Option<HeaderBlock>, &'static str> {
    let Some(headers) = Frame::at(input, 0) else {
        return Ok(None);
    };
    let mut block = headers
        .fragment(&input[FRAME_HEADER..FRAME_HEADER + headers.length])
        .ok_or("a malformed HEADERS frame")?
        .to_vec();
    let mut end = FRAME_HEADER + headers.length;
    let mut flags = headers.flags;
    while flags & END_HEADERS == 0 {
        let Some(next) = Frame::at(input, end) else {
            return Ok(None);
        };
        if next.kind != CONTINUATION {
            return Err("a header block interrupted");
        }
        block.extend_from_slice(&input[end + FRAME_HEADER..end + FRAME_HEADER + next.length]);
        end += FRAME_HEADER + next.length;
        flags = next.flags;
    }
    Ok(Some(HeaderBlock {
        first: headers,
        block,
        end,
    }))
}

impl Translator {
    /// Rewrites the header blocks among the complete frames of `input`, consuming them.
    fn translate(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> io::Result<()> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        while let Some(frame) = Frame::at(input, 0) {
            match frame.kind {
                HEADERS => {
                    let Some(found) = header_block(input).map_err(invalid)? else {
                        if input.len() > MAX_BLOCK {
                            return Err(invalid("a header block too large"));
                        }
                        break;
                    };
                    let fields = self
                        .decoder
                        .decode(&found.block)
                        .map_err(|e| invalid(&format!("a header block does not decode: {e:?}")))?;
                    self.emit(found.first.stream, found.first.flags, fields, output);
                    input.advance(found.end);
                }
                CONTINUATION => return Err(invalid("a CONTINUATION frame outside a header block")),
                _ => {
                    let frame = input.split_to(FRAME_HEADER + frame.length);
                    output.unsplit(frame);
                }
            }
        }
        Ok(())
    }

    /// Encodes `fields`, the authority mended, as HEADERS and CONTINUATION frames.
    fn emit(
        &mut self,
        stream: u32,
        flags: u8,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        output: &mut BytesMut,
    ) {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = fields
            .into_iter()
            .map(|(name, value)| {
                let value = if needs_fix(&name, &value) {
                    mend(&value)
                } else {
                    value
                };
                (name, value)
            })
            .collect();
        let block = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let chunks: Vec<&[u8]> = if block.is_empty() {
            vec![&[]]
        } else {
            block.chunks(MAX_FRAME).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let (kind, mut frame_flags) = if i == 0 {
                (HEADERS, flags & END_STREAM)
            } else {
                (CONTINUATION, 0)
            };
            if i == last {
                frame_flags |= END_HEADERS;
            }
            let length = chunk.len() as u32;
            output.extend_from_slice(&length.to_be_bytes()[1..]);
            output.extend_from_slice(&[kind, frame_flags]);
            output.extend_from_slice(&stream.to_be_bytes());
            output.extend_from_slice(chunk);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Passing) && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // What is left is an incomplete frame: hand it on as it is.
                if this.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let rest = this.input.split();
                this.output.unsplit(rest);
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.input.extend_from_slice(read.filled());
            }
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[kind, flags]);
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// A client connection: the preface, a SETTINGS frame, then requests with `authority`,
    /// each header block split over a HEADERS and a CONTINUATION frame, each with a DATA frame.
    fn connection(authority: &[u8], requests: u32) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[]));
        for i in 0..requests {
            let stream = 1 + 2 * i;
            let path = format!("/etcdserverpb.Maintenance/Status{i}");
            let block = encoder.encode([
                (b":method".as_slice(), b"POST".as_slice()),
                (b":scheme", b"http"),
                (b":path", path.as_bytes()),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
            ]);
            let (first, rest) = block.split_at(block.len() / 2);
            bytes.extend(frame(HEADERS, 0, stream, first));
            bytes.extend(frame(CONTINUATION, END_HEADERS, stream, rest));
            bytes.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
        }
        bytes
    }

    /// What the server reads through the wrapper, delivered to it in `chunk`-byte reads.
    async fn through(bytes: Vec<u8>, chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(chunk);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in bytes.chunks(chunk) {
                client.write_all(piece).await.unwrap();
            }
        });
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    /// The header blocks and DATA payloads in `bytes`, decoded.
    fn requests(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        let mut decoder = loona_hpack::Decoder::new();
        let mut offset = PREFACE.len();
        let mut block = Vec::new();
        let mut blocks = Vec::new();
        while let Some(frame) = Frame::at(bytes, offset) {
            let payload = &bytes[offset + FRAME_HEADER..offset + FRAME_HEADER + frame.length];
            if matches!(frame.kind, HEADERS | CONTINUATION) {
                block.extend_from_slice(payload);
                if frame.flags & END_HEADERS != 0 {
                    blocks.push(decoder.decode(&block).unwrap());
                    block.clear();
                }
            }
            offset += FRAME_HEADER + frame.length;
        }
        assert_eq!(offset, bytes.len(), "whole frames only");
        blocks
    }

    #[tokio::test]
    async fn an_authority_with_a_scheme_is_mended_in_every_request() {
        for chunk in [1, 7, 64, 100_000] {
            let out = through(connection(b"http://127.0.0.1:2379", 3), chunk).await;
            let blocks = requests(&out);
            assert_eq!(blocks.len(), 3);
            for (i, block) in blocks.iter().enumerate() {
                let authority = block.iter().find(|(n, _)| n == b":authority").unwrap();
                assert_eq!(authority.1, b"127.0.0.1:2379");
                let path = block.iter().find(|(n, _)| n == b":path").unwrap();
                assert_eq!(
                    path.1,
                    format!("/etcdserverpb.Maintenance/Status{i}").as_bytes()
                );
            }
        }
    }

    #[tokio::test]
    async fn other_connections_pass_untouched() {
        let good = connection(b"127.0.0.1:2379", 3);
        assert_eq!(through(good.clone(), 5).await, good);
        let http1 = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(http1.clone(), 3).await, http1);
        let garbage = vec![0xffu8; 100];
        assert_eq!(through(garbage.clone(), 10).await, garbage);
        // A connection that ends mid-frame hands on what it sent.
        let mut cut = connection(b"127.0.0.1:1", 1);
        cut.truncate(cut.len() - 3);
        assert_eq!(through(cut.clone(), 4).await, cut);
        let mut cut = connection(b"http://x:1", 1);
        cut.truncate(cut.len() - 3);
        assert!(through(cut.clone(), 4)
            .await
            .ends_with(&cut[cut.len() - 8..]));
    }

    #[tokio::test]
    async fn the_preface_and_settings_go_on_before_any_request() {
        // The server answers the preface before the client sends requests: holding it back
        // would deadlock the connection.
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1024);
        let mut opening = PREFACE.to_vec();
        opening.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
        client.write_all(&opening).await.unwrap();
        let mut fixed = AuthorityFix::new(server);
        let mut got = vec![0u8; opening.len()];
        tokio::time::timeout(Duration::from_secs(5), fixed.read_exact(&mut got))
            .await
            .expect("the opening is handed on at once")
            .unwrap();
        assert_eq!(got, opening);
    }

    #[test]
    fn mending_keeps_host_and_port() {
        assert_eq!(mend(b"http://10.0.0.1:2379"), b"10.0.0.1:2379");
        assert_eq!(mend(b"https://host:2379/x"), b"host:2379");
    }
}
