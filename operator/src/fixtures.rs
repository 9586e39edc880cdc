//! Test-only: a scripted Kubernetes API server (tower-test) in the style of
//! kube-rs/controller-rs. Each scenario lists the exact calls a reconcile must make —
//! method, path, a check of the body — and the responses to give. A call out of
//! order, an unexpected call or a missing one fails the test.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::context::{Context, Settings};
use crate::metadata::MemoryMetadata;
use crate::metrics::Metrics;

type BodyCheck = Box<dyn Fn(&Value) + Send>;
type Responder = Box<dyn Fn(&Value) -> (StatusCode, Value) + Send>;

/// One expected API call and its answer.
pub struct Call {
    method: Method,
    path: String,
    check: BodyCheck,
    respond: Responder,
    stall: bool,
}

impl Call {
    /// Expects `method` on `path` (without the query).
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            check: Box::new(|_| {}),
            respond: Box::new(|body| (StatusCode::OK, as_stored(body))),
            stall: false,
        }
    }

    /// Never answers, as an API server that stopped responding; the script ends
    /// here (later calls never come), so a test with one does not `verify`.
    pub fn stall(mut self) -> Self {
        self.stall = true;
        self
    }

    /// Checks the request body (JSON; `null` when empty).
    pub fn check(mut self, check: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Box::new(check);
        self
    }

    /// Answers with `status` and `body`.
    pub fn reply(mut self, status: StatusCode, body: Value) -> Self {
        self.respond = Box::new(move |_| (status, body.clone()));
        self
    }

    /// Answers 200 with the request body changed by `edit` (an echo by default).
    pub fn echo_with(mut self, edit: impl Fn(&mut Value) + Send + 'static) -> Self {
        self.respond = Box::new(move |body| {
            let mut body = as_stored(body);
            edit(&mut body);
            (StatusCode::OK, body)
        });
        self
    }

    /// Answers 404 Not Found.
    pub fn not_found(self) -> Self {
        self.reply(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }
}

/// The object a server would answer a write with, approximated by the request body
/// with `metadata` and `spec` present (a status patch carries neither).
fn as_stored(body: &Value) -> Value {
    let mut stored = body.clone();
    if let Some(object) = stored.as_object_mut() {
        object.entry("metadata").or_insert_with(|| json!({}));
        if object.contains_key("status") {
            object.entry("spec").or_insert_with(|| json!({}));
        }
    }
    stored
}

/// Expects an event with `reason` published in `namespace`.
pub fn event(namespace: &str, reason: &'static str) -> Call {
    Call::new(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
    )
    .check(move |body| assert_eq!(body["reason"], reason, "event reason"))
}

/// A context over a scripted API server and an in-memory metadata store.
pub fn context(metadata: MemoryMetadata) -> (Arc<Context<MemoryMetadata>>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let settings = Settings {
        resync_interval: Duration::from_secs(30),
        ..Settings::default()
    };
    let ctx = Context::new(
        client,
        metadata,
        settings,
        Arc::new(Metrics::default()),
        Some("test".to_owned()),
    );
    (Arc::new(ctx), ApiServer { handle })
}

/// The scripted API server.
pub struct ApiServer {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
}

impl ApiServer {
    /// Serves `calls` in order, checking each request.
    pub fn run(mut self, calls: Vec<Call>) -> JoinHandle<()> {
        tokio::spawn(async move {
            for (index, call) in calls.into_iter().enumerate() {
                let (request, send) = self.handle.next_request().await.unwrap_or_else(|| {
                    panic!("call {index} ({} {}) never came", call.method, call.path)
                });
                assert_eq!(
                    (request.method(), request.uri().path()),
                    (&call.method, call.path.as_str()),
                    "call {index}"
                );
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .expect("request body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("JSON request body")
                };
                (call.check)(&body);
                if call.stall {
                    // Holding the responder (and the handle, in this task) keeps the
                    // request open for as long as the test runs.
                    let _open = send;
                    match std::future::pending::<std::convert::Infallible>().await {}
                }
                let (status, reply) = (call.respond)(&body);
                let response = Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).expect("JSON reply")))
                    .expect("response");
                send.send_response(response);
            }
        })
    }
}

/// Waits for the server to have served every call.
pub async fn verify(server: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the scripted calls finished in time")
        .expect("every scripted call matched");
}
