//! A client's connection as frames, whatever carries them: the TCP
//! protocol's length-delimited frames (plain or TLS) or WebSocket binary
//! messages, one frame each. The handshake, the document and the writer
//! see only [`Transport`].
//!
//! Until its client is admitted (its hello checked, the token with it), a
//! connection takes frames of at most the hello's limit
//! ([`crate::ServerConfig`]'s `hello_limit`), then of the frame limit:
//! both framings reserve a frame's announced length as soon as its header
//! arrives, and a peer that has shown no token gets no more than a hello
//! needs.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::extract::ws::close_code;
use bytes::{Bytes, BytesMut};
use facsimile::net::protocol::{self, ByteStream};
use futures_util::stream::{self, SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::CloseFrame, protocol::Role};
use tokio_util::codec::{Decoder, FramedRead, FramedWrite, LengthDelimitedCodec};

/// A WebSocket close code (RFC 6455, section 7.4).
pub(crate) type CloseCode = u16;

/// How the relay ends a connection: the close code and reason a WebSocket
/// client is sent (a TCP client just sees the connection end).
#[derive(Clone, Debug)]
pub(crate) struct Close {
    pub(crate) code: CloseCode,
    pub(crate) reason: String,
}

impl Close {
    /// The client broke the protocol: a frame that does not decode, a
    /// message the relay refused.
    pub(crate) fn policy(reason: impl Into<String>) -> Close {
        Close {
            code: close_code::POLICY,
            reason: reason.into(),
        }
    }
}

/// What the relay sends a client.
pub(crate) enum Outgoing {
    /// One protocol frame.
    Frame(Bytes),
    /// The last thing sent before the connection ends.
    Close(Close),
}

/// Why a client's frames stopped, other than a clean end.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client broke the framing: a frame above the limit, a text
    /// message, a malformed WebSocket frame.
    Protocol(Close),
    /// The connection failed.
    Io(io::Error),
}

/// The client's frames, one item per protocol frame.
pub(crate) type Frames = Pin<Box<dyn Stream<Item = Result<Bytes, ReadError>> + Send>>;
/// Frames to the client.
pub(crate) type FrameSink = Pin<Box<dyn Sink<Outgoing, Error = io::Error> + Send>>;

/// Whether a connection's client was admitted: shared by the handshake,
/// which admits it, and the framing, which then takes frames up to the
/// frame limit instead of the hello's.
#[derive(Clone, Debug, Default)]
pub(crate) struct Admission(Arc<AtomicBool>);

