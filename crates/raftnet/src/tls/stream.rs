//! A connection's byte stream: plain TCP, or TLS over it (either side of the handshake).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client, server};

/// One connection's stream; the framing code above it does not care which. TLS sessions are
/// boxed: one is several kilobytes, a plain stream a few words.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, this side dialed.
    Dialed(Box<client::TlsStream<TcpStream>>),
    /// TLS, this side accepted.
    Accepted(Box<server::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Dialed(s) => s.get_ref().0,
            Stream::Accepted(s) => s.get_ref().0,
        }
    }

    /// The certificate the other side presented (verified by the handshake), if any.
    pub fn peer_certificate(&self) -> Option<&rustls_pki_types::CertificateDer<'static>> {
        let chain = match self {
            Stream::Plain(_) => None,
            Stream::Dialed(s) => s.get_ref().1.peer_certificates(),
            Stream::Accepted(s) => s.get_ref().1.peer_certificates(),
        };
        chain.and_then(|chain| chain.first())
    }
}

macro_rules! delegate {
    ($self:ident, $inner:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($inner) => $call,
            Stream::Dialed($inner) => $call,
            Stream::Accepted($inner) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Dialed(s) => s.is_write_vectored(),
            Stream::Accepted(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
