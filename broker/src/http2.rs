//! The broker's HTTP/2 windows and frame size ([`Http2Settings`]) applied to tonic's
//! servers and endpoints.

use tonic::transport::{Endpoint, Server};

use crate::config::Http2Settings;

/// A server builder that grants `http2`'s windows and frame size.
pub fn server(http2: &Http2Settings) -> Server {
    Server::builder()
        .initial_stream_window_size(Some(http2.stream_window_bytes))
        .initial_connection_window_size(Some(http2.connection_window_bytes))
        .max_frame_size(Some(http2.max_frame_bytes))
}

/// `endpoint` receiving with `http2`'s windows and frame size.
pub fn dial(endpoint: Endpoint, http2: &Http2Settings) -> Endpoint {
    endpoint
        .initial_stream_window_size(Some(http2.stream_window_bytes))
        .initial_connection_window_size(Some(http2.connection_window_bytes))
        .max_frame_size(Some(http2.max_frame_bytes))
}