impl Admission {
    /// The client passed the handshake's checks.
    pub(crate) fn admit(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn admitted(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A connection split into its frames in and out.
pub(crate) struct Transport {
    /// `"tcp"` or `"websocket"`, for the log.
    pub(crate) kind: &'static str,
    pub(crate) frames: Frames,
    pub(crate) sink: FrameSink,
    /// Raises the limit of incoming frames to the frame limit.
    pub(crate) admission: Admission,
}

impl Transport {
    /// The TCP protocol: each frame behind its 4-byte length, of at most
    /// `hello_limit` bytes until the client is admitted, `max_frame` after.
    pub(crate) fn tcp(
        stream: Box<dyn ByteStream>,
        max_frame: usize,
        hello_limit: usize,
    ) -> Transport {
        let admission = Admission::default();
        let (reader, writer) = tokio::io::split(stream);
        let reader = FramedRead::new(
            reader,
            Framing {
                codec: protocol::codec(hello_limit),
                admission: admission.clone(),
                hello_limit,
                max_frame,
            },
        );
        let admitted = admission.clone();
        let frames = reader.map(move |r| match r {
            Ok(frame) => Ok(frame.freeze()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let reason = if admitted.admitted() {
                    format!(
                        "bad frame ({e}); frames are limited to {max_frame} bytes (--max-frame)"
                    )
                } else {
                    format!(
                        "too large for a hello ({e}); a hello is limited to {hello_limit} bytes"
                    )
                };
                Err(ReadError::Protocol(Close {
                    code: close_code::SIZE,
                    reason,
                }))
            }
            Err(e) => Err(ReadError::Io(e)),
        });
        // A TCP client learns why from the relay's log: closing is the
        // socket's shutdown, which `SinkExt::close` does.
        let sink = FramedWrite::new(writer, protocol::codec(max_frame)).with_flat_map(|out| {
            stream::iter(match out {
                Outgoing::Frame(frame) => Some(Ok(frame)),
                Outgoing::Close(_) => None,
            })
        });
        Transport {
            kind: "tcp",
            frames: Box::pin(frames),
            sink: Box::pin(sink),
            admission,
        }
    }

    /// A WebSocket on a connection whose HTTP upgrade was answered: each
    /// binary message one frame, of at most `hello_limit` bytes until the
    /// client is admitted, `max_frame` after.
    pub(crate) async fn websocket<S>(io: S, max_frame: usize, hello_limit: usize) -> Transport
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let admission = Admission::default();
        let guarded = HelloGuard::new(io, admission.clone(), hello_limit);
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(max_frame))
            .max_frame_size(Some(max_frame));
        let socket = WebSocketStream::from_raw_socket(guarded, Role::Server, Some(config)).await;
        let (sink, frames) = socket.split();
        Transport {
            kind: "websocket",
            frames: Box::pin(WsFrames {
                inner: Some(frames),
                max_frame,
            }),
            sink: Box::pin(WsSink(sink)),
            admission,
        }
    }
}

/// The TCP protocol's framing, whose limit is the hello's until the
/// client is admitted.
struct Framing {
    codec: LengthDelimitedCodec,
    admission: Admission,
    hello_limit: usize,
    max_frame: usize,
}

impl Decoder for Framing {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let limit = if self.admission.admitted() {
            self.max_frame
        } else {
            self.hello_limit
        };
        if self.codec.max_frame_length() != limit {
            self.codec.set_max_frame_length(limit);
        }
        self.codec.decode(src)
    }
}

/// How much a WebSocket not yet admitted is read ahead of what passes on:
/// enough for a frame's header (at most 14 bytes) and what a peer sends
/// with it.
const READ_AHEAD: usize = 4 << 10;

/// A WebSocket's bytes until its client is admitted, passed on frame by
/// frame: each frame's header is read whole before any of it passes, and
/// a frame whose announced payload would take what the peer sent so far
/// past the limit is refused ([`HelloTooLarge`]) before the WebSocket
/// library sees it, as that reserves a frame's announced length at its
/// header. The limit counts every frame before the client is admitted, so
/// a hello cut into fragments, or behind pings, takes no more. Nothing past
/// the frame being passed on passes before then (at most [`READ_AHEAD`]
/// bytes are read ahead): what the client sent right behind its hello
/// passes unchecked once it is admitted, as everything after it does.
struct HelloGuard<S> {
    inner: S,
    admission: Admission,
    limit: u64,
    /// Payload bytes of the frames announced so far.
    announced: u64,
    /// Bytes read and not passed on yet.
    ahead: BytesMut,
    /// Bytes of the frame being passed on (its header, then its payload)
    /// still to pass.
    passing: u64,
}

/// A frame of a WebSocket not yet admitted announced more than its hello
/// may take.
#[derive(Debug)]
struct HelloTooLarge(u64);

impl fmt::Display for HelloTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a message too large for a hello; a hello is limited to {} bytes",
            self.0
        )
    }
}

impl std::error::Error for HelloTooLarge {}

impl<S> HelloGuard<S> {
    fn new(inner: S, admission: Admission, limit: usize) -> Self {
        HelloGuard {
            inner,
            admission,
            limit: limit as u64,
            announced: 0,
            ahead: BytesMut::new(),
            passing: 0,
        }
    }
}

/// How long a frame's header is, from its first bytes (two, until they
/// are in).
fn header_len(header: &[u8]) -> usize {
    match header {
        [_, b, ..] => {
            let extended = match b & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if b & 0x80 != 0 { 4 } else { 0 };
            2 + extended + mask
        }
        _ => 2,
    }
}

