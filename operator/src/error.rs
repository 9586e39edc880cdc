//! The reconcilers' error type, with a short label per variant for the failure
//! metric.

use crate::metadata::MetaError;

/// Why a reconcile failed; the controller retries it after `--error-requeue-ms`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API server refused or failed a request.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The metadata store (etcd) failed a request.
    #[error(transparent)]
    Metadata(#[from] MetaError),
    /// A value could not be encoded or decoded as JSON.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
    /// The resource lacks something the API server always sets (a name, a namespace).
    #[error("the resource has no {0}")]
    MissingField(&'static str),
    /// Deletion waits: `DeleteIfEmpty` and the topic or queue still holds messages (or
    /// its emptiness is not known yet).
    #[error("deletion waits until {0} is empty")]
    NotEmpty(String),
    /// A finalizer step failed.
    #[error("finalizer failed: {0}")]
    Finalizer(String),
    /// A cluster certificate could not be issued, or a stored one is unusable.
    #[error("cluster certificates: {0}")]
    Certificates(String),
}

impl Error {
    /// A short, fixed label for the `reason` of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Metadata(_) => "metadata",
            Self::Json(_) => "json",
            Self::MissingField(_) => "missing_field",
            Self::NotEmpty(_) => "not_empty",
            Self::Finalizer(_) => "finalizer",
            Self::Certificates(_) => "certificates",
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(err: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match err {
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            F::AddFinalizer(inner) | F::RemoveFinalizer(inner) => Self::Kube(inner),
            other => Self::Finalizer(other.to_string()),
        }
    }
}
