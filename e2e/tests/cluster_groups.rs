//! Consumer groups across hosts: members of one group that talk to different hosts
//! meet at one coordinator (every host passes a group's requests on to the host its
//! name maps to), so they split the partitions between them instead of each getting
//! all of them from a coordinator of its own.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::rpc::{self, channels, show};
use common::{PartitionId, start_formed, wait_for_view};
use ferry_e2e::ClusterOptions;
use ferry_proto::v1 as pb;
use pb::group_service_client::GroupServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;

const TOPIC: &str = "shared";
const PARTITIONS: u32 = 6;
const GROUP: &str = "readers";
const DEADLINE: Duration = Duration::from_secs(30);

/// One member, talking to one host only.
struct Member {
    client: GroupServiceClient<Channel>,
    id: String,
    owned: Vec<pb::TopicPartition>,
}

impl Member {
    async fn join(channel: &Channel, name: &str) -> Self {
        let mut client = GroupServiceClient::new(channel.clone());
        let joined = client
            .join_group(pb::JoinGroupRequest {
                group: GROUP.to_owned(),
                topics: vec![TOPIC.to_owned()],
                session_timeout_ms: 30_000,
                client_id: name.to_owned(),
            })
            .await
            .unwrap_or_else(|s| panic!("{name} joins: {}", show(&s)))
            .into_inner();
        Self {
            client,
            id: joined.member_id,
            owned: joined.assigned,
        }
    }

    /// Heartbeats once, keeping exactly what the coordinator assigns.
    async fn beat(&mut self) {
        let answer = self
            .client
            .heartbeat(pb::HeartbeatRequest {
                group: GROUP.to_owned(),
                member_id: self.id.clone(),
                owned: self.owned.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("heartbeat of {}: {}", self.id, show(&s)))
            .into_inner();
        self.owned = answer.assigned;
    }

    fn partitions(&self) -> BTreeSet<u32> {
        self.owned.iter().map(|tp| tp.partition).collect()
    }
}

#[tokio::test]
async fn members_on_different_hosts_share_one_coordinator() {
    let (cluster, mut etcd) = start_formed(ClusterOptions {
        hosts: 3,
        ..ClusterOptions::default()
    })
    .await;
    let name = cluster.name().to_owned();
    let channels = channels(&cluster);
    rpc::create_topic(&channels["h0"], TOPIC, PARTITIONS).await;
    wait_for_view(&mut etcd, &name, DEADLINE, "every partition led", |v| {
        (0..PARTITIONS).all(|p| v.leader(&PartitionId::topic(TOPIC, p)).is_some())
    })
    .await;

    let mut members = vec![
        Member::join(&channels["h0"], "a").await,
        Member::join(&channels["h1"], "b").await,
        Member::join(&channels["h2"], "c").await,
    ];
    let until = Instant::now() + DEADLINE;
    loop {
        for member in &mut members {
            member.beat().await;
        }
        let sets: Vec<BTreeSet<u32>> = members.iter().map(Member::partitions).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<u32> = sets.iter().flatten().copied().collect();
        if total == PARTITIONS as usize && union.len() == PARTITIONS as usize {
            assert!(sets.iter().all(|s| s.len() == 2), "an even split: {sets:?}");
            break;
        }
        assert!(
            Instant::now() < until,
            "members on three hosts never split the {PARTITIONS} partitions: {sets:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Any host describes the group the same way: one generation, three members.
    let mut generations = BTreeSet::new();
    for host in ["h0", "h1", "h2"] {
        let described = GroupServiceClient::new(channels[host].clone())
            .describe_group(pb::DescribeGroupRequest {
                group: GROUP.to_owned(),
            })
            .await
            .unwrap_or_else(|s| panic!("describe via {host}: {}", show(&s)))
            .into_inner();
        assert_eq!(described.members.len(), 3, "via {host}: {described:?}");
        generations.insert(described.generation);
    }
    assert_eq!(generations.len(), 1, "one coordinator: {generations:?}");
}
