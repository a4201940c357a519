//! The relay's wire protocol, shared by [`super::connect`] and the
//! `facsimile-server` crate: the frames and the client's session from
//! `facsimile-protocol`, and their framing over a byte stream. You need it
//! only to write another client or relay.
//!
//! Over TCP, a connection carries length-delimited frames: a 4-byte
//! big-endian length, then the frame; both sides refuse frames above their
//! configured limit. The frames and what they mean: [`facsimile_protocol`].

pub use facsimile_protocol::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// A connection's byte stream, as both ends of the protocol hold it: plain
/// TCP or TLS.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// The reading half of a connection, in frames.
pub type FrameReader = FramedRead<ReadHalf<Box<dyn ByteStream>>, LengthDelimitedCodec>;
/// The writing half of a connection, in frames.
pub type FrameWriter = FramedWrite<WriteHalf<Box<dyn ByteStream>>, LengthDelimitedCodec>;

/// The protocol's framing: a 4-byte big-endian length, then the frame;
/// frames above `max_frame` bytes are refused.
pub fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Splits a connection into its frame reader and writer.
pub fn framed(stream: Box<dyn ByteStream>, max_frame: usize) -> (FrameReader, FrameWriter) {
    let (r, w) = tokio::io::split(stream);
    (
        FramedRead::new(r, codec(max_frame)),
        FramedWrite::new(w, codec(max_frame)),
    )
}

/// Whether a read failed because the peer announced a frame above the
/// limit (a length prefix, or a WebSocket message): something that is not
/// a facsimile peer usually does (the first four bytes of `HTTP/1.1`
/// announce a gigabyte).
#[cfg(feature = "tcp")]
pub(crate) fn is_too_large(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| {
        inner.is::<tokio_util::codec::LengthDelimitedCodecError>()
            || matches!(
                inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
                Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
            )
    })
}
