//! The dispatcher's configuration through its public API (moved from `src/config.rs`'s unit
//! tests): the layering's precedence, bad settings named, secrets redacted, both channel forms.
//! A test binary of its own: figment's `Jail` sets `DISPATCHER_*` variables, which the
//! executables other tests start would inherit.

use std::time::Duration;

use dispatcher::config::{Cli, Config, Database, OneOrMany, figment_for};
use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Jail};

#[test]
// figment's Jail returns its own large error type; this is its documented test pattern.
#[allow(clippy::result_large_err)]
fn precedence_is_defaults_file_env_flags() {
    Jail::expect_with(|jail| {
        jail.create_file("d.toml", "max_retries = 5\nbase_retry_delay = \"2s\"\nlisten = \"127.0.0.1:9000\"\napi_keys = [\"a\", \"b\"]")?;
        jail.set_env("DISPATCHER_MAX_RETRIES", "7");
        jail.set_env("DISPATCHER_ALLOWED_TARGET_CIDRS", "127.0.0.0/8, 10.0.0.0/8");
        let cli = Cli {
            config: Some("d.toml".into()),
            service: service_kit::ServiceFlags {
                listen: Some("127.0.0.1:9100".parse().unwrap()),
                ..Default::default()
            },
            ..Cli::default()
        };
        let c = Config::load(&figment_for(&cli)).unwrap();
        assert_eq!(c.max_retries, 7, "env beats file");
        assert_eq!(
            c.base_retry_delay,
            Duration::from_secs(2),
            "file beats default"
        );
        assert_eq!(c.listen.port(), 9100, "flag beats file");
        assert_eq!(c.api_keys.0, ["a", "b"]);
        assert_eq!(c.allowed_target_cidrs.0, ["127.0.0.0/8", "10.0.0.0/8"]);
        assert_eq!(c.max_retry_delay, Duration::from_secs(3600));
        let cli = Cli {
            max_retries: Some(1),
            max_retry_delay: Some("90m".into()),
            ..Cli::default()
        };
        let c = Config::load(&figment_for(&cli)).unwrap();
        assert_eq!(
            (c.max_retries, c.max_retry_delay),
            (1, Duration::from_secs(5400))
        );
        Ok(())
    });
}

#[test]
fn bad_settings_are_named() {
    let load = |toml: &str| {
        Config::load(
            &Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    };
    assert!(load("nonsense = 1").unwrap_err().0.contains("nonsense"));
    assert!(
        load("base_retry_delay = \"2h\"")
            .unwrap_err()
            .0
            .contains("base_retry_delay")
    );
    assert!(
        load("allowed_target_cidrs = \"300.0.0.0/8\"")
            .unwrap_err()
            .0
            .contains("allowed_target_cidrs")
    );
    assert!(
        load("signing_secret = \"plain\"")
            .unwrap_err()
            .0
            .contains("signing_secret")
    );
    assert_eq!(
        load(
            "database_url = \"postgres://app:pw@db.internal:5433/dispatch\"\ndatabase_pool_size = 8"
        )
        .unwrap()
        .database()
        .unwrap(),
        Database::Postgres {
            url: "postgres://app:pw@db.internal:5433/dispatch".into(),
            pool_size: 8
        }
    );
    let bad = load("database_url = \"postgres://app:pw@db:notaport/x\"")
        .unwrap_err()
        .0;
    assert!(
        bad.contains("database_url") && !bad.contains("pw@"),
        "{bad}"
    );
    // TLS settings are checked at load time too, naming the parameter.
    for (url, parameter) in [
        (
            "postgres://app:pw@db/x?sslmode=verify-everything",
            "sslmode",
        ),
        (
            "postgres://app:pw@db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "sslrootcert",
        ),
    ] {
        let bad = load(&format!("database_url = \"{url}\"")).unwrap_err().0;
        assert!(
            bad.contains("database_url") && bad.contains(parameter) && !bad.contains("pw@"),
            "{bad}"
        );
    }
    assert!(
        load("database_url = \"mysql://x\"")
            .unwrap_err()
            .0
            .contains("postgres://")
    );
    assert!(
        load("database_pool_size = 0")
            .unwrap_err()
            .0
            .contains("database_pool_size")
    );
    assert!(load("lease = \"10ms\"").unwrap_err().0.contains("lease"));
    assert!(load("max_retry_delay = \"soon\"").is_err());
}

#[test]
fn debug_redacts_secrets() {
    let c = Config {
        api_keys: OneOrMany(vec!["key-123".into()]),
        signing_secret: OneOrMany(vec!["whsec_AAAAAAAAAAAAAAAAAAAAAAAA".into()]),
        ..Config::default()
    };
    let s = format!("{c:?}");
    assert!(!s.contains("key-123") && !s.contains("whsec_"), "{s}");
    let c = Config {
        database_url: Some("postgres://app:s3cret@db/x".into()),
        ..Config::default()
    };
    let s = format!("{c:?}");
    assert!(!s.contains("s3cret") && s.contains("app:***@db"), "{s}");
}

#[test]
fn the_dispatcher_config_takes_both_forms_over_its_defaults() {
    let load = |toml: &str| {
        Config::load(
            &Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    };
    let map = load("[channels.a]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/x\"")
        .unwrap();
    assert_eq!(map.channels.0[0].name, "a");
    let list = load("[[channels]]\nname = \"b\"\nkind = \"wecom_robot\"\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k\"").unwrap();
    assert_eq!(list.channels.0[0].kind, "wecom_robot");
    assert!(!format!("{list:?}").contains("key=k"));
    let bad = load("[channels.c]\nkind = \"slack\"").unwrap_err().0;
    assert!(bad.contains("channels.c.url"), "{bad}");
}

#[test]
fn the_delivery_client_keeps_as_many_idle_connections_as_a_target_may_use() {
    let config = Config {
        per_target_in_flight: 300,
        ..Config::default()
    };
    assert_eq!(
        config.client_settings(None).idle_connections_per_target,
        300
    );
}
