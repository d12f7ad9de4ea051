//! Where sockets come from: the real network (tokio) or, with the `simulation` feature,
//! turmoil's simulated one. Everything that opens a socket goes through here.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// HTTP/2 tuning shared by server and channel: windows large enough that flow control never
/// stalls a call on loopback or a LAN, and frames large enough for bulk bodies.
pub(crate) const STREAM_WINDOW: u32 = 4 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 32 << 20;
pub(crate) const MAX_FRAME_SIZE: u32 = 1 << 20;

/// Which network a server or channel uses; chosen at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Real TCP sockets.
    Tcp,
    /// turmoil's simulated network.
    #[cfg(feature = "simulation")]
    Simulated,
}

/// A stream socket an HTTP/2 connection runs on.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A bound listening socket.
pub(crate) trait Listener: Send + 'static {
    type Stream: Io;

    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, addr) = tokio::net::TcpListener::accept(self).await?;
        // Without this, small replies wait for Nagle + delayed ACK (~40 ms stalls).
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    }
}

#[cfg(feature = "simulation")]
impl Listener for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        turmoil::net::TcpListener::accept(self).await
    }
}

/// Opens a real TCP connection with TCP_NODELAY set.
pub(crate) async fn connect_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a simulated TCP connection (inside a turmoil simulation).
#[cfg(feature = "simulation")]
pub(crate) async fn connect_simulated(addr: SocketAddr) -> io::Result<turmoil::net::TcpStream> {
    turmoil::net::TcpStream::connect(addr).await
}
