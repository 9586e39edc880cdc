//! Sending a request on to the host that serves it: one lazily connected channel per
//! host address, and a retry loop that waits for the directory to catch up when a
//! host answers that it does not lead (nothing was done, so sending again is safe).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::{ErrorCode, ErrorDetail};
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use super::directory::{Directory, Target};
use crate::error::BrokerResult;
use crate::service::peers::PeerChannels;
use crate::service::status::to_status;
use crate::tls::HostDialing;

/// How long a retry waits for the directory to change before trying again anyway.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Channels to hosts and the directory that says which host serves what.
#[derive(Clone)]
pub struct Forwarder {
    directory: watch::Receiver<Arc<Directory>>,
    channels: Arc<PeerChannels>,
    retry_deadline: Duration,
}

impl Forwarder {
    /// Forwards by `directory`, dialling hosts as `dialing` says; gives up retrying a
    /// moved leader after `retry_deadline`.
    pub fn new(
        directory: watch::Receiver<Arc<Directory>>,
        connect_timeout: Duration,
        retry_deadline: Duration,
        dialing: HostDialing,
    ) -> Self {
        Self {
            directory,
            channels: Arc::new(PeerChannels::new(connect_timeout, dialing)),
            retry_deadline,
        }
    }

    /// The directory now.
    pub fn directory(&self) -> Arc<Directory> {
        Arc::clone(&self.directory.borrow())
    }

    /// A channel to `address`, connected on first use and kept.
    pub fn channel(&self, address: &str) -> Result<Channel, Status> {
        self.channels.channel(address)
    }

    /// Sends `call` to the host `resolve` picks from the directory; while the answer
    /// is "not the leader", or the host does not know yet what the directory holds
    /// (nothing was done either way), and the retry deadline has not passed, waits
    /// for the directory to change and tries again.
    pub async fn routed<T, Fut>(
        &self,
        resolve: impl Fn(&Directory) -> BrokerResult<Target>,
        call: impl Fn(Channel) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.retry_deadline;
        let mut directory = self.directory.clone();
        loop {
            let target = {
                let current = directory.borrow_and_update();
                resolve(&current)
            };
            let (outcome, from_host) = match target {
                Ok(target) => match self.channel(&target.address) {
                    Ok(channel) => (call(channel).await, true),
                    Err(status) => (Err(status), false),
                },
                Err(err) => (Err(to_status(&err)), false),
            };
            match outcome {
                Err(status)
                    if (is_moved(&status) || (from_host && not_done_by_the_host(&status)))
                        && Instant::now() < deadline =>
                {
                    self.wait_for_change(&mut directory).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until the directory changes, at most [`RETRY_PAUSE`].
    pub async fn wait_for_change(&self, directory: &mut watch::Receiver<Arc<Directory>>) {
        let _ = tokio::time::timeout(RETRY_PAUSE, directory.changed()).await;
    }

    /// Waits until the directory satisfies `known`, or the retry deadline passes: after
    /// a create this gateway forwarded, so that its next request finds what it made.
    pub async fn wait_until(&self, known: impl Fn(&Directory) -> bool) {
        let deadline = self.deadline();
        let mut directory = self.subscribe();
        while !known(&self.directory()) && Instant::now() < deadline {
            self.wait_for_change(&mut directory).await;
        }
    }

    /// A receiver of directory changes for a caller's own retry loop.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Directory>> {
        self.directory.clone()
    }

    /// When a caller's own retry loop must stop.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.retry_deadline
    }
}

/// The broker's error detail in a status, or one made from the status itself.
pub fn detail_of(status: &Status) -> ErrorDetail {
    ErrorDetail::decode(status.details())
        .ok()
        .filter(|detail| detail.code != ErrorCode::Unspecified as i32)
        .unwrap_or_else(|| ErrorDetail {
            code: ErrorCode::Internal as i32,
            message: status.message().to_owned(),
            leader_hint: None,
            retry_after_ms: 0,
        })
}

/// Whether a host refused because it does not lead (or no leader is known): the
/// request did nothing and can go to the leader once the directory knows it.
pub fn is_moved(status: &Status) -> bool {
    ErrorDetail::decode(status.details())
        .is_ok_and(|detail| detail.code == ErrorCode::NotLeader as i32)
}

/// Whether the gateway could not reach the host at all (no connection, no name):
/// the request never left, so it can go again. tonic answers a failed connect with
/// `UNAVAILABLE` and the connector's message, and no Ferry error detail; a
/// connection lost after the request was sent is told apart by its message.
pub fn is_not_delivered(status: &Status) -> bool {
    const CONNECT_FAILURES: [&str; 3] = ["tcp connect error", "dns error", "tcp open error"];
    status.code() == tonic::Code::Unavailable
        && status.details().is_empty()
        && CONNECT_FAILURES
            .iter()
            .any(|failure| status.message().starts_with(failure))
}

/// Whether a host's answer says it did nothing with the request, so it may go
/// again once the directory has caught up: not the leader, the topic or queue not
/// opened yet, or the host not reached.
pub fn not_done_by_the_host(status: &Status) -> bool {
    is_moved(status) || is_not_yet_known(status) || is_not_delivered(status)
}

/// Whether a host did not know a topic or queue the gateway's directory holds: it
/// has not opened it yet (it follows etcd a moment behind), and refused before
/// writing anything.
pub fn is_not_yet_known(status: &Status) -> bool {
    ErrorDetail::decode(status.details()).is_ok_and(|detail| {
        detail.code == ErrorCode::TopicNotFound as i32
            || detail.code == ErrorCode::QueueNotFound as i32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::v1 as pb;
    use ferry_proto::v1::metadata_service_client::MetadataServiceClient;

    #[tokio::test]
    async fn a_refused_connection_is_a_request_never_delivered() {
        // Bound and dropped: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("a valid URL")
            .connect_lazy();
        let status = MetadataServiceClient::new(channel)
            .get_metadata(pb::GetMetadataRequest::default())
            .await
            .expect_err("nothing listens");
        assert!(is_not_delivered(&status), "{status:?}");
        assert!(not_done_by_the_host(&status));
        // The broker's own UNAVAILABLE carries its error detail: not this.
        let answered = Status::with_details(
            tonic::Code::Unavailable,
            "tcp connect error",
            vec![1].into(),
        );
        assert!(!is_not_delivered(&answered));
        assert!(!is_not_delivered(&Status::unavailable("connection reset")));
    }
}
