//! Runs the four controllers (BrokerCluster, Topic, Queue, AccessPolicy) over the watched
//! namespaces until stopped.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, join_all};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::context::{Context, MANAGER};
use crate::crd::{AccessPolicy, BrokerCluster, Queue, Topic};
use crate::error::Error;
use crate::metadata::MetadataClient;
use crate::{cluster, mapping, policy};

/// Which namespaces the controllers watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace.
    All,
    /// Only these.
    Only(Vec<String>),
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Logs, counts and schedules a retry of a failed reconcile.
fn error_policy<M>(kind: &'static str, error: &Error, ctx: &Context<M>) -> Action {
    warn!(kind, %error, "reconcile failed");
    ctx.metrics.failure(kind, error);
    Action::requeue(ctx.settings.error_requeue)
}

/// Runs every controller until `stop` completes; in-flight reconciles are dropped
/// then (a lost leader lease must stop writes at once, not after they finish).
pub async fn run<M: MetadataClient>(
    ctx: Arc<Context<M>>,
    namespaces: &Namespaces,
    concurrency: u16,
    stop: impl Future<Output = ()> + Send,
) {
    let scopes: Vec<Option<String>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(list) => list.iter().cloned().map(Some).collect(),
    };
    let config = ControllerConfig::default().concurrency(concurrency);
    let client = ctx.client.clone();
    let owned_sets =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let mut controllers: Vec<BoxFuture<'static, ()>> = Vec::new();
    for scope in &scopes {
        let ns = scope.as_deref();
        controllers.push(
            Controller::new(
                api::<BrokerCluster>(&client, ns),
                watcher::Config::default(),
            )
            .owns(api::<StatefulSet>(&client, ns), owned_sets.clone())
            .with_config(config.clone())
            .run(
                cluster::reconcile::<M>,
                |_, error, ctx| error_policy(cluster::KIND, error, &ctx),
                Arc::clone(&ctx),
            )
            .for_each(log_result)
            .boxed(),
        );
        controllers.push(
            Controller::new(api::<Topic>(&client, ns), watcher::Config::default())
                .with_config(config.clone())
                .run(
                    mapping::reconcile::<Topic, M>,
                    |_, error, ctx| error_policy("Topic", error, &ctx),
                    Arc::clone(&ctx),
                )
                .for_each(log_result)
                .boxed(),
        );
        controllers.push(
            Controller::new(api::<Queue>(&client, ns), watcher::Config::default())
                .with_config(config.clone())
                .run(
                    mapping::reconcile::<Queue, M>,
                    |_, error, ctx| error_policy("Queue", error, &ctx),
                    Arc::clone(&ctx),
                )
                .for_each(log_result)
                .boxed(),
        );
        controllers.push(
            Controller::new(api::<AccessPolicy>(&client, ns), watcher::Config::default())
                .with_config(config.clone())
                .run(
                    policy::reconcile::<M>,
                    |_, error, ctx| error_policy(policy::KIND, error, &ctx),
                    Arc::clone(&ctx),
                )
                .for_each(log_result)
                .boxed(),
        );
    }
    futures::future::select(join_all(controllers), Box::pin(stop)).await;
}

async fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) {
    match result {
        Ok(done) => debug!(?done, "reconciled"),
        Err(error) => debug!(%error, "controller error"),
    }
}