/// The payload length a whole header announces.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes(header[2..10].try_into().expect("8 bytes")),
        n => u64::from(n),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HelloGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let open = this.admission.admitted();
            if open || this.passing > 0 {
                let may = if open {
                    usize::MAX
                } else {
                    usize::try_from(this.passing).unwrap_or(usize::MAX)
                };
                if !this.ahead.is_empty() {
                    let n = this.ahead.len().min(buf.remaining()).min(may);
                    buf.put_slice(&this.ahead.split_to(n));
                    this.passing = this.passing.saturating_sub(n as u64);
                    return Poll::Ready(Ok(()));
                }
                if open {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                let n = may.min(buf.remaining());
                let mut part = ReadBuf::new(buf.initialize_unfilled_to(n));
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                let read = part.filled().len();
                buf.advance(read);
                this.passing -= read as u64;
                return Poll::Ready(Ok(()));
            }
            // The next frame's header, whole, before any of it passes.
            let need = header_len(&this.ahead);
            if this.ahead.len() < need {
                let have = this.ahead.len();
                this.ahead.resize(READ_AHEAD, 0);
                let mut part = ReadBuf::new(&mut this.ahead[have..]);
                let polled = Pin::new(&mut this.inner).poll_read(cx, &mut part);
                let read = part.filled().len();
                this.ahead.truncate(have + read);
                ready!(polled)?;
                if read == 0 {
                    // The end; a header cut short never passes.
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let payload = payload_len(&this.ahead);
            // A reserved opcode is refused by tungstenite as it parses the
            // header, before it reserves anything, with the close code
            // that says so.
            let reserved = matches!(this.ahead[0] & 0x0f, 3..=7 | 11..=15);
            if !reserved {
                this.announced = this.announced.saturating_add(payload);
                if this.announced > this.limit {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        HelloTooLarge(this.limit),
                    )));
                }
            }
            this.passing = (need as u64).saturating_add(payload);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HelloGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
}

/// Frames to a WebSocket, each one binary message. (Not `sink_map_err`:
/// its error mapping runs once, and a failed connection keeps failing, to
/// the close frame at least.)
struct WsSink<S>(SplitSink<WebSocketStream<S>, Message>);

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Outgoing> for WsSink<S> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_ready_unpin(cx).map_err(io::Error::other)
    }

    fn start_send(mut self: Pin<&mut Self>, out: Outgoing) -> io::Result<()> {
        let msg = match out {
            Outgoing::Frame(frame) => Message::Binary(frame),
            Outgoing::Close(close) => Message::Close(Some(CloseFrame {
                code: close.code.into(),
                reason: close_reason(&close.reason).to_string().into(),
            })),
        };
        self.0.start_send_unpin(msg).map_err(io::Error::other)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_close_unpin(cx).map_err(io::Error::other)
    }
}

/// A close frame's reason is at most 123 bytes (a control frame carries
/// 125, two of them the code): cut at a character boundary.
fn close_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A WebSocket's binary messages as frames. Pings and pongs are answered
/// by the library; a close ends the frames; anything else is a protocol
/// error.
struct WsFrames<S> {
    /// `None` once the frames ended.
    inner: Option<SplitStream<WebSocketStream<S>>>,
    max_frame: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsFrames<S> {
    type Item = Result<Bytes, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let max_frame = self.max_frame;
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let item = match ready!(inner.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(frame))) => Ok(frame),
                // Pings are answered by the library; a raw frame is never
                // read.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(_))) => Err(ReadError::Protocol(Close {
                    code: close_code::UNSUPPORTED,
                    reason: "a text message: the relay takes binary messages, one frame each"
                        .into(),
                })),
                Some(Ok(Message::Close(_))) | None => {
                    self.inner = None;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => match e {
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                        self.inner = None;
                        return Poll::Ready(None);
                    }
                    tungstenite::Error::Io(e) => {
                        match e.get_ref().and_then(|e| e.downcast_ref::<HelloTooLarge>()) {
                            Some(too_large) => Err(ReadError::Protocol(Close {
                                code: close_code::SIZE,
                                reason: too_large.to_string(),
                            })),
                            None => Err(ReadError::Io(e)),
                        }
                    }
                    tungstenite::Error::Capacity(e) => Err(ReadError::Protocol(Close {
                        code: close_code::SIZE,
                        reason: format!(
                            "{e}; messages are limited to {max_frame} bytes (--max-frame)"
                        ),
                    })),
                    e => Err(ReadError::Protocol(Close {
                        code: close_code::PROTOCOL,
                        reason: format!("WebSocket protocol error: {e}"),
                    })),
                },
            };
            if item.is_err() {
                // Nothing sensible follows a broken message.
                self.inner = None;
            }
            return Poll::Ready(Some(item));
        }
    }
}

