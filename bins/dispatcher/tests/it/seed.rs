//! The seed document's API examples, read from the seed file (not retyped), through the real
//! executable: its flat request verbatim, its response shape word for word, and the package
//! delivered compared field by field with the seed's package example.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;

use crate::{KEY, free_port, get_json, http, spawn, terminate, wait_healthy};

/// The seed's API document, from `../shared/seeds` (or the repository's copy of its examples).
fn seed_doc() -> Option<String> {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/seeds/000_689ef479de5cb7cf.txt"
    ))
    .ok()
}

/// Bodies received on `POST /webhook`: a receiver's router and what it recorded.
type Received = Arc<Mutex<Vec<serde_json::Value>>>;

fn recording_receiver() -> (Router, Received) {
    let bodies: Received = Arc::default();
    let b = bodies.clone();
    let app = Router::new().route(
        "/webhook",
        post(move |body: axum::body::Bytes| {
            let b = b.clone();
            async move {
                b.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    (app, bodies)
}

/// The first ```json block after `heading` in the seed document, as bytes.
fn seed_block(doc: &str, heading: &str) -> String {
    let at = doc.find(heading).expect("heading in the seed");
    let open = doc[at..].find("```json\n").expect("a json block") + at + 8;
    let close = doc[open..].find("```").expect("closed block") + open;
    doc[open..close].to_owned()
}

#[tokio::test]
async fn the_seeds_request_verbatim_gets_the_seeds_response_and_delivers_its_package() {
    let Some(doc) = seed_doc() else {
        eprintln!("skipped: ../shared/seeds not present");
        return;
    };
    let request = seed_block(&doc, "**请求体**");
    let response: serde_json::Value = serde_json::from_str(&seed_block(&doc, "**响应**")).unwrap();
    let package: serde_json::Value =
        serde_json::from_str(&seed_block(&doc, "### 标准化任务包格式")).unwrap();
    let status_example: serde_json::Value =
        serde_json::from_str(&seed_block(&doc, "### GET /workflow/tasks/{task_id}")).unwrap();

    let (app, bodies) = recording_receiver();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rx_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // The seed's own host is pinned to a closed loopback port: nothing leaves the machine.
    let closed = free_port();
    let child = spawn(
        dir.path(),
        port,
        &[
            "--resolve",
            &format!("hooks.example.com=127.0.0.1:{closed}"),
        ],
    );
    let http = http();
    wait_healthy(&http, &base).await;

    // 1. The request exactly as the seed prints it.
    let r = http
        .post(format!("{base}/workflow/tasks"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    for field in ["status", "message", "webhook_url"] {
        assert_eq!(got[field], response[field], "{field}");
    }
    let id = got["task_id"].as_str().unwrap();
    assert!(task_package::TaskId::is_valid(id), "{id}");
    let (prefix, rest) = id.split_at(3);
    assert_eq!(prefix, "wf_");
    let (unix, hex) = rest.split_once('_').unwrap();
    assert!(unix.parse::<u64>().is_ok() && hex.len() == 8, "{id}");
    let cancel = http
        .post(format!("{base}/workflow/tasks/{id}/cancel"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);

    // 2. The same bytes with only the webhook URL pointed at a local receiver.
    let local = format!("http://{rx_addr}/webhook");
    let body = request.replace("https://hooks.example.com/webhook", &local);
    assert_ne!(body, request);
    let r = http
        .post(format!("{base}/workflow/tasks"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(got["webhook_url"], local.as_str());
    let id = got["task_id"].as_str().unwrap().to_owned();
    let mut delivered = None;
    for _ in 0..1500 {
        delivered = bodies.lock().unwrap().first().cloned();
        if delivered.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let delivered = delivered.expect("the package was delivered within 30 s");
    let sent: serde_json::Value = serde_json::from_str(&request).unwrap();
    // Every section and field of the seed's package, and nothing else at the top.
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&delivered), keys(&package));
    assert_eq!(
        keys(&delivered["evidence_data"]),
        keys(&package["evidence_data"])
    );
    for section in ["delivery_instructions", "metadata"] {
        for key in keys(&package[section]) {
            assert!(delivered[section].get(&key).is_some(), "{section}.{key}");
        }
    }
    assert_eq!(delivered["task_type"], package["task_type"]);
    for field in task_package::EVIDENCE_FIELDS {
        let want = if field == "risk_level" {
            // The package carries the level in its canonical lowercase spelling.
            serde_json::Value::from(sent[field].as_str().unwrap().to_lowercase())
        } else {
            sent[field].clone()
        };
        assert_eq!(delivered["evidence_data"][field], want, "{field}");
    }
    assert_eq!(
        delivered["delivery_instructions"]["webhook_url"],
        local.as_str()
    );
    assert_eq!(
        delivered["delivery_instructions"]["delivery_format"],
        package["delivery_instructions"]["delivery_format"]
    );
    assert_eq!(
        delivered["delivery_instructions"]["callback_required"],
        package["delivery_instructions"]["callback_required"]
    );
    assert_eq!(
        delivered["metadata"]["version"],
        package["metadata"]["version"]
    );

    // 3. The status answer has the seed's `task_info` fields.
    let mut tries = 0;
    let status = loop {
        tries += 1;
        assert!(tries < 1500, "the task did not complete within 30 s");
        let v = get_json(&http, &base, &format!("/workflow/tasks/{id}")).await;
        if v["task_info"]["status"] == "completed" {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status["status"], status_example["status"]);
    for key in keys(&status_example["task_info"]) {
        assert!(status["task_info"].get(&key).is_some(), "task_info.{key}");
    }
    assert_eq!(status["task_info"]["task_id"], id.as_str());
    let done = status["task_info"]["completed_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(done).is_ok(), "{done}");

    terminate(&child);
    let _ = child.wait_with_output();
}

/// A receiver serving `https://hooks.example.com/webhook` on a loopback port with a
/// certificate from a throwaway CA: the bodies it received, its port and the CA (PEM).
async fn seed_host_over_tls() -> (Received, u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["hooks.example.com".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let (app, bodies) = recording_receiver();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(service_kit::serve_tls(
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        app,
        service_kit::HttpLimits::default(),
        std::future::pending(),
    ));
    (bodies, port, ca_cert.pem())
}

/// The seed's request verbatim, delivered to the seed's own `https://` URL: the host is pinned
/// to a loopback TLS receiver (`--resolve`), whose throwaway CA the dispatcher trusts through
/// `SSL_CERT_FILE` as an operator would. A dispatcher that does not trust the CA refuses the
/// certificate and records why.
#[tokio::test]
async fn the_seeds_request_is_delivered_to_its_https_url_over_verified_tls() {
    let Some(doc) = seed_doc() else {
        eprintln!("skipped: ../shared/seeds not present");
        return;
    };
    let request = seed_block(&doc, "**请求体**");
    let (bodies, tls_port, ca_pem) = seed_host_over_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let client = http();
    for trusted in [true, false] {
        let data = dir.path().join(format!("data-{trusted}"));
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut cmd = crate::command(&data, port);
        cmd.args(["--api-keys", KEY, "--signing-secret", crate::SECRET])
            .args([
                "--resolve",
                &format!("hooks.example.com=127.0.0.1:{tls_port}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if trusted {
            cmd.env("SSL_CERT_FILE", &ca);
        } else {
            cmd.env_remove("SSL_CERT_FILE");
        }
        let mut child = cmd.spawn().unwrap();
        wait_healthy(&client, &base).await;
        let created: serde_json::Value = client
            .post(format!("{base}/workflow/tasks"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(request.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(created["webhook_url"], "https://hooks.example.com/webhook");
        let id = created["task_id"].as_str().unwrap().to_owned();
        // The first attempt's outcome, from the API.
        let mut attempt = serde_json::Value::Null;
        for _ in 0..1500 {
            let v = get_json(&client, &base, &format!("/workflow/tasks/{id}")).await;
            if let Some(first) = v["task_info"]["attempts"].get(0) {
                attempt = first.clone();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if trusted {
            assert_eq!(attempt["status_code"], 200, "{attempt}");
            let delivered = bodies.lock().unwrap().first().cloned().expect("delivered");
            assert_eq!(
                delivered["delivery_instructions"]["webhook_url"],
                "https://hooks.example.com/webhook"
            );
            assert_eq!(delivered["evidence_data"]["brand_name"], "品牌名称");
        } else {
            let error = attempt["error"].as_str().unwrap_or_default().to_lowercase();
            assert!(error.contains("certificate"), "{attempt}");
            assert_eq!(bodies.lock().unwrap().len(), 1, "nothing more delivered");
        }
        terminate(&child);
        let _ = child.wait();
    }
}
