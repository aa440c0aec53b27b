//! Configuration loading (moved from `src/config.rs`'s unit tests).

use std::path::PathBuf;

use dingtalk_bot::Config;
use dingtalk_bot::config::{ConfigError, Database};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use service_kit::LogFormat;

fn load(toml: &str) -> Result<Config, ConfigError> {
    Config::load(
        &Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(
                "client_id = \"id\"\nclient_secret = \"secret\"",
            ))
            .merge(Toml::string(toml)),
    )
}

#[test]
fn the_job_database_is_sqlite_in_the_data_dir_unless_a_url_says_otherwise() {
    let c = load("data_dir = \"/var/lib/bot\"").unwrap();
    assert_eq!(
        c.database().unwrap(),
        Database::Sqlite(PathBuf::from("/var/lib/bot/bot.db"))
    );
    let c = load("database_url = \"sqlite:///tmp/jobs.db\"").unwrap();
    assert_eq!(
        c.database().unwrap(),
        Database::Sqlite(PathBuf::from("/tmp/jobs.db"))
    );
    let c = load("database_url = \"postgres://bot:pw@db.internal/jobs\"\ndatabase_pool_size = 4")
        .unwrap();
    assert_eq!(
        c.database().unwrap(),
        Database::Postgres {
            url: "postgres://bot:pw@db.internal/jobs".into(),
            pool_size: 4
        }
    );
    assert!(
        !format!("{c:?}").contains("pw@"),
        "the password is never shown"
    );
}

#[test]
fn bad_database_settings_are_named_without_the_password() {
    let e = load("database_url = \"postgres://bot:pw@db:notaport/jobs\"")
        .unwrap_err()
        .0;
    assert!(e.contains("database_url") && !e.contains("pw@"), "{e}");
    assert!(
        load("database_url = \"mysql://x\"")
            .unwrap_err()
            .0
            .contains("postgres://")
    );
    assert!(
        load("database_url = \"sqlite://\"")
            .unwrap_err()
            .0
            .contains("needs a path")
    );
    assert!(
        load("database_pool_size = 0")
            .unwrap_err()
            .0
            .contains("database_pool_size")
    );
}

#[test]
fn log_format_and_keywords_read_as_before() {
    let c = load("log_format = \"json\"\nkeywords = [\"a\", \"b\"]").unwrap();
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.keywords.0, ["a", "b"]);
    assert_eq!(
        load("log_format = \"human\"").unwrap().log_format,
        LogFormat::Human
    );
    assert_eq!(load("keywords = \"a, b\"").unwrap().keywords.0, ["a", "b"]);
}
