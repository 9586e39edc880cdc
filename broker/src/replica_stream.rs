//! The replica stream (`docs/replication.md`, "The replica stream"): replica fetches
//! over a plain TCP connection to a leader's peer listener, so the leader can send the
//! batches of its cached tail straight from the segment file (`sendfile`) instead of
//! copying them into a gRPC message. This module holds its frames and the follower's
//! end ([`StreamFetcher`]); the leader's end is `service::replica_leader`.
//!
//! The answers are `ReplicaFetch`'s, framed by hand: the follower opens with
//! [`STREAM_MAGIC`], the leader answers with it, then each request and each response
//! is a 4-byte big-endian length and a protobuf message, a response followed by its
//! batches. Followers use it only where the peer listener is plaintext (under mutual
//! TLS `sendfile` would need kernel TLS) and fall back to gRPC where a leader does not
//! answer the opening.

use std::io;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_proto::internal::v1 as pb;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The 8 bytes a replica stream opens with, and the leader's answer to them. The peer
/// listener tells streams from HTTP/2 by the first, which no HTTP/2 or TLS connection
/// starts with.
pub const STREAM_MAGIC: [u8; 8] = *b"\0FERRYR1";

/// The largest response frame a follower reads (the answer without its batches).
const MAX_RESPONSE_FRAME_BYTES: usize = 1 << 20;

/// How a follower's stream waits (`ReplicationConfig`'s `stream_*` settings).
#[derive(Debug, Clone, Copy)]
pub struct StreamTimeouts {
    /// For the TCP connection to the leader's peer listener.
    pub connect: Duration,
    /// For the leader's answer to the opening. Both ends are hosts that send at once;
    /// a leader that does not answer in time is taken not to serve the stream.
    pub opening: Duration,
    /// How long fetches go over gRPC after a leader did not answer the opening (an
    /// older host, or one that went away mid-opening): then the stream is tried again.
    pub retry: Duration,
}

/// Writes `message` as one frame.
pub(crate) async fn write_frame(stream: &mut TcpStream, message: &impl Message) -> io::Result<()> {
    let len = u32::try_from(message.encoded_len())
        .map_err(|_| invalid_data("a frame of more than 4 GiB"))?;
    let mut frame = Vec::with_capacity(4 + len as usize);
    frame.extend_from_slice(&len.to_be_bytes());
    message
        .encode(&mut frame)
        .map_err(|err| invalid_data(err.to_string()))?;
    stream.write_all(&frame).await
}

/// Reads one frame of at most `max_bytes`; `None` when the stream ends before it.
pub(crate) async fn read_frame<M: Message + Default>(
    stream: &mut TcpStream,
    max_bytes: usize,
) -> io::Result<Option<M>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max_bytes {
        return Err(invalid_data(format!(
            "a frame of {len} bytes, over the limit of {max_bytes}"
        )));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    M::decode(body.as_slice())
        .map(Some)
        .map_err(|err| invalid_data(err.to_string()))
}

/// An `InvalidData` error saying `reason`.
pub(crate) fn invalid_data(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// Why a fetch over the replica stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The leader refused the fetch, as `ReplicaFetch` would have.
    #[error("{0}")]
    Refused(tonic::Status),
    /// The leader did not answer the opening: it does not serve the stream.
    #[error("{0} does not serve the replica stream")]
    Unsupported(String),
    /// The connection failed.
    #[error("replica stream to {address}: {source}")]
    Io {
        /// The leader's peer address.
        address: String,
        /// What failed.
        source: io::Error,
    },
    /// No answer within the fetch's deadline.
    #[error("replica stream to {0}: no answer in time")]
    TimedOut(String),
}

/// A follower's replica stream to one leader: connected on first use, and again after a
/// failure.
#[derive(Debug)]
pub struct StreamFetcher {
    address: String,
    timeouts: StreamTimeouts,
    max_records_bytes: u64,
    connection: Option<TcpStream>,
    verify_next: bool,
    grpc_until: Option<Instant>,
}

impl StreamFetcher {
    /// A stream to the leader's peer listener at `address` (`host:port`), taking answers
    /// with at most `max_records_bytes` of batches.
    pub fn new(address: String, timeouts: StreamTimeouts, max_records_bytes: u64) -> Self {
        Self {
            address,
            timeouts,
            max_records_bytes,
            connection: None,
            verify_next: false,
            grpc_until: None,
        }
    }

    /// Whether the next fetch should go over the stream: not for a while after the
    /// leader did not answer its opening.
    pub fn usable(&self) -> bool {
        self.grpc_until.is_none_or(|until| Instant::now() >= until)
    }

    /// The next fetch asks the leader to read and check each batch: the follower could
    /// not append the last answer (a batch's CRC failed, say), and the leader's read
    /// confines damage to a lost range instead of sending it again.
    pub fn verify_next(&mut self) {
        self.verify_next = true;
    }

