//! Golden files, validation rules and round trips of the public API.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use task_package::{
    CreateTaskRequest, DeliveryFormat, Error, Priority, RiskLevel, TaskPackage, TaskType,
    check_url, create_task_package, limits,
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
    // Without `evidence_data` a body is the seed's flat form: its fields are named flat.
    assert_eq!(
        fields(&serde_json::json!({})),
        [
            "evidence_fragment",
            "associated_url",
            "source_name",
            "risk_level",
            "brand_name",
            "intervention_script",
            "webhook_url"
        ]
    );
    assert_eq!(
        fields(&serde_json::json!({"evidence_data": null})),
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
fn a_routable_request_may_name_no_target() {
    let mut body = json(&golden("seed_request.json"));
    body.as_object_mut().unwrap().remove("webhook_url");
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(fields(&body), ["webhook_url"]);
    let req = CreateTaskRequest::from_json_slice_routable(&bytes).unwrap();
    assert!(!req.names_a_target());
    body["channels"] = serde_json::json!(["pr-team"]);
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert!(req.names_a_target());
}

#[test]
fn channels_name_distinct_channels() {
    let mut body = json(&golden("seed_request.json"));
    body["channels"] = serde_json::json!(["pr-team", "partner"]);
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(req.channels, ["pr-team", "partner"]);
    body["channels"] = serde_json::json!(["pr-team", "", 3, "pr-team"]);
    let err = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap_err();
    let got: Vec<_> = err
        .iter()
        .map(|e| (e.field.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("channels[1]", "must not be empty"),
            ("channels[2]", "must be a channel name, not a number"),
            ("channels[3]", "names a channel already listed"),
        ]
    );
    for bad in [serde_json::json!([]), serde_json::json!("pr-team")] {
        body["channels"] = bad;
        assert_eq!(fields(&body), ["channels"]);
    }
    body["channels"] = serde_json::Value::Null;
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert!(req.channels.is_empty());
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

#[test]
fn null_means_absent_for_optional_fields() {
    let mut body = json(&golden("seed_request.json"));
    body["priority"] = serde_json::Value::Null;
    body["channel"] = serde_json::Value::Null;
    body["evidence_data"]["source_meta"] = serde_json::Value::Null;
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(req.priority, Priority::Medium);
    assert_eq!(req.channel, None);
    assert_eq!(req.evidence_data.source_meta, serde_json::json!({}));
    // A null required field is missing.
    body["evidence_data"]["brand_name"] = serde_json::Value::Null;
    assert_eq!(fields(&body), ["evidence_data.brand_name"]);
}

#[test]
fn blank_strings_are_refused_even_when_optional() {
    let mut body = json(&golden("seed_request.json"));
    body["channel"] = "  ".into();
    body["evidence_data"]["source_name"] = " ".into();
    let err = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap_err();
    let got: Vec<_> = err
        .iter()
        .map(|e| (e.field.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("evidence_data.source_name", "must not be empty"),
            ("channel", "must not be empty")
        ]
    );
}

#[test]
fn urls_must_be_absolute_http_without_credentials() {
    for (url, ok) in [
        ("https://api.example.com/hook?token=abc", true),
        ("http://127.0.0.1:8080/x", true),
        ("/relative/path", false),
        ("ftp://example.com/x", false),
        ("mailto:someone@example.com", false),
        ("https://", false),
        ("https://user:s3cret@example.com/x", false),
        (" https://example.com/x", false),
        ("", false),
    ] {
        assert_eq!(check_url(url).is_ok(), ok, "{url:?}");
    }
    let reason = check_url("https://user:s3cret@example.com/x").unwrap_err();
    assert_eq!(reason, "must not contain credentials");
    let mut body = json(&golden("seed_request.json"));
    body["evidence_data"]["associated_url"] = "https://u:p@weibo.com/1".into();
    let err = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap_err();
    assert!(!err.to_string().contains("u:p"), "{err}");
}

#[test]
fn source_meta_must_be_a_small_object() {
    let mut body = json(&golden("seed_request.json"));
    body["evidence_data"]["source_meta"] = serde_json::json!(["author"]);
    assert_eq!(fields(&body), ["evidence_data.source_meta"]);
    body["evidence_data"]["source_meta"] =
        serde_json::json!({"notes": "n".repeat(limits::SOURCE_META)});
    assert_eq!(fields(&body), ["evidence_data.source_meta"]);
}

#[test]
fn scenario_fields_must_be_short_strings() {
    let mut body = json(&golden("competitor_alert_request.json"));
    body["evidence_data"]["source_meta"]["competitor_name"] = 7.into();
    body["evidence_data"]["source_meta"]["alert_type"] = "a".repeat(limits::NAME + 1).into();
    let err = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap_err();
    let got: Vec<_> = err.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "evidence_data.source_meta.competitor_name: must be a string, not a number",
            "evidence_data.source_meta.alert_type: must be at most 200 characters"
        ]
    );
}

