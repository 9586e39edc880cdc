//! What each CRD's schema and metadata promise: names, subresources, printer
//! columns, OpenAPI limits and where each CEL rule sits.

use serde_json::{Value, json};

use super::{crd, node, rules, schema};

fn columns(plural: &str) -> Vec<(String, String)> {
    crd(plural)["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            let path = c["jsonPath"].as_str().unwrap_or_default().to_owned();
            (name, path)
        })
        .collect()
}

fn column_names(plural: &str) -> Vec<String> {
    columns(plural).into_iter().map(|(name, _)| name).collect()
}

const READY_STATUS: &str = ".status.conditions[?(@.type==\"Ready\")].status";
const READY_REASON: &str = ".status.conditions[?(@.type==\"Ready\")].reason";

#[test]
fn constants_match_the_derived_resources() {
    use ferry_operator::crd::{BrokerCluster, CATEGORY, GROUP, Queue, Topic, VERSION};
    use kube::core::Resource;

    let api_version = format!("{GROUP}/{VERSION}");
    assert_eq!(BrokerCluster::api_version(&()), api_version);
    assert_eq!(Topic::api_version(&()), api_version);
    assert_eq!(Queue::api_version(&()), api_version);
    assert_eq!(
        crd("queues")["spec"]["names"]["categories"],
        json!([CATEGORY])
    );
}

