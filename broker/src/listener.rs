//! Accepting connections on the broker's own accept loops (TLS listeners, the
//! plaintext peer listener).

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long an accept loop pauses after an accept failed.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The next connection on `listener`, with Nagle's algorithm off: small responses (a
/// long poll answering one record) must not wait for it and the peer's delayed ACK,
/// which alone costs 40 ms per response. A failed accept (out of file descriptors and
/// the like) is logged, and retried after a pause: the next may succeed.
pub async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(err) => {
                tracing::warn!(%err, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
}
