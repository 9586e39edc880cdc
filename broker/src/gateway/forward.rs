//! Sending a request on to the host that serves it: one lazily connected channel per
//! host address, and a retry loop that waits for the directory to catch up when a
//! host answers that it does not lead (nothing was done, so sending again is safe).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::{ErrorCode, ErrorDetail};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

use super::directory::{Directory, Target};
use crate::access::Caller;
use crate::config::Http2Settings;
use crate::error::BrokerResult;
use crate::service::auth::forward_caller;
use crate::service::peers::{PeerChannel, PeerChannels};
use crate::service::status::to_status;
use crate::tls::HostDialing;
use tracing::Instrument;

/// How long a retry waits for the directory to change before trying again anyway.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

tokio::task_local! {
    /// The caller of the request the gateway is serving, for the requests it forwards.
    static CALLER: Caller;
}

/// Runs `future` on behalf of `caller`, in the span of the request being served:
/// requests it forwards carry that identity and continue that trace. A forwarding
/// future spawned onto another task must be wrapped again.
pub fn on_behalf_of<F: Future>(
    caller: Option<Caller>,
    future: F,
) -> impl Future<Output = F::Output> {
    // Taken now, where the request is served: a spawned task runs in no span.
    let span = tracing::Span::current();
    async move {
        match caller {
            Some(caller) => CALLER.scope(caller, future).await,
            None => future.await,
        }
    }
    .instrument(span)
}

/// The caller of the request being served on this task, if any.
pub fn current_caller() -> Option<Caller> {
    CALLER.try_with(Clone::clone).ok()
}

/// Wraps a gateway service so each request's handler runs on behalf of the caller
/// the authenticating interceptor put in the request's extensions (anonymous when
/// there is none), which [`ForwardCaller`] then reads.
#[derive(Clone)]
pub struct OnBehalfOfCaller<S>(pub S);

impl<S, B> Service<http::Request<B>> for OnBehalfOfCaller<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous);
        Box::pin(CALLER.scope(caller, self.0.call(request)))
    }
}

impl<S: NamedService> NamedService for OnBehalfOfCaller<S> {
    const NAME: &'static str = S::NAME;
}

/// A channel to a host; requests on it carry the caller's identity when the gateway
/// forwards identities.
pub type HostChannel = InterceptedService<PeerChannel, ForwardCaller>;

/// Adds the serving task's caller to each forwarded request (see
/// `service::auth::forward_caller`); fails closed when the caller is unknown.
#[derive(Clone)]
pub struct ForwardCaller {
    /// This gateway's id, `None` when it forwards no identities.
    gateway_id: Option<MetadataValue<Ascii>>,
}

impl Interceptor for ForwardCaller {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(gateway_id) = &self.gateway_id else {
            return Ok(request);
        };
        let caller = current_caller()
            .ok_or_else(|| Status::internal("the gateway lost track of the request's caller"))?;
        forward_caller(request.metadata_mut(), gateway_id, &caller);
        Ok(request)
    }
}

/// Channels to hosts and the directory that says which host serves what.
#[derive(Clone)]
pub struct Forwarder {
    directory: watch::Receiver<Arc<Directory>>,
    channels: Arc<PeerChannels>,
    retry_deadline: Duration,
    forward_caller: ForwardCaller,
}

impl Forwarder {
    /// Forwards by `directory`, dialling hosts as `dialing` says; gives up retrying a
    /// moved leader after `retry_deadline`. With `identities` (this gateway's id) it
    /// sends requests to the hosts' peer listeners with each caller's identity;
    /// without, to their client ports as they came.
    pub fn new(
        directory: watch::Receiver<Arc<Directory>>,
        connect_timeout: Duration,
        retry_deadline: Duration,
        dialing: HostDialing,
        http2: Http2Settings,
        identities: Option<&str>,
    ) -> Result<Self, String> {
        let gateway_id = identities
            .map(|id| {
                MetadataValue::try_from(id)
                    .map_err(|_| format!("gateway id {id:?} is not printable ASCII"))
            })
            .transpose()?;
        Ok(Self {
            directory,
            channels: Arc::new(PeerChannels::new(connect_timeout, dialing, http2)),
            retry_deadline,
            forward_caller: ForwardCaller { gateway_id },
        })
    }

    /// The directory now.
    pub fn directory(&self) -> Arc<Directory> {
        Arc::clone(&self.directory.borrow())
    }

    /// A channel to the host `target`, connected on first use and kept: its peer
    /// listener when identities are forwarded, else its client port.
    pub fn channel(&self, target: &Target) -> Result<HostChannel, Status> {
        let address = match self.forward_caller.gateway_id {
            Some(_) => &target.peer_address,
            None => &target.address,
        };
        Ok(InterceptedService::new(
            self.channels.channel(address)?,
            self.forward_caller.clone(),
        ))
    }

    /// Sends `call` to the host `resolve` picks from the directory; while the answer
    /// is "not the leader", or the host does not know yet what the directory holds
    /// (nothing was done either way), and the retry deadline has not passed, waits
    /// for the directory to change and tries again.
    pub async fn routed<T, Fut>(
        &self,
        resolve: impl Fn(&Directory) -> BrokerResult<Target>,
        call: impl Fn(HostChannel) -> Fut,
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
                Ok(target) => match self.channel(&target) {
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
    ferry_proto::status::detail(status)
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
    ferry_proto::status::detail(status)
        .is_some_and(|detail| detail.code == ErrorCode::NotLeader as i32)
}

/// Whether one partition's error in a host's answer says the host did nothing with
/// it: not the leader, or the topic not opened there yet (see [`not_done_by_the_host`]).
pub fn partition_not_done_by_the_host(detail: &ErrorDetail) -> bool {
    detail.code == ErrorCode::NotLeader as i32 || is_not_yet_known_code(detail.code)
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
    ferry_proto::status::detail(status).is_some_and(|detail| is_not_yet_known_code(detail.code))
}

fn is_not_yet_known_code(code: i32) -> bool {
    code == ErrorCode::TopicNotFound as i32 || code == ErrorCode::QueueNotFound as i32
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