#[test]
fn names_scope_and_categories() {
    for (plural, kind, short) in [
        ("brokerclusters", "BrokerCluster", "fbc"),
        ("topics", "Topic", "ft"),
        ("queues", "Queue", "fq"),
    ] {
        let crd = crd(plural);
        assert_eq!(crd["metadata"]["name"], format!("{plural}.ferry.dev"));
        assert_eq!(crd["spec"]["group"], "ferry.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["kind"], kind);
        assert_eq!(crd["spec"]["names"]["shortNames"], json!([short]));
        assert_eq!(crd["spec"]["names"]["categories"], json!(["ferry"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["served"], true);
        assert_eq!(version["storage"], true);
        assert_eq!(version["subresources"]["status"], json!({}));
    }
}

#[test]
fn broker_cluster_has_the_scale_subresource() {
    let crd = crd("brokerclusters");
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"]["scale"],
        json!({
            "specReplicasPath": ".spec.hosts",
            "statusReplicasPath": ".status.hosts",
            "labelSelectorPath": ".status.selector",
        })
    );
    let schema = schema("brokerclusters");
    assert_eq!(node(&schema, &["status", "selector"])["type"], "string");
    assert_eq!(node(&schema, &["status", "hosts"])["type"], "integer");
}

#[test]
fn printer_columns() {
    assert_eq!(
        column_names("topics"),
        [
            "Cluster",
            "Partitions",
            "Replicas",
            "Ready",
            "Reason",
            "Age",
            "Led"
        ]
    );
    assert_eq!(
        column_names("queues"),
        ["Cluster", "FIFO", "Depth", "Ready", "Reason", "Age"]
    );
    assert_eq!(
        column_names("brokerclusters"),
        ["Hosts", "Ready", "Reason", "Age"]
    );

    let topics = columns("topics");
    assert!(topics.contains(&("Cluster".into(), ".status.cluster".into())));
    assert!(topics.contains(&("Partitions".into(), ".spec.partitions".into())));
    assert!(topics.contains(&("Replicas".into(), ".spec.replicationFactor".into())));
    assert!(topics.contains(&("Ready".into(), READY_STATUS.into())));
    assert!(topics.contains(&("Reason".into(), READY_REASON.into())));
    assert!(topics.contains(&("Age".into(), ".metadata.creationTimestamp".into())));
    let queues = columns("queues");
    assert!(queues.contains(&("FIFO".into(), ".spec.fifo".into())));
    assert!(queues.contains(&("Depth".into(), ".status.depth".into())));
    assert!(queues.contains(&("Ready".into(), READY_STATUS.into())));
    let clusters = columns("brokerclusters");
    assert!(clusters.contains(&("Hosts".into(), ".spec.hosts".into())));
    assert!(clusters.contains(&("Ready".into(), ".status.readyHosts".into())));
    assert!(clusters.contains(&("Reason".into(), READY_REASON.into())));
}

#[test]
fn topics_and_queues_are_selectable_by_cluster() {
    for plural in ["topics", "queues"] {
        assert_eq!(
            crd(plural)["spec"]["versions"][0]["selectableFields"],
            json!([{"jsonPath": ".spec.clusterRef"}])
        );
    }
}

#[test]
fn immutable_fields_carry_self_equals_old_self() {
    let immutable = [
        ("topics", vec!["spec", "replicationFactor"]),
        ("topics", vec!["spec", "topicName"]),
        ("topics", vec!["spec", "clusterRef"]),
        ("queues", vec!["spec", "fifo"]),
        ("queues", vec!["spec", "replicationFactor"]),
        ("queues", vec!["spec", "queueName"]),
        ("queues", vec!["spec", "clusterRef"]),
        (
            "brokerclusters",
            vec!["spec", "storage", "storageClassName"],
        ),
    ];
    for (plural, path) in immutable {
        let schema = schema(plural);
        assert!(
            rules(node(&schema, &path)).contains(&"self == oldSelf".to_owned()),
            "{plural} {path:?} is not immutable"
        );
    }
}

#[test]
fn cross_field_and_transition_rules_sit_where_they_apply() {
    let topic = schema("topics");
    assert_eq!(
        rules(node(&topic, &["spec", "partitions"])),
        ["self >= oldSelf"]
    );
    assert_eq!(
        rules(node(&topic, &["spec"])),
        [
            "has(self.topicName) == has(oldSelf.topicName)",
            "!has(oldSelf.clusterRef) || has(self.clusterRef)"
        ]
    );
    assert_eq!(
        rules(&topic),
        ["has(self.spec.topicName) || size(self.metadata.name) <= 249"]
    );

    let queue = schema("queues");
    let spec_rules = rules(node(&queue, &["spec"]));
    assert!(
        spec_rules.contains(
            &"!has(self.maxReceiveCount) || self.maxReceiveCount == 0 || has(self.deadLetterQueue)"
                .to_owned()
        )
    );
    assert!(spec_rules.contains(
        &"!has(self.deadLetterQueue) || (has(self.maxReceiveCount) && self.maxReceiveCount > 0)"
            .to_owned()
    ));
    assert_eq!(
        rules(&queue).len(),
        2,
        "root rules: name length, own dead-letter queue"
    );
    assert_eq!(
        rules(node(&queue, &["spec", "deadLetterQueue"])),
        ["self != '.' && self != '..'"]
    );

    let cluster = schema("brokerclusters");
    assert_eq!(
        rules(node(&cluster, &["spec", "storage", "size"])),
        ["quantity(self).compareTo(quantity(oldSelf)) >= 0"]
    );
    assert_eq!(
        rules(&cluster),
        ["self.metadata.name.matches('^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$')"]
    );
}

fn limits(node: &Value) -> (Option<f64>, Option<f64>) {
    (node["minimum"].as_f64(), node["maximum"].as_f64())
}

#[test]
fn ranges_are_plain_schema() {
    let topic = schema("topics");
    assert_eq!(
        limits(node(&topic, &["spec", "partitions"])),
        (Some(1.0), Some(1024.0))
    );
    assert_eq!(
        limits(node(&topic, &["spec", "replicationFactor"])),
        (Some(1.0), Some(7.0))
    );
    assert_eq!(
        limits(node(&topic, &["spec", "segmentBytes"])),
        (Some(4096.0), Some(4_294_967_295.0))
    );
    let queue = schema("queues");
    assert_eq!(
        limits(node(&queue, &["spec", "replicationFactor"])),
        (Some(1.0), Some(7.0))
    );
    assert_eq!(
        limits(node(&queue, &["spec", "visibilityTimeoutMs"])).1,
        Some(43_200_000.0)
    );
    assert_eq!(
        limits(node(&queue, &["spec", "maxReceiveCount"])).0,
        Some(0.0)
    );
    assert_eq!(
        limits(node(&queue, &["spec", "maxMessages"])),
        (Some(1.0), Some(100_000_000.0))
    );
    let cluster = schema("brokerclusters");
    assert_eq!(limits(node(&cluster, &["spec", "hosts"])).0, Some(1.0));
    assert_eq!(
        limits(node(&cluster, &["spec", "pdb", "maxUnavailable"])).0,
        Some(0.0)
    );
}

#[test]
fn names_have_patterns_and_lengths() {
    let broker_name = "^[A-Za-z0-9._-]{1,249}$";
    let cluster_name = "^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$";
    for (plural, field, pattern, max) in [
        ("topics", "topicName", broker_name, 249),
        ("topics", "clusterRef", cluster_name, 45),
        ("queues", "queueName", broker_name, 249),
        ("queues", "deadLetterQueue", broker_name, 249),
        ("queues", "clusterRef", cluster_name, 45),
    ] {
        let schema = schema(plural);
        let field = node(&schema, &["spec", field]);
        assert_eq!(field["pattern"], pattern);
        assert_eq!(field["maxLength"], max);
    }
}

#[test]
fn enums_are_closed_lists() {
    let topic = schema("topics");
    assert_eq!(
        node(&topic, &["spec", "durability"])["enum"],
        json!(["fsync", "interval", "none"])
    );
    assert_eq!(
        node(&topic, &["spec", "replication"])["enum"],
        json!(["sync", "async"])
    );
    assert_eq!(
        node(&topic, &["spec", "deletionPolicy"])["enum"],
        json!(["Retain", "Delete", "DeleteIfEmpty"])
    );
    assert_eq!(
        node(&topic, &["spec", "deletionPolicy"])["default"],
        "Retain"
    );
}

#[test]
fn every_field_has_a_description_of_its_own() {
    // Field docs become `kubectl explain` text. An optional enum once took its type's
    // doc instead of the field's (kube's OptionalEnum transform); guard against it.
    for plural in ["brokerclusters", "topics", "queues"] {
        let schema = schema(plural);
        check_descriptions(&schema["properties"]["spec"], &format!("{plural}.spec"));
        check_descriptions(&schema["properties"]["status"], &format!("{plural}.status"));
    }
    let topic = schema("topics");
    let durability = node(&topic, &["spec", "durability"])["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        durability.starts_with("How a write is made durable"),
        "{durability}"
    );
}

fn check_descriptions(node: &Value, path: &str) {
    let Some(properties) = node["properties"].as_object() else {
        return;
    };
    for (name, child) in properties {
        let text = child["description"].as_str().unwrap_or_default();
        assert!(!text.is_empty(), "{path}.{name} has no description");
        assert!(
            !text.contains('\n') || text.contains("\n\n"),
            "{path}.{name} is hard-wrapped"
        );
        // Kubernetes' own types describe themselves; our types stop here.
        if !name.ends_with("affinity") && name != "resources" && name != "conditions" {
            check_descriptions(child, &format!("{path}.{name}"));
        }
    }
}

#[test]
fn optional_fields_are_not_nullable() {
    // An explicit null is pruned like an omitted field instead of reaching CEL rules.
    let text = serde_json::to_string(&ferry_operator::crd::definitions()).expect("serialize");
    assert!(!text.contains("\"nullable\""));
}

#[test]
fn conditions_merge_by_type() {
    for plural in ["brokerclusters", "topics", "queues"] {
        let schema = schema(plural);
        let conditions = node(&schema, &["status", "conditions"]);
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{plural}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            json!(["type"]),
            "{plural}"
        );
    }
}
