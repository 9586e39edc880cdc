//! The checked-in `crds/` and the chart's copy must be what the Rust types generate:
//! a change to a type without regenerating fails here.

use ferry_operator::crdgen::{self, REGENERATE};

#[test]
fn crds_directories_are_current() {
    for dir in crdgen::output_dirs() {
        let stale = crdgen::stale_files(&dir).expect("read the CRD directory");
        let list: Vec<String> = stale.iter().map(ToString::to_string).collect();
        assert!(
            stale.is_empty(),
            "{} is stale:\n  {}\nrun `{REGENERATE}` and commit the result",
            dir.display(),
            list.join("\n  ")
        );
    }
}

#[test]
fn generated_yaml_reads_back_as_the_same_definitions() {
    // The YAML writer folds long strings; make sure what a reader gets back (kubectl,
    // Helm) is exactly the definition the types describe.
    for (file, crd) in crdgen::crd_files()
        .expect("render")
        .into_iter()
        .zip(ferry_operator::crd::definitions())
    {
        let parsed: serde_json::Value =
            serde_saphyr::from_str(&file.yaml).expect("generated YAML parses");
        let expected = serde_json::to_value(&crd).expect("CRD serializes");
        assert_eq!(
            parsed, expected,
            "{} does not read back as written",
            file.file_name
        );
    }
}

#[test]
fn one_file_per_definition_named_group_and_plural() {
    let names: Vec<String> = crdgen::crd_files()
        .expect("render")
        .into_iter()
        .map(|file| file.file_name)
        .collect();
    assert_eq!(
        names,
        [
            "ferry.dev_brokerclusters.yaml",
            "ferry.dev_topics.yaml",
            "ferry.dev_queues.yaml",
            "ferry.dev_accesspolicies.yaml"
        ]
    );
}