#[test]
fn scenario_fields_are_readable_as_typed_views() {
    let req =
        CreateTaskRequest::from_json_slice(golden("source_engagement_request.json").as_bytes())
            .unwrap();
    assert_eq!(req.task_type, TaskType::SourceEngagement);
    let se = req.evidence_data.source_engagement().unwrap();
    assert_eq!(se.contact, "author@example.com");
    assert_eq!(se.engagement_goal, "更正不实数据");
    assert_eq!(req.evidence_data.competitor_alert(), None);
    let req =
        CreateTaskRequest::from_json_slice(golden("competitor_alert_request.json").as_bytes())
            .unwrap();
    let ca = req.evidence_data.competitor_alert().unwrap();
    assert_eq!(
        (ca.competitor_name, ca.alert_type),
        ("竞品A", "product_launch")
    );
}

#[test]
fn custom_task_types_need_snake_case() {
    let mut body = json(&golden("seed_request.json"));
    body["task_type"] = "kol_follow_up".into();
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(req.task_type, TaskType::Custom("kol_follow_up".into()));
    assert_eq!(req.task_type.required_source_meta(), &[] as &[&str]);
    for bad in ["KolFollowUp", "kol-follow-up", "1st_task", "_x", "中文"] {
        body["task_type"] = bad.into();
        assert_eq!(fields(&body), ["task_type"], "{bad}");
    }
    body["task_type"] = "x".repeat(65).into();
    assert_eq!(fields(&body), ["task_type"]);
}

#[test]
fn unknown_fields_are_ignored() {
    let mut body = json(&golden("seed_request.json"));
    body["client_version"] = "9.9".into();
    body["evidence_data"]["sentiment_score"] = (-0.8).into();
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json(&golden("seed_request.json"))
    );
}

#[test]
fn validation_errors_serialise_for_an_http_400() {
    let err = CreateTaskRequest::from_json_slice(br#"{"priority": "soon", "evidence_data": 1}"#)
        .unwrap_err();
    assert_eq!(
        serde_json::to_value(&err).unwrap(),
        serde_json::json!({"errors": [
            {"field": "task_type", "reason": "is required"},
            {"field": "evidence_data", "reason": "must be an object, not a number"},
            {"field": "webhook_url", "reason": "is required (or name a preset channel)"},
            {"field": "priority", "reason": "unknown priority \"soon\" (expected critical, high, medium or low)"},
        ]})
    );
    assert!(
        err.to_string()
            .starts_with("4 invalid field(s): task_type: is required; ")
    );
}

#[test]
fn package_validation_checks_delivery_and_size() {
    let mut pkg = TaskPackage::from_json_slice(golden("seed_package.json").as_bytes()).unwrap();
    pkg.delivery_instructions.delivery_format = DeliveryFormat::Other("Chat Card".into());
    pkg.delivery_instructions.callback_token = Some(String::new());
    pkg.metadata.created_at = "2026-11-24T16:00:00+08:00".into();
    pkg.evidence_data.intervention_script = "s".repeat(limits::SCRIPT);
    pkg.evidence_data.evidence_fragment = "f".repeat(limits::FRAGMENT);
    pkg.evidence_data.source_meta =
        serde_json::json!({"pad": "p".repeat(limits::SOURCE_META - 20)});
    pkg.delivery_instructions.webhook_url = format!("https://a.example/{}", "w".repeat(2_000));
    pkg.delivery_instructions.callback_url = Some(pkg.delivery_instructions.webhook_url.clone());
    assert!(pkg.to_json_bytes().len() <= limits::PACKAGE);
    let big = serde_json::to_vec(&pkg.evidence_data).unwrap().len();
    let err = pkg.validate().unwrap_err();
    let got: Vec<_> = err.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        got,
        [
            "delivery_instructions.delivery_format",
            "delivery_instructions.callback_token",
            "metadata.created_at"
        ],
        "{big} bytes"
    );
    pkg.delivery_instructions.callback_token = Some("t".repeat(limits::TOKEN + 1));
    pkg.evidence_data.source_meta["more"] = "m".repeat(limits::EVIDENCE - big).into();
    let got: Vec<_> = pkg
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        got,
        [
            "evidence_data.source_meta",
            "evidence_data",
            "delivery_instructions.delivery_format",
            "delivery_instructions.callback_token",
            "metadata.created_at"
        ]
    );
}

