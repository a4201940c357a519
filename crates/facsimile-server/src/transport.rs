//! A client's connection as frames, whatever carries them: the TCP
//! protocol's length-delimited frames (plain or TLS) or WebSocket binary
//! messages, one frame each. The handshake, the document and the writer
//! see only [`Transport`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use bytes::Bytes;
use facsimile::net::protocol::{self, ByteStream};
use futures_util::stream::{self, SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite;

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

/// A connection split into its frames in and out.
pub(crate) struct Transport {
    /// `"tcp"` or `"websocket"`, for the log.
    pub(crate) kind: &'static str,
    pub(crate) frames: Frames,
    pub(crate) sink: FrameSink,
}

impl Transport {
    /// The TCP protocol: each frame behind its 4-byte length.
    pub(crate) fn tcp(stream: Box<dyn ByteStream>, max_frame: usize) -> Transport {
        let (reader, writer) = protocol::framed(stream, max_frame);
        let frames = reader.map(move |r| match r {
            Ok(frame) => Ok(frame.freeze()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(ReadError::Protocol(Close {
                code: close_code::SIZE,
                reason: format!(
                    "bad frame ({e}); frames are limited to {max_frame} bytes (--max-frame)"
                ),
            })),
            Err(e) => Err(ReadError::Io(e)),
        });
        // A TCP client learns why from the relay's log: closing is the
        // socket's shutdown, which `SinkExt::close` does.
        let sink = writer.with_flat_map(|out| {
            stream::iter(match out {
                Outgoing::Frame(frame) => Some(Ok(frame)),
                Outgoing::Close(_) => None,
            })
        });
        Transport {
            kind: "tcp",
            frames: Box::pin(frames),
            sink: Box::pin(sink),
        }
    }

    /// A WebSocket after its upgrade: each binary message one frame. The
    /// socket must have been configured with the frame limit as its message
    /// and frame size limits.
    pub(crate) fn websocket(socket: WebSocket, max_frame: usize) -> Transport {
        let (sink, frames) = socket.split();
        Transport {
            kind: "websocket",
            frames: Box::pin(WsFrames {
                inner: Some(frames),
                max_frame,
            }),
            sink: Box::pin(WsSink(sink)),
        }
    }
}

/// Frames to a WebSocket, each one binary message. (Not `sink_map_err`:
/// its error mapping runs once, and a failed connection keeps failing, to
/// the close frame at least.)
struct WsSink(SplitSink<WebSocket, Message>);

impl Sink<Outgoing> for WsSink {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_ready_unpin(cx).map_err(io::Error::other)
    }

    fn start_send(mut self: Pin<&mut Self>, out: Outgoing) -> io::Result<()> {
        let msg = match out {
            Outgoing::Frame(frame) => Message::Binary(frame),
            Outgoing::Close(close) => Message::Close(Some(CloseFrame {
                code: close.code,
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
struct WsFrames {
    /// `None` once the frames ended.
    inner: Option<SplitStream<WebSocket>>,
    max_frame: usize,
}

impl Stream for WsFrames {
    type Item = Result<Bytes, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let max_frame = self.max_frame;
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let item = match ready!(inner.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(frame))) => Ok(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Text(_))) => Err(ReadError::Protocol(Close {
                    code: close_code::UNSUPPORTED,
                    reason: "a text message: the relay takes binary messages, one frame each"
                        .into(),
                })),
                Some(Ok(Message::Close(_))) | None => {
                    self.inner = None;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => match e.into_inner().downcast::<tungstenite::Error>() {
                    Ok(e) => match *e {
                        tungstenite::Error::ConnectionClosed
                        | tungstenite::Error::AlreadyClosed => {
                            self.inner = None;
                            return Poll::Ready(None);
                        }
                        tungstenite::Error::Io(e) => Err(ReadError::Io(e)),
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
                    Err(e) => Err(ReadError::Io(io::Error::other(e))),
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
    use super::*;

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
