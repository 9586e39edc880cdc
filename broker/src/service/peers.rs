//! Channels to other hosts, one per address, connected on first use and kept: for
//! requests a host or gateway passes on to the host that serves them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ferry_telemetry::rpc::{RpcTraceLayer, RpcTraced};
use tonic::Status;
use tonic::transport::Channel;
use tower::Layer;

use crate::config::Http2Settings;
use crate::http2;
use crate::tls::HostDialing;

/// Metadata key marking a request one host passed to another: the receiver serves
/// it itself rather than pass it on again (two hosts whose views differ for a
/// moment must not bounce a request between them).
pub const FORWARDED: &str = "ferry-forwarded";

/// A channel to another host; its calls are spans of the trace they are part of.
pub type PeerChannel = RpcTraced<Channel>;

/// A cache of channels by host address, each with the dialing generation it was
/// made under (a channel of an older one is made again: renewed certificates).
#[derive(Debug)]
pub struct PeerChannels {
    channels: Mutex<HashMap<String, (u64, Channel)>>,
    connect_timeout: Duration,
    dialing: HostDialing,
    http2: Http2Settings,
}

impl PeerChannels {
    /// Channels, dialled as `dialing` says, that give up connecting after
    /// `connect_timeout` and receive with the windows and frames of `http2`.
    pub fn new(connect_timeout: Duration, dialing: HostDialing, http2: Http2Settings) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            connect_timeout,
            dialing,
            http2,
        }
    }

    /// A channel to `address` (`host:port`).
    pub fn channel(&self, address: &str) -> Result<PeerChannel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.dialing.generation();
        if let Some((made_under, channel)) = channels.get(address)
            && *made_under == generation
        {
            return Ok(traced(channel.clone()));
        }
        let endpoint = self.dialing.endpoint(address).map_err(Status::internal)?;
        let channel = http2::dial(endpoint, &self.http2)
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        // The endpoint may have just reloaded the files: file it under the latest.
        channels.insert(
            address.to_owned(),
            (self.dialing.generation(), channel.clone()),
        );
        Ok(traced(channel))
    }
}

/// `channel` with client spans for calls made inside a trace (none are started).
fn traced(channel: Channel) -> PeerChannel {
    RpcTraceLayer::client().inside_traces_only().layer(channel)
}
