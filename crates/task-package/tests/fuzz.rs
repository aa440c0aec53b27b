//! The task body parser under hostile input (proptest): arbitrary bytes, and JSON objects
//! built from the request's own field names with values of any type, in both forms. Nothing
//! panics; every field error names a field the client could have sent; whatever is accepted
//! makes a package that validates and round-trips.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use task_package::{CreateTaskRequest, EVIDENCE_FIELDS, TaskPackage, create_task_package};

/// Any JSON value, a few levels deep, with strings that like to break parsers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::from),
        prop_oneof![
            Just(" "),
            Just("\u{200B}"),
            Just("high"),
            Just("CRITICAL"),
            Just("https://a.example/hook"),
            Just("http://user:pw@a.example/"),
            Just("negative_evidence_intervention"),
            Just("competitor_alert"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The names a request may use, top level.
const TOP: &[&str] = &[
    "task_type",
    "evidence_data",
    "webhook_url",
    "priority",
    "channel",
    "callback_url",
    "source_meta",
];

/// A body in the flat or the nested form, each known field present or not, with any value.
fn request_body() -> impl Strategy<Value = Value> {
    let field = || proptest::option::of(any_json());
    (
        any::<bool>(),
        prop::collection::vec(field(), TOP.len()),
        prop::collection::vec(field(), EVIDENCE_FIELDS.len()),
    )
        .prop_map(|(nested, top, evidence)| {
            let mut obj = Map::new();
            for (name, v) in TOP.iter().zip(top) {
                if let Some(v) = v {
                    obj.insert((*name).to_owned(), v);
                }
            }
            let mut ev = Map::new();
            for (name, v) in EVIDENCE_FIELDS.iter().zip(evidence) {
                if let Some(v) = v {
                    ev.insert((*name).to_owned(), v);
                }
            }
            if nested {
                obj.insert("evidence_data".into(), Value::Object(ev));
            } else {
                obj.remove("evidence_data");
                obj.extend(ev);
            }
            Value::Object(obj)
        })
}

/// A field path the client could have sent: a known top-level or evidence name, nested
/// under `evidence_data.` or `source_meta.`, or empty (the body as a whole).
fn is_plausible_path(path: &str) -> bool {
    let head = path.split(['.', '[']).next().unwrap_or_default();
    path.is_empty() || TOP.contains(&head) || EVIDENCE_FIELDS.contains(&head)
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match CreateTaskRequest::from_json_slice(bytes) {
        Ok(req) => {
            let pkg = create_task_package(&req, chrono::Utc::now());
            prop_assert!(pkg.validate().is_ok(), "{:?}", pkg.validate());
            let out = pkg.to_json_bytes();
            let back = TaskPackage::from_json_slice(&out);
            prop_assert!(back.is_ok(), "{:?}", back.err());
        }
        Err(errs) => {
            let shown = serde_json::to_value(&errs).unwrap();
            let list = shown
                .as_array()
                .cloned()
                .or_else(|| shown["errors"].as_array().cloned())
                .unwrap_or_default();
            prop_assert!(!list.is_empty(), "an error with no field: {shown}");
            for e in list {
                let field = e["field"].as_str().unwrap_or_default();
                prop_assert!(is_plausible_path(field), "field {field:?} in {shown}");
                prop_assert!(!e["reason"].as_str().unwrap_or_default().is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes)?;
    }

    #[test]
    fn any_values_in_either_form_are_accepted_valid_or_refused_by_name(body in request_body()) {
        check(&serde_json::to_vec(&body).unwrap())?;
    }

    #[test]
    fn any_package_json_never_panics(body in any_json()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(pkg) = TaskPackage::from_json_slice(&bytes) {
            let _ = pkg.validate();
        }
    }
}
