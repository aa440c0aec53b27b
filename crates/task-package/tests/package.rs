//! Golden files, validation rules and round trips of the public API.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use task_package::{
    CreateTaskRequest, DeliveryFormat, Priority, RiskLevel, TaskPackage, TaskType,
    create_task_package, limits,
};

fn golden(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

fn fields(body: &serde_json::Value) -> Vec<String> {
    let err = CreateTaskRequest::from_json_slice(&serde_json::to_vec(body).unwrap()).unwrap_err();
    err.errors.into_iter().map(|e| e.field).collect()
}

#[test]
fn seed_request_builds_the_seed_package() {
    let req = CreateTaskRequest::from_json_slice(golden("seed_request.json").as_bytes()).unwrap();
    assert_eq!(req.priority, Priority::High);
    assert_eq!(req.task_type, TaskType::NegativeEvidenceIntervention);
    assert_eq!(req.evidence_data.risk_level, RiskLevel::High);
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap();
    let package = create_task_package(&req, now);
    package.validate().unwrap();
    assert_eq!(
        serde_json::to_value(&package).unwrap(),
        json(&golden("seed_package.json"))
    );
}

#[test]
fn golden_files_round_trip_unchanged() {
    for name in [
        "seed_request.json",
        "source_engagement_request.json",
        "competitor_alert_request.json",
    ] {
        let text = golden(name);
        let req = CreateTaskRequest::from_json_slice(text.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(serde_json::to_value(&req).unwrap(), json(&text), "{name}");
    }
    let text = golden("seed_package.json");
    let package = TaskPackage::from_json_slice(text.as_bytes()).unwrap();
    assert_eq!(serde_json::to_value(&package).unwrap(), json(&text));
    assert_eq!(
        package.delivery_instructions.delivery_format,
        DeliveryFormat::StandardPayload
    );
    assert!(package.delivery_instructions.callback_required);
}

#[test]
fn defaults_priority_to_medium_and_callback_to_required() {
    let mut body = json(&golden("seed_request.json"));
    body.as_object_mut().unwrap().remove("priority");
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(req.priority, Priority::Medium);
    let pkg: TaskPackage = serde_json::from_value(serde_json::json!({
        "task_type": "negative_evidence_intervention",
        "evidence_data": body["evidence_data"],
        "delivery_instructions": {"webhook_url": "https://a.example/x"},
        "metadata": {"created_at": "2026-11-24T08:00:00Z", "version": "1.0"}
    }))
    .unwrap();
    assert!(pkg.delivery_instructions.callback_required);
    assert_eq!(
        pkg.delivery_instructions.delivery_format.as_str(),
        "standard_payload"
    );
}

#[test]
fn reports_every_invalid_field_at_once() {
    let body = serde_json::json!({
        "task_type": "Not Snake",
        "evidence_data": {
            "evidence_fragment": "",
            "associated_url": "ftp://example.com/x",
            "source_name": 42,
            "risk_level": "extreme",
            "intervention_script": "x"
        },
        "webhook_url": "/relative",
        "priority": "urgent"
    });
    let got = fields(&body);
    for want in [
        "task_type",
        "evidence_data.evidence_fragment",
        "evidence_data.associated_url",
        "evidence_data.source_name",
        "evidence_data.risk_level",
        "evidence_data.brand_name",
        "webhook_url",
        "priority",
    ] {
        assert!(got.contains(&want.to_owned()), "missing {want} in {got:?}");
    }
}

#[test]
fn missing_sections_and_wrong_types_are_named() {
    assert_eq!(
        fields(&serde_json::json!({})),
        ["task_type", "evidence_data", "webhook_url"]
    );
    let got = fields(
        &serde_json::json!({"task_type": 1, "evidence_data": [], "webhook_url": true, "priority": 3}),
    );
    assert_eq!(
        got,
        ["task_type", "evidence_data", "webhook_url", "priority"]
    );
}

#[test]
fn malformed_json_and_non_objects_are_one_body_error() {
    for body in [&b"{not json"[..], b"[]", b"\"str\"", b""] {
        let err = CreateTaskRequest::from_json_slice(body).unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].field, "");
    }
}

