//! Tests of the generated CustomResourceDefinitions: what the schema promises
//! (`structure`), how its CEL rules judge objects (`cel`, evaluated client-side by
//! kube's CEL engine the way the API server would), and that sample manifests read
//! with their defaults (`samples`).

mod cel;
mod samples;
mod structure;

use serde_json::Value;

/// The tidied CRD of `plural` (`brokerclusters`, `topics`, `queues`,
/// `accesspolicies`) as JSON.
pub fn crd(plural: &str) -> Value {
    ferry_operator::crd::definitions()
        .into_iter()
        .find(|crd| crd.spec.names.plural == plural)
        .map(|crd| serde_json::to_value(crd).expect("CRD serializes"))
        .unwrap_or_else(|| panic!("no CRD for {plural}"))
}

/// The `openAPIV3Schema` of the CRD of `plural`.
pub fn schema(plural: &str) -> Value {
    crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The schema node at `path` (property names from the root), e.g. `["spec", "fifo"]`.
pub fn node<'a>(schema: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(schema, |node, name| {
        let child = &node["properties"][name];
        assert!(!child.is_null(), "no property {name} in {path:?}");
        child
    })
}

/// The CEL rules (`x-kubernetes-validations[].rule`) on a schema node.
pub fn rules(node: &Value) -> Vec<String> {
    node["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|rule| rule["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
