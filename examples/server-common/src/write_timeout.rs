//! A bound on a stalled write: a connection whose peer stops reading does not hold the
//! server's write (and its connection slot) forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream whose write side (`poll_write`, `poll_write_vectored`, `poll_flush`,
/// `poll_shutdown`) fails with [`io::ErrorKind::TimedOut`] once it has been pending for
/// longer than `timeout` without completing: the clock starts when a write-side call returns
/// `Pending` and stops when one returns `Ready`. After the timeout, every write-side call that
/// would still wait fails at once. Reads pass through untouched (a read may rightly wait for
/// long, e.g. for the next request on a keep-alive connection).
#[derive(Debug)]
pub(crate) struct WriteTimeout<IO> {
    io: IO,
    timeout: Duration,
    /// The timer, kept to be reset by the next stall (allocated at the first).
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the write side is waiting now (and `sleep` runs).
    stalled: bool,
}

impl<IO> WriteTimeout<IO> {
    /// `io` with its writes bounded by `timeout`.
    pub(crate) fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            sleep: None,
            stalled: false,
        }
    }

    /// `poll` (a write-side call on `io`), failing once the write side has waited past the
    /// timeout.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        IO: Unpin,
    {
        match poll(Pin::new(&mut self.io), cx) {
            Poll::Ready(result) => {
                self.stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.stalled {
                    self.stalled = true;
                    let deadline = Instant::now() + self.timeout;
                    match &mut self.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                // Polled so that the timer wakes this task, whether or not `io` does.
                let sleep = self.sleep.as_mut().expect("set when stalled");
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the peer took no data for {:?}", self.timeout),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().bounded(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .bounded(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().bounded(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().bounded(cx, |io, cx| io.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(100);

    /// The result of `io`, which must come within twice the timeout (so that a broken bound
    /// fails the test instead of hanging it).
    async fn bounded<T>(io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        tokio::time::timeout(TIMEOUT * 2, io)
            .await
            .expect("the write waited past its timeout")
    }

    /// A stream that takes nothing: every write-side call waits forever.
    struct Stuck;

    impl AsyncRead for Stuck {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Stuck {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_after_the_timeout() {
        // The peer's buffer takes 64 bytes, then nobody reads.
        let (mut peer, server) = duplex(64);
        let mut server = WriteTimeout::new(server, TIMEOUT);
        let started = Instant::now();
        let error = bounded(server.write_all(&[7; 1024])).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= TIMEOUT, "{waited:?}");
        // Later writes fail at once; what did get through is intact.
        let error = bounded(server.write_all(&[7; 1024])).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), waited);
        let mut received = [0; 64];
        peer.read_exact(&mut received).await.unwrap();
        assert_eq!(received, [7; 64]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_gets_everything() {
        let (mut peer, server) = duplex(64);
        let mut server = WriteTimeout::new(server, TIMEOUT);
        // 64 bytes every 60 ms: 16 pauses, 960 ms in all, none as long as the timeout.
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            let mut buf = [0; 64];
            loop {
                tokio::time::sleep(Duration::from_millis(60)).await;
                match peer.read(&mut buf).await.unwrap() {
                    0 => return received,
                    n => received.extend_from_slice(&buf[..n]),
                }
            }
        });
        let sent: Vec<u8> = (0..1024).map(|i| i as u8).collect();
        server.write_all(&sent).await.unwrap();
        server.shutdown().await.unwrap();
        drop(server);
        assert_eq!(reader.await.unwrap(), sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_flush_or_shutdown_fails_after_the_timeout() {
        let mut stuck = WriteTimeout::new(Stuck, TIMEOUT);
        for result in [
            bounded(stuck.flush()).await,
            bounded(WriteTimeout::new(Stuck, TIMEOUT).shutdown()).await,
            bounded(WriteTimeout::new(Stuck, TIMEOUT).write_vectored(&[io::IoSlice::new(b"x")]))
                .await
                .map(drop),
        ] {
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_timeout_a_setting_can_give_is_just_long() {
        let (_peer, server) = duplex(64);
        let mut server = WriteTimeout::new(server, Duration::from_millis(u64::MAX));
        let write = tokio::time::timeout(Duration::from_secs(3600), server.write_all(&[7; 1024]));
        assert!(write.await.is_err(), "still waiting after an hour");
    }

    #[tokio::test(start_paused = true)]
    async fn reads_may_wait_longer_than_the_timeout() {
        let (mut peer, server) = duplex(64);
        let mut server = WriteTimeout::new(server, TIMEOUT);
        let writer = tokio::spawn(async move {
            tokio::time::sleep(TIMEOUT * 10).await;
            peer.write_all(b"late").await.unwrap();
            peer
        });
        let mut buf = [0; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"late");
        // The write side is unaffected by the long read.
        let mut peer = writer.await.unwrap();
        server.write_all(b"reply").await.unwrap();
        let mut reply = [0; 5];
        peer.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
    }
}