/// Ends a connection: sends `close` where the transport can say it, then
/// closes the sink. Gives up after `within` (a client that does not read
/// cannot take a close frame either).
pub(crate) async fn close(sink: &mut FrameSink, close: Close, within: std::time::Duration) {
    let _ = tokio::time::timeout(within, async {
        sink.feed(Outgoing::Close(close)).await?;
        sink.close().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;
    use tokio_util::codec::FramedWrite;

    use super::*;

    const HELLO_LIMIT: usize = 1 << 10;
    const MAX_FRAME: usize = 1 << 20;

    /// A connection's two ends: the relay's transport, and the client's
    /// frames out, sent as the client's protocol sends them.
    async fn connection(
        websocket: bool,
    ) -> (
        Transport,
        Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>,
    ) {
        let (relay, client): (DuplexStream, DuplexStream) = tokio::io::duplex(64 << 10);
        if websocket {
            let client = async {
                let config = tungstenite::protocol::WebSocketConfig::default();
                WebSocketStream::from_raw_socket(client, Role::Client, Some(config)).await
            };
            let (transport, client) =
                tokio::join!(Transport::websocket(relay, MAX_FRAME, HELLO_LIMIT), client);
            let sink =
                client
                    .with(|frame: Bytes| async move {
                        Ok::<_, tungstenite::Error>(Message::Binary(frame))
                    })
                    .sink_map_err(io::Error::other);
            (transport, Box::pin(sink))
        } else {
            let transport = Transport::tcp(Box::new(relay), MAX_FRAME, HELLO_LIMIT);
            (
                transport,
                Box::pin(FramedWrite::new(client, protocol::codec(MAX_FRAME))),
            )
        }
    }

    /// Both framings take a first frame within the hello's limit and
    /// refuse a larger one, before its bytes arrive; once the client is
    /// admitted they take frames up to the frame limit, a frame the client
    /// sent right behind its hello included.
    #[tokio::test]
    async fn frames_past_the_hello_limit_pass_only_once_the_client_is_admitted() {
        for websocket in [false, true] {
            let (mut relay, mut client) = connection(websocket).await;
            let big = Bytes::from(vec![7; MAX_FRAME / 2]);
            let sending = {
                let big = big.clone();
                tokio::spawn(async move {
                    client.send(Bytes::from(vec![1; HELLO_LIMIT])).await?;
                    client.send(big).await?;
                    Ok::<_, io::Error>(client)
                })
            };
            let hello = relay.frames.next().await.unwrap().unwrap();
            assert_eq!(hello.len(), HELLO_LIMIT, "websocket: {websocket}");
            relay.admission.admit();
            let next = relay.frames.next().await.unwrap().unwrap();
            assert_eq!(next, big, "websocket: {websocket}");
            let _client = sending.await.unwrap().unwrap();

            let (mut relay, mut client) = connection(websocket).await;
            // Only the length (or the header) goes out: nothing waits for the rest.
            let _sending =
                tokio::spawn(
                    async move { client.send(Bytes::from(vec![1; HELLO_LIMIT + 1])).await },
                );
            match relay.frames.next().await {
                Some(Err(ReadError::Protocol(close))) => {
                    assert_eq!(close.code, close_code::SIZE, "websocket: {websocket}");
                    assert!(
                        close.reason.contains("a hello is limited to 1024 bytes"),
                        "{}",
                        close.reason
                    );
                }
                other => panic!("websocket: {websocket}: {other:?}"),
            }
        }
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= 123);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(close_reason(&"x".repeat(200)).len(), 123);
    }
}
