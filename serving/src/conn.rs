//! The gRPC listener's connections: one `write` a small reply.
//!
//! h2 copies a DATA frame's payload into its write buffer only below a
//! threshold, 256 bytes when the connection takes vectored writes and
//! 1 KiB when it does not; a bigger payload is chained to the buffer, and
//! nothing more is buffered until it has been written. A GetProfile reply
//! is a few hundred bytes, so on a plain [`TcpStream`] it leaves in two
//! writes: HEADERS and DATA in one `writev`, then the trailers in a
//! second. That is a second system call on the server, a second TCP
//! segment, and often a second wake-up of the client for each call.
//!
//! [`ReplyStream`] says it takes no vectored writes, so payloads under
//! 1 KiB are copied and the trailers follow them in the same buffer, and
//! it buffers what h2 writes until h2 flushes, so a bigger payload's frame
//! head and body still leave together. A reply whose message is under
//! 1 KiB costs one `write`; a bigger one two, as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What is buffered between two of h2's flushes before it is written
/// out early: h2's own write buffer starts at 16 KiB.
const BUFFER: usize = 16 * 1024;

/// A gRPC connection: a [`TcpStream`] whose writes are buffered until
/// flushed, and which tells h2 to copy small DATA frames (see the module).
#[derive(Debug)]
pub struct ReplyStream(BufWriter<TcpStream>);

impl ReplyStream {
    pub fn new(tcp: TcpStream) -> ReplyStream {
        ReplyStream(BufWriter::with_capacity(BUFFER, tcp))
    }
}

impl AsyncRead for ReplyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReplyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    /// The point of the type: h2 then copies DATA payloads under 1 KiB.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl Connected for ReplyStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn pair() -> (ReplyStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (ReplyStream::new(server), client)
    }

    /// Waits a little, then reads what has arrived without blocking.
    async fn arrived(peer: &mut TcpStream) -> Vec<u8> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut got = vec![0; 64 * 1024];
        match peer.try_read(&mut got) {
            Ok(n) => got.truncate(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => got.clear(),
            Err(e) => panic!("reading: {e}"),
        }
        got
    }

    #[tokio::test]
    async fn writes_leave_together_at_the_flush() {
        let (mut server, mut client) = pair().await;
        assert!(!server.is_write_vectored(), "h2 must copy small payloads");
        // A reply as h2 writes it: frame heads and payloads, then a flush.
        server.write_all(b"HEADERS+DATA head|").await.unwrap();
        server.write_all(&[7; 900]).await.unwrap();
        server.write_all(b"|trailers").await.unwrap();
        assert!(
            arrived(&mut client).await.is_empty(),
            "sent before the flush"
        );
        server.flush().await.unwrap();
        let got = arrived(&mut client).await;
        assert_eq!(got.len(), 18 + 900 + 9);
        assert!(got.starts_with(b"HEADERS+DATA head|") && got.ends_with(b"|trailers"));
    }

    #[tokio::test]
    async fn more_than_the_buffer_arrives_whole_and_reads_pass_through() {
        let (mut server, mut client) = pair().await;
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (sent, received) = tokio::join!(
            async {
                server.write_all(b"head").await.unwrap();
                server.write_all(&big).await.unwrap();
                server.flush().await.unwrap();
                server
            },
            async {
                let mut got = vec![0; 4 + big.len()];
                client.read_exact(&mut got).await.unwrap();
                got
            }
        );
        assert_eq!(&received[..4], b"head");
        assert!(received[4..] == big[..]);
        let mut server = sent;
        client.write_all(b"request").await.unwrap();
        let mut got = [0; 7];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"request");
        let info = server.connect_info();
        assert_eq!(info.remote_addr(), client.local_addr().ok());
    }
}