    /// `request` over the stream, answered within `deadline`.
    pub async fn fetch(
        &mut self,
        request: &pb::ReplicaFetchRequest,
        deadline: Duration,
    ) -> Result<pb::ReplicaFetchResponse, StreamError> {
        let result = match tokio::time::timeout(deadline, self.round(request)).await {
            Ok(result) => result,
            Err(_) => Err(StreamError::TimedOut(self.address.clone())),
        };
        match &result {
            Ok(_) => self.verify_next = false,
            // The connection is fine: the leader answered.
            Err(StreamError::Refused(_)) => {}
            Err(StreamError::Unsupported(_)) => {
                tracing::info!(
                    leader = %self.address,
                    "the leader does not serve the replica stream: fetching over gRPC"
                );
                self.connection = None;
                self.grpc_until = Some(Instant::now() + self.timeouts.retry);
            }
            Err(StreamError::Io { .. } | StreamError::TimedOut(_)) => self.connection = None,
        }
        result
    }

    async fn round(
        &mut self,
        request: &pb::ReplicaFetchRequest,
    ) -> Result<pb::ReplicaFetchResponse, StreamError> {
        let stream = match &mut self.connection {
            Some(stream) => stream,
            None => {
                let stream = self.connect().await?;
                self.connection.insert(stream)
            }
        };
        let address = &self.address;
        let failed = |source| StreamError::Io {
            address: address.clone(),
            source,
        };
        let request = pb::ReplicaStreamRequest {
            fetch: Some(request.clone()),
            verify: self.verify_next,
        };
        write_frame(stream, &request).await.map_err(failed)?;
        let response = read_frame::<pb::ReplicaStreamResponse>(stream, MAX_RESPONSE_FRAME_BYTES)
            .await
            .map_err(failed)?
            .ok_or_else(|| failed(io::ErrorKind::UnexpectedEof.into()))?;
        if let Some(error) = response.error {
            let code = tonic::Code::from(error.code);
            return Err(StreamError::Refused(tonic::Status::with_details(
                code,
                error.message,
                error.details,
            )));
        }
        let Some(mut answer) = response.fetch else {
            return Err(failed(invalid_data("an answer without its fetch")));
        };
        if response.records_bytes > self.max_records_bytes {
            return Err(failed(invalid_data(format!(
                "an answer of {} bytes of batches, over the limit of {}",
                response.records_bytes, self.max_records_bytes
            ))));
        }
        // Read into unzeroed capacity, exactly the promised bytes.
        let len = response.records_bytes as usize;
        let mut records = BytesMut::with_capacity(len);
        let mut rest = (&mut *stream).take(response.records_bytes);
        while records.len() < len {
            if rest.read_buf(&mut records).await.map_err(failed)? == 0 {
                return Err(failed(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        answer.records = records.freeze();
        Ok(answer)
    }

    /// Connects and exchanges the opening.
    async fn connect(&self) -> Result<TcpStream, StreamError> {
        let failed = |source| StreamError::Io {
            address: self.address.clone(),
            source,
        };
        let mut stream =
            tokio::time::timeout(self.timeouts.connect, TcpStream::connect(&self.address))
                .await
                .map_err(|_| StreamError::TimedOut(self.address.clone()))?
                .map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        stream.write_all(&STREAM_MAGIC).await.map_err(failed)?;
        let mut answer = [0u8; STREAM_MAGIC.len()];
        match tokio::time::timeout(self.timeouts.opening, stream.read_exact(&mut answer)).await {
            Ok(Ok(_)) if answer == STREAM_MAGIC => Ok(stream),
            // An HTTP/2-only listener answers with its settings, closes (a reset, with
            // the opening unread), or waits for the rest of a preface that never comes.
            Ok(Ok(_)) | Err(_) => Err(StreamError::Unsupported(self.address.clone())),
            Ok(Err(err))
                if matches!(
                    err.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                Err(StreamError::Unsupported(self.address.clone()))
            }
            Ok(Err(err)) => Err(failed(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::net::TcpListener;

    use super::*;

    const TIMEOUTS: StreamTimeouts = StreamTimeouts {
        connect: Duration::from_secs(1),
        opening: Duration::from_secs(1),
        retry: Duration::from_secs(60),
    };

    /// A listener that answers each connection as `answer` says.
    async fn listener(answer: fn(TcpStream) -> tokio::task::JoinHandle<()>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                answer(stream);
            }
        });
        address
    }

    fn request() -> pb::ReplicaFetchRequest {
        pb::ReplicaFetchRequest {
            topic: "t".into(),
            ..pb::ReplicaFetchRequest::default()
        }
    }

    async fn fetch_from(
        address: String,
    ) -> (StreamFetcher, Result<pb::ReplicaFetchResponse, StreamError>) {
        let mut fetcher = StreamFetcher::new(address, TIMEOUTS, 1 << 20);
        let answer = fetcher.fetch(&request(), Duration::from_secs(5)).await;
        (fetcher, answer)
    }

    #[tokio::test]
    async fn a_leader_that_does_not_answer_the_opening_sends_the_follower_to_grpc() {
        // An HTTP/2 server speaks first: its settings frame.
        let settings = listener(|mut stream| {
            tokio::spawn(async move {
                let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                let _ = stream.read(&mut [0u8; 64]).await;
            })
        })
        .await;
        // One that closes on bytes it does not understand, and one that waits for more.
        let closing = listener(|stream| tokio::spawn(async move { drop(stream) })).await;
        let silent = listener(|mut stream| {
            tokio::spawn(async move {
                let _ = stream.read(&mut [0u8; 64]).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            })
        })
        .await;
        for address in [settings, closing, silent] {
            let (fetcher, answer) = fetch_from(address.clone()).await;
            assert!(
                matches!(answer, Err(StreamError::Unsupported(_))),
                "{address}: {answer:?}"
            );
            assert!(!fetcher.usable(), "{address}: gRPC for a while");
        }
    }

    #[tokio::test]
    async fn the_stream_is_tried_again_once_the_retry_pause_is_over() {
        let closing = listener(|stream| tokio::spawn(async move { drop(stream) })).await;
        let timeouts = StreamTimeouts {
            retry: Duration::from_millis(50),
            ..TIMEOUTS
        };
        let mut fetcher = StreamFetcher::new(closing, timeouts, 1 << 20);
        let answer = fetcher.fetch(&request(), Duration::from_secs(5)).await;
        assert!(
            matches!(answer, Err(StreamError::Unsupported(_))),
            "{answer:?}"
        );
        assert!(!fetcher.usable());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            fetcher.usable(),
            "the stream again after --replica-stream-retry-ms"
        );
    }

    #[tokio::test]
    async fn a_refusal_keeps_the_connection_and_an_answer_brings_its_batches() {
        let address = listener(|mut stream| {
            tokio::spawn(async move {
                let mut opening = [0u8; STREAM_MAGIC.len()];
                stream.read_exact(&mut opening).await.expect("opening");
                assert_eq!(opening, STREAM_MAGIC);
                stream.write_all(&STREAM_MAGIC).await.expect("answer");
                // A refusal, then an answer with 5 bytes of "batches", on one connection.
                let first = read_frame::<pb::ReplicaStreamRequest>(&mut stream, 1 << 20)
                    .await
                    .expect("first request")
                    .expect("a frame");
                assert!(!first.verify);
                let refused = pb::ReplicaStreamResponse {
                    error: Some(pb::StreamStatus {
                        code: tonic::Code::Unavailable as i32,
                        message: "not the leader".into(),
                        details: Bytes::new(),
                    }),
                    ..pb::ReplicaStreamResponse::default()
                };
                write_frame(&mut stream, &refused).await.expect("refusal");
                let second = read_frame::<pb::ReplicaStreamRequest>(&mut stream, 1 << 20)
                    .await
                    .expect("second request")
                    .expect("a frame");
                assert!(second.verify, "asked to verify after a failed round");
                let answer = pb::ReplicaStreamResponse {
                    fetch: Some(pb::ReplicaFetchResponse {
                        high_watermark: 7,
                        ..pb::ReplicaFetchResponse::default()
                    }),
                    records_bytes: 5,
                    error: None,
                };
                write_frame(&mut stream, &answer).await.expect("answer");
                stream.write_all(b"abcde").await.expect("batches");
                let _ = stream.read(&mut [0u8; 8]).await;
            })
        })
        .await;
        let mut fetcher = StreamFetcher::new(address, TIMEOUTS, 1 << 20);
        match fetcher.fetch(&request(), Duration::from_secs(5)).await {
            Err(StreamError::Refused(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                assert_eq!(status.message(), "not the leader");
            }
            other => panic!("a refusal: {other:?}"),
        }
        fetcher.verify_next();
        let answer = fetcher
            .fetch(&request(), Duration::from_secs(5))
            .await
            .expect("an answer on the same connection");
        assert_eq!(answer.high_watermark, 7);
        assert_eq!(&answer.records[..], b"abcde");
        assert!(fetcher.usable());
    }

    #[tokio::test]
    async fn an_answer_over_the_size_limit_is_refused_before_it_is_read() {
        let address = listener(|mut stream| {
            tokio::spawn(async move {
                let mut opening = [0u8; STREAM_MAGIC.len()];
                let _ = stream.read_exact(&mut opening).await;
                let _ = stream.write_all(&STREAM_MAGIC).await;
                let _ = read_frame::<pb::ReplicaStreamRequest>(&mut stream, 1 << 20).await;
                let answer = pb::ReplicaStreamResponse {
                    fetch: Some(pb::ReplicaFetchResponse::default()),
                    records_bytes: u64::MAX,
                    error: None,
                };
                let _ = write_frame(&mut stream, &answer).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            })
        })
        .await;
        let (fetcher, answer) = fetch_from(address).await;
        match answer {
            Err(StreamError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::InvalidData, "{source}");
            }
            other => panic!("refused as too large: {other:?}"),
        }
        assert!(
            fetcher.usable(),
            "a new connection next time, still the stream"
        );
    }
}
