//! The conditions the Ferry resources report in `status.conditions`, and helpers that
//! keep them the way Kubernetes expects: one entry per type, `lastTransitionTime`
//! moved only when the status changes, `observedGeneration` on every entry.
//!
//! Every kind reports `Ready` and `Synced`; both start `Unknown` (reason `Pending`)
//! as soon as the operator first sees a resource, so `kubectl get` shows that it was
//! noticed before any work is done.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The resource does its job: a topic or queue has live leaders, a cluster's hosts
/// are ready.
pub const READY: &str = "Ready";
/// What the resource asks for was applied: objects or etcd records match the spec.
pub const SYNCED: &str = "Synced";
/// The condition types every Ferry resource reports.
pub const TYPES: [&str; 2] = [READY, SYNCED];
/// The reason of a condition the operator has not evaluated yet.
pub const PENDING: &str = "Pending";
/// The reason `Synced` is `False` while the resource carries [`PAUSED_ANNOTATION`]
/// `"true"`.
pub const PAUSED: &str = "Paused";
/// An annotation that stops the operator from changing anything for a resource
/// (deletion still proceeds) until it is removed or set to anything but `"true"`.
pub const PAUSED_ANNOTATION: &str = "ferry.dev/paused";

/// Whether a resource's metadata asks the operator to leave it alone.
pub fn is_paused(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|annotations| annotations.get(PAUSED_ANNOTATION))
        .is_some_and(|value| value == "true")
}

/// The `Synced` observation of a paused resource.
pub fn paused(observed_generation: Option<i64>) -> Observation<'static> {
    Observation {
        type_: SYNCED,
        status: Status::False,
        reason: PAUSED,
        message: format!(
            "reconciling is paused by the {PAUSED_ANNOTATION} annotation; nothing is \
             changed until it is removed"
        ),
        observed_generation,
    }
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl Status {
    /// The wire form: `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// A new observation of one condition type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation<'a> {
    /// The condition type, e.g. [`READY`].
    pub type_: &'a str,
    /// Whether it holds.
    pub status: Status,
    /// One CamelCase word saying why, e.g. `LeadersElected`.
    pub reason: &'a str,
    /// A sentence for `kubectl describe`.
    pub message: String,
    /// The `metadata.generation` that was observed.
    pub observed_generation: Option<i64>,
}

/// The conditions of a resource the operator has just noticed: every type in
/// [`TYPES`], `Unknown`, reason [`PENDING`].
pub fn initial(observed_generation: Option<i64>, now: &Time) -> Vec<Condition> {
    TYPES
        .iter()
        .map(|type_| Condition {
            type_: (*type_).to_owned(),
            status: Status::Unknown.as_str().to_owned(),
            reason: PENDING.to_owned(),
            message: "The operator has not reconciled this resource yet.".to_owned(),
            observed_generation,
            last_transition_time: now.clone(),
        })
        .collect()
}

/// Records `observation` in `conditions`, replacing the entry of the same type or
/// appending one. `lastTransitionTime` becomes `now` only when the status changes (or
/// the type is new). Returns whether anything changed, so callers can skip a status
/// write that would change nothing.
pub fn set(conditions: &mut Vec<Condition>, observation: Observation<'_>, now: &Time) -> bool {
    let status = observation.status.as_str();
    let Some(current) = conditions.iter_mut().find(|c| c.type_ == observation.type_) else {
        conditions.push(Condition {
            type_: observation.type_.to_owned(),
            status: status.to_owned(),
            reason: observation.reason.to_owned(),
            message: observation.message,
            observed_generation: observation.observed_generation,
            last_transition_time: now.clone(),
        });
        return true;
    };
    let unchanged = current.status == status
        && current.reason == observation.reason
        && current.message == observation.message
        && current.observed_generation == observation.observed_generation;
    if unchanged {
        return false;
    }
    if current.status != status {
        current.last_transition_time = now.clone();
        current.status = status.to_owned();
    }
    current.reason = observation.reason.to_owned();
    current.message = observation.message;
    current.observed_generation = observation.observed_generation;
    true
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == Status::True.as_str())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("valid timestamp"))
    }

    fn ready(status: Status, reason: &str, generation: i64) -> Observation<'_> {
        Observation {
            type_: READY,
            status,
            reason,
            message: format!("{reason} message"),
            observed_generation: Some(generation),
        }
    }

    #[test]
    fn initial_conditions_are_unknown_and_pending() {
        let conditions = initial(Some(1), &at(10));
        let types: Vec<_> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Synced"]);
        for condition in &conditions {
            assert_eq!(condition.status, "Unknown");
            assert_eq!(condition.reason, "Pending");
            assert_eq!(condition.observed_generation, Some(1));
            assert_eq!(condition.last_transition_time, at(10));
        }
        assert!(!is_true(&conditions, READY));
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = initial(Some(1), &at(10));
        assert!(set(
            &mut conditions,
            ready(Status::True, "LeadersElected", 1),
            &at(20)
        ));
        assert!(is_true(&conditions, READY));
        let after_first = find(&conditions, READY).map(|c| c.last_transition_time.clone());
        assert_eq!(after_first, Some(at(20)));

        // Same status, newer generation: recorded, but no transition.
        assert!(set(
            &mut conditions,
            ready(Status::True, "LeadersElected", 2),
            &at(30)
        ));
        let ready_now = find(&conditions, READY).expect("Ready present");
        assert_eq!(ready_now.last_transition_time, at(20));
        assert_eq!(ready_now.observed_generation, Some(2));

        // Nothing new: no change reported.
        assert!(!set(
            &mut conditions,
            ready(Status::True, "LeadersElected", 2),
            &at(40)
        ));

        assert!(set(
            &mut conditions,
            ready(Status::False, "NoLeader", 2),
            &at(50)
        ));
        let ready_now = find(&conditions, READY).expect("Ready present");
        assert_eq!(
            (
                ready_now.status.as_str(),
                ready_now.last_transition_time.clone()
            ),
            ("False", at(50))
        );
        assert_eq!(conditions.len(), 2, "one entry per type");
    }

    #[test]
    fn a_new_type_is_appended() {
        let mut conditions = Vec::new();
        assert!(set(
            &mut conditions,
            ready(Status::False, "NoCluster", 1),
            &at(5)
        ));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(5));
    }
}
