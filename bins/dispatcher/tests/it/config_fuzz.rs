//! Configuration files under hostile input (proptest): a TOML file with the dispatcher's own
//! keys (and channel tables) holding values of any type either loads into a configuration
//! that passes validation or fails with a message; it never panics.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use proptest::prelude::*;

use dispatcher::Config;

const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "database_pool_size",
    "sqlite_cache_mib",
    "lease",
    "api_keys",
    "signing_secret",
    "allowed_target_cidrs",
    "resolve",
    "max_retries",
    "base_retry_delay",
    "max_retry_delay",
    "task_queue_size",
    "max_in_flight",
    "per_target_in_flight",
    "delivery_timeout",
    "permanent_statuses",
    "public_url",
    "log_format",
    "breaker_open_policy",
    "retention",
    "shutdown_grace",
    "max_connections",
    "header_timeout",
];

/// A TOML value, as text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        Just("0".to_owned()),
        Just("true".to_owned()),
        "\\PC{0,20}".prop_map(|s| format!("{s:?}")),
        prop_oneof![
            Just("\"30s\""),
            Just("\"0ms\""),
            Just("\"99999999999999h\""),
            Just("\"127.0.0.1:0\""),
            Just("\"10.0.0.0/33\""),
            Just("\"postgres://u:p@h/db\""),
            Just("\"sqlite:///tmp/x.db\""),
            Just("\"whsec_AAAA\""),
            Just("\"https://a.example\""),
            Just("[\"a\", \"b\"]"),
            Just("[1, 2]"),
            Just("{ x = 1 }"),
        ]
        .prop_map(str::to_owned),
    ]
}

/// A `[channels.NAME]` table with any of the channel keys.
fn channel() -> impl Strategy<Value = String> {
    (
        "[a-z-]{1,8}",
        prop::collection::vec(
            (
                prop_oneof![
                    Just("kind"),
                    Just("url"),
                    Just("secret"),
                    Just("template"),
                    Just("rate_limit"),
                    Just("app_key"),
                    Just("robot_code"),
                ],
                prop_oneof![
                    value(),
                    Just("\"dingtalk_robot\"".to_owned()),
                    Just("\"slack\"".to_owned()),
                    Just("\"{{fragment}} {{nope}}\"".to_owned()),
                    Just("\"{{\"".to_owned()),
                ],
            ),
            0..5,
        ),
    )
        .prop_map(|(name, fields)| {
            let body: String = fields
                .into_iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            format!("[channels.{name}]\n{body}")
        })
}

fn document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((prop::sample::select(KEYS), value()), 0..8),
        prop::collection::vec(channel(), 0..3),
    )
        .prop_map(|(pairs, channels)| {
            let mut text: String = pairs
                .into_iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            text.extend(channels);
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_config_file_loads_or_fails_with_a_message(text in prop_oneof![document(), "\\PC{0,200}"]) {
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&text));
        match Config::load(&figment) {
            Ok(config) => {
                prop_assert!(config.max_retry_delay >= config.base_retry_delay);
                prop_assert!(config.http_limits().is_ok());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