#[test]
fn enforces_size_limits() {
    let mut body = json(&golden("seed_request.json"));
    body["evidence_data"]["evidence_fragment"] = "长".repeat(limits::FRAGMENT + 1).into();
    body["evidence_data"]["intervention_script"] = "x".repeat(limits::SCRIPT + 1).into();
    body["evidence_data"]["brand_name"] = "b".repeat(limits::NAME + 1).into();
    body["webhook_url"] = format!("https://a.example/{}", "p".repeat(limits::URL)).into();
    assert_eq!(
        fields(&body),
        [
            "evidence_data.evidence_fragment",
            "evidence_data.brand_name",
            "evidence_data.intervention_script",
            "webhook_url"
        ]
    );
    // At the limit is fine (counted in characters, not bytes).
    let mut ok = json(&golden("seed_request.json"));
    ok["evidence_data"]["evidence_fragment"] = "长".repeat(limits::FRAGMENT).into();
    assert!(CreateTaskRequest::from_json_slice(&serde_json::to_vec(&ok).unwrap()).is_ok());
    let huge = vec![b' '; limits::BODY + 1];
    assert!(CreateTaskRequest::from_json_slice(&huge).is_err());
}

#[test]
fn scenario_fields_are_required_per_task_type() {
    let mut body = json(&golden("source_engagement_request.json"));
    body["evidence_data"]["source_meta"] = serde_json::json!({"contact": ""});
    assert_eq!(
        fields(&body),
        [
            "evidence_data.source_meta.contact",
            "evidence_data.source_meta.engagement_goal"
        ]
    );
    let mut body = json(&golden("competitor_alert_request.json"));
    body["evidence_data"]
        .as_object_mut()
        .unwrap()
        .remove("source_meta");
    assert_eq!(
        fields(&body),
        [
            "evidence_data.source_meta.competitor_name",
            "evidence_data.source_meta.alert_type"
        ]
    );
}

#[test]
fn channel_makes_webhook_url_optional() {
    let mut body = json(&golden("seed_request.json"));
    body.as_object_mut().unwrap().remove("webhook_url");
    assert_eq!(fields(&body), ["webhook_url"]);
    body["channel"] = "pr-team".into();
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(req.channel.as_deref(), Some("pr-team"));
}

#[test]
fn priority_and_risk_parse_case_insensitively() {
    let mut body = json(&golden("seed_request.json"));
    body["priority"] = "CRITICAL".into();
    body["evidence_data"]["risk_level"] = "Low".into();
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(req.priority, Priority::Critical);
    assert_eq!(req.evidence_data.risk_level, RiskLevel::Low);
}

#[test]
fn package_validation_checks_urls_and_metadata() {
    let mut pkg = TaskPackage::from_json_slice(golden("seed_package.json").as_bytes()).unwrap();
    pkg.delivery_instructions.webhook_url = "not a url".into();
    pkg.delivery_instructions.callback_url = Some("mailto:x@y".into());
    pkg.metadata.created_at = "yesterday".into();
    pkg.metadata.version = "2.0".into();
    let got: Vec<_> = pkg
        .validate()
        .unwrap_err()
        .errors
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        got,
        [
            "delivery_instructions.webhook_url",
            "delivery_instructions.callback_url",
            "metadata.created_at",
            "metadata.version"
        ]
    );
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 中文测试，。!?]{{1,{max}}}"))
        .unwrap()
        .prop_filter("non-blank", |s| !s.trim().is_empty())
}

prop_compose! {
    fn valid_package()(
        fragment in text(200),
        source in text(30),
        brand in text(30),
        script in text(200),
        risk in prop::sample::select(RiskLevel::ALL.to_vec()),
        kind in prop::sample::select(vec!["negative_evidence_intervention", "custom_review_task"]),
        path in "[a-z0-9]{1,20}",
        secs in 0i64..4_000_000_000,
        followers in any::<u32>(),
        callback in any::<bool>(),
    ) -> TaskPackage {
        let json = serde_json::json!({
            "task_type": kind,
            "evidence_data": {
                "evidence_fragment": fragment, "associated_url": format!("https://example.com/{path}"),
                "source_name": source, "risk_level": risk, "brand_name": brand,
                "intervention_script": script, "source_meta": {"followers": followers}
            },
            "delivery_instructions": {"webhook_url": format!("https://hooks.example.com/{path}"), "callback_required": callback},
            "metadata": {
                "created_at": Utc.timestamp_opt(secs, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "version": "1.0"
            }
        });
        serde_json::from_value(json).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_valid_package_survives_serialize_and_parse(pkg in valid_package()) {
        prop_assert!(pkg.validate().is_ok(), "{:?}", pkg.validate());
        let back = TaskPackage::from_json_slice(&pkg.to_json_bytes()).unwrap();
        prop_assert_eq!(back, pkg);
    }
}