#[test]
fn chat_delivery_formats_and_callbacks_round_trip() {
    let mut pkg = TaskPackage::from_json_slice(golden("seed_package.json").as_bytes()).unwrap();
    pkg.delivery_instructions.delivery_format = DeliveryFormat::from("dingtalk_markdown");
    pkg.delivery_instructions.callback_url = Some("https://dispatcher.example/callback".into());
    pkg.delivery_instructions.callback_token = Some("tok_abc".into());
    let bytes = pkg.to_json_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        value["delivery_instructions"]["delivery_format"],
        "dingtalk_markdown"
    );
    assert_eq!(value["delivery_instructions"]["callback_token"], "tok_abc");
    assert_eq!(TaskPackage::from_json_slice(&bytes).unwrap(), pkg);
    assert_eq!(
        pkg.metadata.created_at_utc(),
        Some(Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap())
    );
}

#[test]
fn package_parsing_separates_shape_from_rule_errors() {
    let err = TaskPackage::from_json_slice(b"{}").unwrap_err();
    assert!(err.is_json());
    let mut value = json(&golden("seed_package.json"));
    value["delivery_instructions"]["webhook_url"] = "nope".into();
    let err = TaskPackage::from_json_slice(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert_eq!(
        err.validation_errors().unwrap().errors[0].field,
        "delivery_instructions.webhook_url"
    );
}

#[test]
fn channel_only_requests_leave_the_webhook_url_to_the_caller() {
    let mut body = json(&golden("seed_request.json"));
    body.as_object_mut().unwrap().remove("webhook_url");
    body["channel"] = "pr-team".into();
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    let mut pkg = create_task_package(&req, Utc::now());
    assert_eq!(pkg.delivery_instructions.webhook_url, "");
    assert!(pkg.validate().is_err());
    pkg.delivery_instructions.webhook_url =
        "https://oapi.dingtalk.com/robot/send?access_token=x".into();
    pkg.validate().unwrap();
}

#[test]
fn risk_levels_and_task_types_parse_from_str() {
    assert_eq!(
        "CRITICAL".parse::<RiskLevel>().unwrap(),
        RiskLevel::Critical
    );
    assert!(RiskLevel::Critical > RiskLevel::High && RiskLevel::Medium > RiskLevel::Low);
    assert!("severe".parse::<RiskLevel>().is_err());
    assert_eq!(
        "competitor_alert".parse::<TaskType>().unwrap(),
        TaskType::CompetitorAlert
    );
    assert!("Competitor Alert".parse::<TaskType>().is_err());
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
        kind in prop::sample::select(vec![
            "negative_evidence_intervention", "source_engagement", "competitor_alert", "custom_review_task",
        ]),
        format in prop::sample::select(vec!["standard_payload", "dingtalk_markdown", "wecom_text"]),
        path in "[a-z0-9]{1,20}",
        secs in 0i64..4_000_000_000,
        followers in any::<u32>(),
        extra in text(40),
        callback in any::<bool>(),
        token in proptest::option::of("[A-Za-z0-9_-]{1,64}"),
    ) -> TaskPackage {
        let mut delivery = serde_json::json!({
            "webhook_url": format!("https://hooks.example.com/{path}"),
            "delivery_format": format,
            "callback_required": callback,
        });
        if let Some(token) = token {
            delivery["callback_url"] = format!("https://dispatcher.example.com/cb/{path}").into();
            delivery["callback_token"] = token.into();
        }
        let json = serde_json::json!({
            "task_type": kind,
            "evidence_data": {
                "evidence_fragment": fragment, "associated_url": format!("https://example.com/{path}"),
                "source_name": source, "risk_level": risk, "brand_name": brand,
                "intervention_script": script,
                "source_meta": {
                    "followers": followers, "contact": extra, "engagement_goal": extra,
                    "competitor_name": extra, "alert_type": "price_cut",
                }
            },
            "delivery_instructions": delivery,
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
        let bytes = pkg.to_json_bytes();
        let back = TaskPackage::from_json_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &pkg);
        prop_assert_eq!(back.to_json_bytes(), bytes);
    }
}

/// The seed document's example request, verbatim (section "POST /workflow/tasks").
fn seed_flat_request() -> Vec<u8> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/seeds/000_689ef479de5cb7cf.txt"
    ));
    match doc {
        Ok(doc) => {
            let start = doc.find("**请求体**").expect("the seed has a request body");
            let json = &doc[start..];
            let open = json.find("```json\n").expect("a json block") + 8;
            let close = json[open..].find("```").expect("a closed block");
            json.as_bytes()[open..open + close].to_vec()
        }
        // The repository's own copy, for checkouts without ../shared.
        Err(_) => golden("seed_flat_request.json").into_bytes(),
    }
}

