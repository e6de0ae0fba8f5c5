//! [`GatheredWrites`]: a client connection whose first write of a burst waits one turn of the
//! scheduler, so the responses finished meanwhile leave in the same system call.
//!
//! The HTTP/2 server answers each request on a task of its own, which hands its response to
//! the connection's task and wakes it. tokio runs a task woken by another one next (its LIFO
//! slot), so the connection's task ran after every response task and wrote each response
//! alone: about one `writev` per request at 64 clients, a tenth of the servers' CPU. Returning
//! `Pending` once, with the task woken again, puts the connection's task at the back of the
//! run queue: the response tasks already waiting queue their frames first, and h2 writes them
//! all at its next poll. The host's node task waits one turn before a due tick for the same
//! reason (`docs/architecture.md`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose writes after a flush wait one turn of the scheduler first.
pub(crate) struct GatheredWrites<S> {
    inner: S,
    /// This burst's first write has waited its turn: writes pass until the next flush.
    waited: bool,
}

impl<S> GatheredWrites<S> {
    pub(crate) fn new(inner: S) -> Self {
        GatheredWrites {
            inner,
            waited: false,
        }
    }

    #[cfg(test)]
    fn get_ref(&self) -> &S {
        &self.inner
    }

    /// `Ready` once this burst has waited its turn; the first call wakes the task and is
    /// `Pending`.
    fn wait_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.waited {
            return Poll::Ready(());
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GatheredWrites<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GatheredWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.wait_turn(cx));
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.wait_turn(cx));
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        if flushed.is_ready() {
            this.waited = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for GatheredWrites<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A sink that counts its write calls.
    struct Counting {
        bytes: Vec<u8>,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes.fetch_add(1, Ordering::SeqCst);
            this.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The first write after a flush is `Pending` once, with the task woken; the writes after
    /// it in the same burst pass at once; a flush starts the next burst.
    #[test]
    fn the_first_write_of_each_burst_waits_one_turn() {
        let writes = Arc::new(AtomicUsize::new(0));
        let mut io = GatheredWrites::new(Counting {
            bytes: Vec::new(),
            writes: Arc::clone(&writes),
        });
        let woken = Arc::new(WakeCount(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);

        for burst in 1..=2 {
            assert!(Pin::new(&mut io).poll_write(&mut cx, b"ab").is_pending());
            assert_eq!(woken.0.load(Ordering::SeqCst), burst);
            assert_eq!(writes.load(Ordering::SeqCst), 2 * (burst - 1));
            assert!(matches!(
                Pin::new(&mut io).poll_write(&mut cx, b"ab"),
                Poll::Ready(Ok(2))
            ));
            assert!(matches!(
                Pin::new(&mut io).poll_write(&mut cx, b"cd"),
                Poll::Ready(Ok(2))
            ));
            assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        }
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        assert_eq!(io.get_ref().bytes, b"abcdabcd");
    }

    struct WakeCount(AtomicUsize);

    impl std::task::Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Through a real connection, every byte arrives in order.
    #[tokio::test]
    async fn passes_every_byte() {
        let (client, server) = tokio::io::duplex(64);
        let mut gathered = GatheredWrites::new(server);
        let writer = tokio::spawn(async move {
            for chunk in 0..100u8 {
                gathered.write_all(&[chunk; 10]).await.unwrap();
                if chunk % 7 == 0 {
                    gathered.flush().await.unwrap();
                }
            }
            gathered.shutdown().await.unwrap();
        });
        let mut client = client;
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        writer.await.unwrap();
        let expected: Vec<u8> = (0..100u8).flat_map(|chunk| [chunk; 10]).collect();
        assert_eq!(received, expected);
    }
}
