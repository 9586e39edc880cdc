//! Post-processing of the schemas kube derives, so they behave well in the API
//! server and read well in `kubectl explain`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::Value;

/// Tidies every version's schema of `crd`:
///
/// - drops `nullable: true`, which kube sets on every `Option` field. Without it the
///   API server prunes an explicit `null` (a Helm template's empty value, say) as if
///   the field were left out; with it the `null` is kept and reaches the CEL rules,
///   which fail on it with a type error instead of a useful message.
/// - joins the hard-wrapped lines of descriptions (doc comments) into paragraphs, so
///   `kubectl explain` wraps them to the terminal; blank lines still separate
///   paragraphs.
pub fn tidy(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut() else {
            continue;
        };
        if let Some(props) = schema.open_api_v3_schema.take() {
            schema.open_api_v3_schema = Some(tidy_props(props));
        }
    }
    crd
}

fn tidy_props(props: JSONSchemaProps) -> JSONSchemaProps {
    // JSONSchemaProps nests through a dozen fields of several types; walking its JSON
    // form reaches all of them the same way. Both conversions are of a value that came
    // from this same type, so they do not fail; if one ever did, keep the schema as
    // it was rather than lose it.
    let Ok(mut value) = serde_json::to_value(&props) else {
        return props;
    };
    tidy_value(&mut value);
    serde_json::from_value(value).unwrap_or(props)
}

fn tidy_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                map.remove("nullable");
            }
            for (key, child) in map.iter_mut() {
                match (key.as_str(), &mut *child) {
                    ("description", Value::String(text)) => *text = join_lines(text),
                    // Defaults and enum values are data, not schemas.
                    ("default" | "enum" | "example", _) => {}
                    _ => tidy_value(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_value),
        _ => {}
    }
}

/// Joins single line breaks into spaces and keeps blank lines as paragraph breaks.
pub(crate) fn join_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|paragraph| !paragraph.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_wrapped_lines_and_keeps_paragraphs() {
        assert_eq!(
            join_lines("one\ntwo\n\nthree\n four"),
            "one two\n\nthree four"
        );
        assert_eq!(join_lines("single"), "single");
    }

    #[test]
    fn drops_nullable_but_not_inside_defaults() {
        let mut value = serde_json::json!({
            "properties": {
                "a": {"type": "string", "nullable": true, "description": "x\ny"},
                "b": {"type": "object", "default": {"nullable": true}}
            }
        });
        tidy_value(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "properties": {
                    "a": {"type": "string", "description": "x y"},
                    "b": {"type": "object", "default": {"nullable": true}}
                }
            })
        );
    }
}
