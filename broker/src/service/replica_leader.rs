//! The leader's end of the replica stream (`crate::replica_stream`, `docs/replication.md`):
//! a plaintext peer listener tells stream connections from HTTP/2 by their first byte;
//! each stream's fetches are answered by the same `serve_fetch` as `ReplicaFetch`, its
//! located batches sent from the segment file with `sendfile`. Of the six copies a
//! follower's byte took over gRPC (the leader's read, its encoding, the socket both
//! ways, the follower's decoding, its write) two are left, the socket's receiving side
//! and the write.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::internal::v1 as pb;
use ferry_storage::BatchRange;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::replica::{fetch_from_wire, fetch_response};
use super::status::Answer;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::host::replication::{ReplicaData, ReplicaReading, ReplicaRecords, serve_fetch};
use crate::metrics::ReplicaSentLabels;
use crate::replica_stream::{STREAM_MAGIC, invalid_data, read_frame, write_frame};

/// Most bytes asked of one `sendfile` call; the loop goes on until the range is sent.
const SENDFILE_CHUNK_BYTES: usize = 4 << 20;

/// Accepts on the plaintext peer listener until `to_grpc`'s receiver is gone: replica
/// streams are served here; every other connection (HTTP/2) goes to the gRPC server.
/// Streams end when `stop` turns true, as the gRPC server does.
pub(crate) async fn sort_peer_connections(
    broker: Arc<Broker>,
    listener: TcpListener,
    to_grpc: mpsc::Sender<io::Result<TcpStream>>,
    stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            stream = crate::listener::accept(&listener) => stream,
            () = to_grpc.closed() => break,
        };
        let (broker, to_grpc, stop) = (Arc::clone(&broker), to_grpc.clone(), stop.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let opening =
                Duration::from_millis(broker.config.replication.stream_opening_timeout_ms);
            match tokio::time::timeout(opening, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == STREAM_MAGIC[0] => {
                    serve_stream(broker, stream, stop).await
                }
                // HTTP/2, or a connection that is slow to speak: the gRPC server's.
                _ => {
                    let _ = to_grpc.send(Ok(stream)).await;
                }
            }
        });
    }
}

/// Serves one follower's replica stream until it ends or fails, or `stop` turns true.
async fn serve_stream(broker: Arc<Broker>, mut stream: TcpStream, mut stop: watch::Receiver<bool>) {
    let peer = stream.peer_addr().ok();
    let served = tokio::select! {
        served = serve_fetches(&broker, &mut stream) => served,
        _ = stop.wait_for(|stop| *stop) => Ok(()),
    };
    if let Err(err) = served {
        tracing::debug!(?peer, %err, "replica stream ended");
    }
}

/// The opening, then request after request. A follower asks again at once after each
/// answer (or after a retry pause of seconds), so one silent for the idle timeout, or
/// that takes no answer for as long, is gone (its host cut off, say): its connection
/// is closed rather than left open until TCP gives up on it.
async fn serve_fetches(broker: &Broker, stream: &mut TcpStream) -> io::Result<()> {
    let replication = &broker.config.replication;
    let idle = Duration::from_millis(replication.stream_idle_timeout_ms);
    let mut opening = [0u8; STREAM_MAGIC.len()];
    within(
        Duration::from_millis(replication.stream_opening_timeout_ms),
        "the opening",
        stream.read_exact(&mut opening),
    )
    .await?;
    if opening != STREAM_MAGIC {
        return Err(invalid_data("not a replica stream's opening"));
    }
    stream.write_all(&STREAM_MAGIC).await?;
    let max_request_bytes = broker.config.limits.max_request_bytes as usize;
    loop {
        let request = read_frame::<pb::ReplicaStreamRequest>(stream, max_request_bytes);
        let Some(request) = within(idle, "the next request", request).await? else {
            return Ok(());
        };
        let reading = match request.verify {
            true => ReplicaReading::Read,
            false => ReplicaReading::Locate,
        };
        let fetch = request
            .fetch
            .ok_or_else(|| {
                BrokerError::InvalidArgument("a replica stream request without its fetch".into())
            })
            .and_then(|fetch| fetch_from_wire(fetch, &broker.config.replication));
        let answer = match fetch {
            Ok(fetch) => serve_fetch(broker, fetch, reading).await,
            Err(err) => Err(err),
        };
        let answer = broker.answer("ReplicaFetch", answer);
        within(
            idle,
            "sending an answer",
            send_answer(broker, stream, answer),
        )
        .await?;
    }
}

/// Sends a leader's answer, its batches after it, or its refusal.
async fn send_answer(
    broker: &Broker,
    stream: &mut TcpStream,
    answer: Result<ReplicaData, tonic::Status>,
) -> io::Result<()> {
    let mut answer = match answer {
        Ok(answer) => answer,
        Err(status) => {
            let error = pb::StreamStatus {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: Bytes::copy_from_slice(status.details()),
            };
            let refused = pb::ReplicaStreamResponse {
                error: Some(error),
                ..pb::ReplicaStreamResponse::default()
            };
            return write_frame(stream, &refused).await;
        }
    };
    let records = std::mem::take(&mut answer.records);
    let response = pb::ReplicaStreamResponse {
        fetch: Some(fetch_response(answer, Bytes::new())),
        records_bytes: records.len(),
        error: None,
    };
    write_frame(stream, &response).await?;
    let reading = match &records {
        ReplicaRecords::Read(bytes) => {
            stream.write_all(bytes).await?;
            "read"
        }
        ReplicaRecords::Located(range) => {
            send_range(stream, range).await?;
            "located"
        }
    };
    count_sent(broker, "stream", reading, records.len());
    Ok(())
}

/// `work`, unless it takes longer than `limit`: then a `TimedOut` error naming `what`.
async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, work).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} took longer than {limit:?}"),
        )
    })?
}

/// Counts `bytes` of batches sent to followers.
pub(crate) fn count_sent(
    broker: &Broker,
    transport: &'static str,
    reading: &'static str,
    bytes: u64,
) {
    if bytes > 0 {
        broker
            .metrics
            .replica_sent_bytes
            .get_or_create(&ReplicaSentLabels { transport, reading })
            .inc_by(bytes);
    }
}

/// Sends `range` of its segment file to `stream` with `sendfile`: the kernel passes the
/// cached pages to the socket without a copy through this process.
async fn send_range(stream: &TcpStream, range: &BatchRange) -> io::Result<()> {
    let mut position = range.position;
    let end = range.position + range.len;
    while position < end {
        stream.writable().await?;
        let count = usize::try_from(end - position)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK_BYTES);
        let sent = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, &*range.file, Some(&mut position), count)
                .map_err(io::Error::from)
        });
        match sent {
            // The response promised these bytes: only closing the connection can take
            // the promise back (the follower fetches again on a new one).
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the segment ended before the located batches (truncated meanwhile)",
                ));
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
