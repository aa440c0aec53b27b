//! Channel templates (operator-written) and the evidence they are filled with (client-written)
//! under hostile input (proptest): parsing accepts exactly the templates whose placeholders
//! are all known, and rendering any evidence into any accepted template, for every platform,
//! never panics and gives a JSON body.

use proptest::prelude::*;
use serde_json::json;
use task_package::TaskPackage;
use webhook_client::chat::ChatKind;
use workflow_dispatch::render::{ChatFields, Template, render};

/// Template text: literal runs, known and unknown placeholders, stray braces.
fn template_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "\\PC{0,12}",
            Just("{{fragment}}".to_owned()),
            Just("{{ risk_level }}".to_owned()),
            Just("{{source_link}}".to_owned()),
            Just("{{callback_token}}".to_owned()),
            Just("{{nope}}".to_owned()),
            Just("{{".to_owned()),
            Just("}}".to_owned()),
            Just("{".to_owned()),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

fn package(fragment: &str, script: &str, url: &str, level: &str) -> Option<TaskPackage> {
    serde_json::from_value(json!({
        "task_type": "negative_evidence_intervention",
        "evidence_data": {
            "evidence_fragment": fragment,
            "associated_url": url,
            "source_name": "微博",
            "risk_level": level,
            "brand_name": "某品牌",
            "intervention_script": script,
        },
        "delivery_instructions": {"webhook_url": ""},
        "metadata": {"created_at": "2024-01-01T00:00:00Z", "version": "1.0"},
    }))
    .ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_template_text_is_accepted_only_with_known_closed_placeholders(text in template_text()) {
        let parsed = Template::parse(&text);
        let unknown = text.contains("{{nope}}");
        if unknown {
            prop_assert!(parsed.is_err(), "{text:?} accepted");
        }
        if let Err(e) = &parsed {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn any_evidence_renders_into_any_template_for_every_platform(
        text in template_text(),
        fragment in "\\PC{0,300}",
        script in "\\PC{0,100}",
        url in prop_oneof!["\\PC{0,40}", Just("https://weibo.com/1/Ab(c)?q=[x]".to_owned())],
        level in prop_oneof![Just("high"), Just("critical"), Just("low"), Just("medium")],
        chars in 0usize..400,
    ) {
        let Some(pkg) = package(&fragment, &script, &url, level) else {
            return Ok(());
        };
        let fields = ChatFields::from_package("wf_1_a", &pkg, chars);
        let template = Template::parse(&text).ok();
        for kind in ChatKind::ALL {
            let body = render(kind, &fields, template.as_ref());
            prop_assert!(body.is_object(), "{kind:?}: {body}");
            prop_assert!(serde_json::to_vec(&body).is_ok());
        }
    }
}
