//! PostgreSQL over TLS against `scripts/with-postgres.sh`'s TLS-only server (its certificate
//! names `localhost` only, signed by the throwaway CA in `TEST_DATABASE_CA`): what each
//! `sslmode` accepts and refuses, client certificates, and the `LISTEN` connection's TLS.
//! That `verify-full` with the right name works is the rest of the suite, which runs on the
//! script's `verify-full` URL.
//!
//! Needs `TEST_DATABASE_URL`, `TEST_DATABASE_PORT` and `TEST_DATABASE_CA`
//! (`scripts/with-postgres.sh cargo test -p workflow-core`); without them each test prints
//! `skipped: ...` and passes.
#![cfg(feature = "postgres")]

use std::time::Duration;

use workflow_core::store::conformance::{self, fresh_postgres_database};
use workflow_core::{PostgresConfig, PostgresStore, StoreError};

/// The script's TLS server: its port and the CA that signed its certificate.
struct Server {
    port: u16,
    ca: String,
}

impl Server {
    fn get() -> Option<Server> {
        let vars = [
            "TEST_DATABASE_URL",
            "TEST_DATABASE_PORT",
            "TEST_DATABASE_CA",
        ];
        let values: Vec<String> = vars.iter().filter_map(|v| std::env::var(v).ok()).collect();
        if values.len() < vars.len() {
            eprintln!("skipped: {} not all set", vars.join(", "));
            return None;
        }
        Some(Server {
            port: values[1].parse().expect("TEST_DATABASE_PORT is a port"),
            ca: values[2].clone(),
        })
    }

    /// A URL of the admin database as `user` via `host`, with these query parameters.
    fn url(&self, user: &str, host: &str, params: &str) -> String {
        format!(
            "postgres://{user}@{host}:{}/postgres?connect_timeout=10&{params}",
            self.port
        )
    }
}

/// Connecting (one connection, as `PostgresStore::connect` does first) fails; the message.
async fn refused(url: String) -> String {
    let err = PostgresStore::migrate(&PostgresConfig::new(url))
        .await
        .expect_err("the connection is refused");
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    err.to_string()
}

/// Whether the connection `client` is on is encrypted, by the server's account.
async fn encrypted(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn verify_full_refuses_a_server_whose_certificate_names_another_host() {
    let Some(server) = Server::get() else {
        return;
    };
    // The certificate names localhost, not 127.0.0.1.
    let url = server.url(
        "postgres",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", server.ca),
    );
    let msg = refused(url).await;
    assert!(msg.contains("TLS"), "{msg}");
    assert!(msg.contains("certificate"), "{msg}");
    assert!(msg.contains("name"), "{msg}");
}

#[tokio::test]
async fn verify_ca_accepts_the_chain_whatever_the_host_name() {
    let Some(server) = Server::get() else {
        return;
    };
    let url = server.url(
        "postgres",
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", server.ca),
    );
    assert!(encrypted(&conformance::postgres_client(&url).await).await);
}

#[tokio::test]
async fn verify_full_refuses_a_server_signed_by_another_ca() {
    let Some(server) = Server::get() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, another_ca()).unwrap();
    for mode in ["verify-full", "verify-ca", "require"] {
        // With sslrootcert, require checks the chain too (libpq's rule).
        let url = server.url(
            "postgres",
            "localhost",
            &format!("sslmode={mode}&sslrootcert={}", other_ca.display()),
        );
        let msg = refused(url).await;
        assert!(
            msg.contains("TLS") && msg.contains("certificate"),
            "{mode}: {msg}"
        );
    }
}

#[tokio::test]
async fn a_connection_without_tls_is_refused_by_the_tls_only_server() {
    let Some(server) = Server::get() else {
        return;
    };
    let msg = refused(server.url("postgres", "localhost", "sslmode=disable")).await;
    assert!(msg.contains("no encryption"), "{msg}");
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_checking_the_certificate() {
    let Some(server) = Server::get() else {
        return;
    };
    // No sslrootcert: the platform does not trust the throwaway CA, and need not.
    for mode in ["require", "prefer"] {
        let url = server.url("postgres", "127.0.0.1", &format!("sslmode={mode}"));
        assert!(
            encrypted(&conformance::postgres_client(&url).await).await,
            "{mode}"
        );
    }
    // The default is prefer, so a bare URL works too.
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
    assert!(encrypted(&conformance::postgres_client(&url).await).await);
}

#[tokio::test]
async fn verify_full_without_sslrootcert_uses_the_platform_roots() {
    let Some(server) = Server::get() else {
        return;
    };
    // The throwaway CA is in no platform store.
    let msg = refused(server.url("postgres", "localhost", "sslmode=verify-full")).await;
    assert!(msg.contains("certificate"), "{msg}");
}

#[tokio::test]
async fn a_client_certificate_logs_in_where_the_server_requires_one() {
    let Some(server) = Server::get() else {
        return;
    };
    let (Ok(cert), Ok(key)) = (
        std::env::var("TEST_DATABASE_CLIENT_CERT"),
        std::env::var("TEST_DATABASE_CLIENT_KEY"),
    ) else {
        eprintln!("skipped: TEST_DATABASE_CLIENT_CERT, TEST_DATABASE_CLIENT_KEY not set");
        return;
    };
    // The script's pg_hba.conf lets this role in by certificate only.
    let admin = std::env::var("TEST_DATABASE_URL").unwrap();
    conformance::postgres_client(&admin)
        .await
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE workflow_tls_client LOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .await
        .unwrap();
    let verified = format!("sslmode=verify-full&sslrootcert={}", server.ca);
    let url = server.url(
        "workflow_tls_client",
        "localhost",
        &format!("{verified}&sslcert={cert}&sslkey={key}"),
    );
    let client = conformance::postgres_client(&url).await;
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "workflow_tls_client");
    let msg = refused(server.url("workflow_tls_client", "localhost", &verified)).await;
    assert!(msg.contains("certificate"), "{msg}");
}

#[tokio::test]
async fn the_listen_connection_uses_the_same_tls() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let store = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    let client = conformance::postgres_client(&url).await;
    // The listener connects in the background: wait until the server shows it.
    let mut listener = None;
    for _ in 0..200 {
        let row = client
            .query_opt(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = current_database() AND a.query = 'LISTEN workflow_tasks'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            listener = Some(row.get::<_, bool>(0));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listener, Some(true), "the listener is connected over TLS");
    let plain: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = current_database() AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "every connection of the store is encrypted");
    workflow_core::Store::close(&store).await;
}

/// A CA certificate (PEM) nobody uses.
fn another_ca() -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}