#[test]
fn the_seeds_flat_request_parses_to_the_same_request_as_the_nested_form() {
    let flat = CreateTaskRequest::from_json_slice(&seed_flat_request()).unwrap();
    assert_eq!(flat.task_type, TaskType::NegativeEvidenceIntervention);
    assert_eq!(flat.evidence_data.risk_level, RiskLevel::High);
    assert_eq!(flat.evidence_data.evidence_fragment, "负面证据片段内容");
    assert_eq!(
        flat.evidence_data.source_meta,
        serde_json::json!({"platform": "信源平台", "category": "内容类别"})
    );
    assert_eq!(
        flat.webhook_url.as_deref(),
        Some("https://hooks.example.com/webhook")
    );
    assert_eq!(flat.priority, Priority::Medium);
    let value: serde_json::Value = serde_json::from_slice(&seed_flat_request()).unwrap();
    let mut evidence = serde_json::Map::new();
    for name in task_package::EVIDENCE_FIELDS {
        evidence.insert(name.to_owned(), value[name].clone());
    }
    let nested = serde_json::json!({
        "task_type": "negative_evidence_intervention",
        "evidence_data": evidence,
        "webhook_url": value["webhook_url"],
        "priority": value["priority"],
    });
    let nested = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&nested).unwrap()).unwrap();
    assert_eq!(flat, nested);
}

#[test]
fn the_flat_form_selects_a_scenario_and_names_fields_flat() {
    let mut body: serde_json::Value = serde_json::from_slice(&seed_flat_request()).unwrap();
    body["task_type"] = "competitor_alert".into();
    body["risk_level"] = "severe".into();
    body["associated_url"] = "ftp://x".into();
    assert_eq!(
        fields(&body),
        [
            "associated_url",
            "risk_level",
            "source_meta.competitor_name",
            "source_meta.alert_type"
        ]
    );
    body["risk_level"] = "critical".into();
    body["associated_url"] = "https://a.example/".into();
    body["source_meta"]["competitor_name"] = "对手".into();
    body["source_meta"]["alert_type"] = "price_cut".into();
    let req = CreateTaskRequest::from_json_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(req.task_type, TaskType::CompetitorAlert);
}

#[test]
fn evidence_fields_beside_evidence_data_are_refused() {
    let mut body = json(&golden("seed_request.json"));
    body["brand_name"] = "另一个".into();
    assert_eq!(fields(&body), ["brand_name"]);
}

#[test]
fn invisible_characters_alone_are_blank() {
    for blank in [
        "\u{200B}",
        "\u{200B}\u{200C}\u{200D}\u{FEFF}",
        " \u{2060} ",
        "\u{3164}",
        "\u{00AD}",
    ] {
        assert!(task_package::is_blank(blank), "{blank:?}");
        let mut body = json(&golden("seed_request.json"));
        body["evidence_data"]["brand_name"] = blank.into();
        assert_eq!(fields(&body), ["evidence_data.brand_name"], "{blank:?}");
    }
    assert!(!task_package::is_blank("a\u{200B}"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever a request may carry, the package made from it is one `TaskPackage` accepts,
    /// even with the longest callback URL and token a dispatcher may add: one limit.
    #[test]
    fn every_accepted_request_makes_a_valid_package(
        fragment in 0usize..=10_000,
        script in 0usize..=5_000,
        meta in 0usize..=16_300,
        wide in proptest::bool::ANY,
        escaped in proptest::bool::ANY,
    ) {
        let ch = if wide { "长" } else if escaped { "\"" } else { "x" };
        let mut body = json(&golden("seed_request.json"));
        body["evidence_data"]["evidence_fragment"] = format!("f{}", ch.repeat(fragment)).into();
        body["evidence_data"]["intervention_script"] = format!("s{}", ch.repeat(script)).into();
        body["evidence_data"]["source_meta"] = serde_json::json!({"pad": "p".repeat(meta)});
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(req) = CreateTaskRequest::from_json_slice(&bytes) {
            let mut pkg = create_task_package(&req, chrono::Utc::now());
            pkg.delivery_instructions.webhook_url =
                format!("https://a.example/{}", "w".repeat(limits::URL - 18));
            pkg.delivery_instructions.callback_url = Some(pkg.delivery_instructions.webhook_url.clone());
            pkg.delivery_instructions.callback_token = Some("t".repeat(limits::TOKEN));
            let out = pkg.to_json_bytes();
            proptest::prop_assert!(out.len() <= limits::PACKAGE);
            proptest::prop_assert!(TaskPackage::from_json_slice(&out).is_ok(), "{} bytes", out.len());
        }
    }
}
