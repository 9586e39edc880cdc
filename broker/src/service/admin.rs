//! `AdminService`: create, delete, list and describe topics.

use std::sync::Arc;

use ferry_proto::v1 as pb;
use ferry_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::auth::{Guard, audit_admin, caller};
use super::status::Answer;
use crate::access::{Operation, Resource};
use crate::broker::Broker;
use crate::service::convert::{topic_info, topic_overrides};

/// The admin API over a broker.
pub struct AdminApi {
    broker: Arc<Broker>,
    guard: Guard,
}

impl AdminApi {
    /// Serves admin requests for `broker`, checking callers with `guard`.
    pub fn new(broker: Arc<Broker>, guard: Guard) -> Self {
        Self { broker, guard }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let caller = self.guard.check(
            "CreateTopic",
            &request,
            Operation::Admin,
            [Resource::Topic(&request.get_ref().name)],
        )?;
        let request = request.into_inner();
        let result = async {
            let overrides = topic_overrides(request.config)?;
            self.broker.create_topic(&request.name, &overrides).await
        }
        .await;
        let topic = self.broker.answer("CreateTopic", result)?;
        audit_admin(&caller, "create-topic", topic.name());
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(topic_info(&topic, &self.broker.config.host_id)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let caller = self.guard.check(
            "DeleteTopic",
            &request,
            Operation::Admin,
            [Resource::Topic(&request.get_ref().name)],
        )?;
        let name = request.into_inner().name;
        let result = self.broker.delete_topic(&name).await;
        self.broker.answer("DeleteTopic", result)?;
        audit_admin(&caller, "delete-topic", &name);
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let caller = caller(&request);
        let host = &self.broker.config.host_id;
        let topics = self
            .broker
            .topics
            .list()
            .iter()
            .filter(|t| self.guard.may_describe(&caller, Resource::Topic(t.name())))
            .map(|t| topic_info(t, host))
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.guard.check(
            "DescribeTopic",
            &request,
            Operation::Describe,
            [Resource::Topic(&request.get_ref().name)],
        )?;
        let name = request.into_inner().name;
        let result =
            crate::names::validate_topic_name(&name).and_then(|()| self.broker.topics.get(&name));
        let topic = self.broker.answer("DescribeTopic", result)?;
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(topic_info(&topic, &self.broker.config.host_id)),
        }))
    }
}
