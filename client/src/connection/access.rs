//! Who the broker sees, and the access rules it enforces (`AccessService`).

use ferry_proto::v1 as pb;
use ferry_proto::v1::access_service_client::AccessServiceClient;

use super::{Client, Service};
use crate::error::ClientError;

/// The principal a broker sees for this client's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The principal's name; "anonymous" where the broker authenticates nobody.
    pub principal: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// How it was authenticated: "certificate", "static-token",
    /// "serviceaccount-token" or "none".
    pub method: String,
    /// Whether the broker enforces access rules.
    pub authorization_enforced: bool,
}

/// One access rule: a principal may do these operations on these resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// Its name (lower-case letters, digits, '-' and '.').
    pub name: String,
    /// A principal's name, `group:NAME`, or `*` for every authenticated caller.
    pub principal: String,
    /// "topic", "queue", "group" or "cluster".
    pub resource_kind: String,
    /// The resource's name or prefix; empty for the cluster.
    pub resource_name: String,
    /// Whether `resource_name` is a prefix.
    pub prefix: bool,
    /// The operations granted (produce, consume, describe, send, receive, ack, purge,
    /// redrive, join, commit, admin).
    pub operations: Vec<String>,
}

impl AccessRule {
    fn from_proto(rule: pb::AccessRule) -> Self {
        Self {
            name: rule.name,
            principal: rule.principal,
            resource_kind: rule.resource_kind,
            resource_name: rule.resource_name,
            prefix: rule.prefix,
            operations: rule.operations,
        }
    }

    fn to_proto(&self) -> pb::AccessRule {
        pb::AccessRule {
            name: self.name.clone(),
            principal: self.principal.clone(),
            resource_kind: self.resource_kind.clone(),
            resource_name: self.resource_name.clone(),
            prefix: self.prefix,
            operations: self.operations.clone(),
        }
    }
}

/// One principal's quotas, overall or on one topic or queue; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    /// A principal's name, or `*` for every principal without its own quota.
    pub principal: String,
    /// The topic the limits hold the principal to (on top of its overall quota).
    pub topic: Option<String>,
    /// The queue the limits hold the principal to (never with `topic`).
    pub queue: Option<String>,
    /// Bytes per second produced to topics and sent to queues.
    pub produce_bytes_per_second: Option<u64>,
    /// Bytes per second fetched from topics and received from queues.
    pub consume_bytes_per_second: Option<u64>,
    /// Requests per second.
    pub requests_per_second: Option<u64>,
}

impl Client {
    /// Every principal's quotas (needs the admin right on the cluster).
    pub async fn list_quotas(&self) -> Result<Vec<Quota>, ClientError> {
        let response = self
            .access_service()
            .list_quotas(pb::ListQuotasRequest {})
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(response
            .quotas
            .into_iter()
            .map(|q| Quota {
                principal: q.principal,
                topic: Some(q.topic).filter(|t| !t.is_empty()),
                queue: Some(q.queue).filter(|q| !q.is_empty()),
                produce_bytes_per_second: q.produce_bytes_per_second,
                consume_bytes_per_second: q.consume_bytes_per_second,
                requests_per_second: q.requests_per_second,
            })
            .collect())
    }

    /// Sets a principal's quotas (overall, or on its topic or queue), replacing its
    /// previous ones there.
    pub async fn put_quota(&self, quota: &Quota) -> Result<(), ClientError> {
        self.access_service()
            .put_quota(pb::PutQuotaRequest {
                quota: Some(pb::Quota {
                    principal: quota.principal.clone(),
                    topic: quota.topic.clone().unwrap_or_default(),
                    queue: quota.queue.clone().unwrap_or_default(),
                    produce_bytes_per_second: quota.produce_bytes_per_second,
                    consume_bytes_per_second: quota.consume_bytes_per_second,
                    requests_per_second: quota.requests_per_second,
                }),
            })
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// Removes a principal's quotas overall, or on `topic` or `queue`; whether it had
    /// any there.
    pub async fn delete_quota(
        &self,
        principal: &str,
        topic: Option<&str>,
        queue: Option<&str>,
    ) -> Result<bool, ClientError> {
        let response = self
            .access_service()
            .delete_quota(pb::DeleteQuotaRequest {
                principal: principal.to_owned(),
                topic: topic.unwrap_or_default().to_owned(),
                queue: queue.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(response.existed)
    }
}

impl Client {
    fn access_service(&self) -> AccessServiceClient<Service> {
        AccessServiceClient::new(self.service())
    }

    /// The principal the broker sees for this client.
    pub async fn who_am_i(&self) -> Result<CallerIdentity, ClientError> {
        let response = self
            .access_service()
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(CallerIdentity {
            principal: response.principal,
            groups: response.groups,
            method: response.method,
            authorization_enforced: response.authorization_enforced,
        })
    }

    /// Every access rule, ordered by name (needs the admin right on the cluster).
    pub async fn list_access_rules(&self) -> Result<Vec<AccessRule>, ClientError> {
        let response = self
            .access_service()
            .list_access_rules(pb::ListAccessRulesRequest {})
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(response
            .rules
            .into_iter()
            .map(AccessRule::from_proto)
            .collect())
    }

    /// Creates `rule`, or replaces the rule of the same name.
    pub async fn put_access_rule(&self, rule: &AccessRule) -> Result<(), ClientError> {
        self.access_service()
            .put_access_rule(pb::PutAccessRuleRequest {
                rule: Some(rule.to_proto()),
            })
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    /// Removes the rule `name`; whether it existed.
    pub async fn delete_access_rule(&self, name: &str) -> Result<bool, ClientError> {
        let response = self
            .access_service()
            .delete_access_rule(pb::DeleteAccessRuleRequest {
                name: name.to_owned(),
            })
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(response.existed)
    }
}
