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

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpIncoming};

/// What is buffered between two of h2's flushes before it is written
/// out early: h2's own write buffer starts at 16 KiB.
const BUFFER: usize = 16 * 1024;

/// A gRPC connection: a [`TcpStream`] (or another stream, in tests) whose
/// writes are buffered until flushed, and which tells h2 to copy small DATA
/// frames (see the module).
#[derive(Debug)]
pub struct ReplyStream<T = TcpStream>(BufWriter<T>);

impl<T: AsyncWrite> ReplyStream<T> {
    pub fn new(io: T) -> ReplyStream<T> {
        ReplyStream(BufWriter::with_capacity(BUFFER, io))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ReplyStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReplyStream<T> {
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

/// `listener`'s connections, with TCP_NODELAY, as [`ReplyStream`]s: what
/// tonic's `serve_with_incoming` takes.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<ReplyStream>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|conn| conn.map(ReplyStream::new))
}

impl<T: AsyncWrite + Connected> Connected for ReplyStream<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> T::ConnectInfo {
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

    /// A TCP stream that counts the writes made to it (vectored or not).
    struct Counting {
        io: TcpStream,
        writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Counting {
        fn count(&self) {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl AsyncRead for Counting {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let me = self.get_mut();
            let r = Pin::new(&mut me.io).poll_write(cx, buf);
            if r.is_ready() {
                me.count();
            }
            r
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let me = self.get_mut();
            let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
            if r.is_ready() {
                me.count();
            }
            r
        }

        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    impl Connected for Counting {
        type ConnectInfo = tonic::transport::server::TcpConnectInfo;

        fn connect_info(&self) -> Self::ConnectInfo {
            self.io.connect_info()
        }
    }

    /// Answers every GetProfile with one fixed reply of about 400 bytes.
    struct Fixed;

    #[tonic::async_trait]
    impl weft_proto::v1::profile_service_server::ProfileService for Fixed {
        async fn get_profile(
            &self,
            _: tonic::Request<weft_proto::v1::GetProfileRequest>,
        ) -> Result<tonic::Response<weft_proto::v1::GetProfileResponse>, tonic::Status> {
            Ok(tonic::Response::new(weft_proto::v1::GetProfileResponse {
                profile: Some(weft_proto::v1::Profile {
                    user_id: "u".repeat(400),
                    found: true,
                    ..Default::default()
                }),
                freshness: None,
            }))
        }

        async fn batch_get_profiles(
            &self,
            _: tonic::Request<weft_proto::v1::BatchGetProfilesRequest>,
        ) -> Result<tonic::Response<weft_proto::v1::BatchGetProfilesResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn get_recommendations(
            &self,
            _: tonic::Request<weft_proto::v1::GetRecommendationsRequest>,
        ) -> Result<tonic::Response<weft_proto::v1::GetRecommendationsResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    /// Serves [`Fixed`] through tonic on one connection, wrapped by `wrap`,
    /// and returns how many writes the server made for one GetProfile call
    /// once the connection is warm.
    async fn writes_for_one_reply<IO>(wrap: fn(Counting) -> IO) -> usize
    where
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use weft_proto::v1::profile_service_client::ProfileServiceClient;
        use weft_proto::v1::profile_service_server::ProfileServiceServer;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = writes.clone();
        let incoming = futures::stream::once(async move {
            let (io, _) = listener.accept().await?;
            io.set_nodelay(true)?;
            Ok::<_, io::Error>(wrap(Counting {
                io,
                writes: counted,
            }))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ProfileServiceServer::new(Fixed))
                .serve_with_incoming(incoming),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ProfileServiceClient::new(channel);
        let call = || weft_proto::v1::GetProfileRequest {
            user_id: "u1".into(),
            ..Default::default()
        };
        // The first call also settles the handshake (SETTINGS and acks).
        client.get_profile(call()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = writes.load(Ordering::SeqCst);
        let reply = client.get_profile(call()).await.unwrap().into_inner();
        assert_eq!(reply.profile.unwrap().user_id.len(), 400);
        tokio::time::sleep(Duration::from_millis(50)).await;
        writes.load(Ordering::SeqCst) - before
    }

    #[tokio::test]
    async fn a_grpc_reply_under_a_kib_leaves_in_one_write() {
        // Plain TCP: h2 chains the 400-byte payload, and the trailers
        // follow in a second write (what `ReplyStream` is for).
        assert_eq!(writes_for_one_reply(|c| c).await, 2);
        assert_eq!(writes_for_one_reply(ReplyStream::new).await, 1);
    }
}
