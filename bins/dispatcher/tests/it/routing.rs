//! Routing rules and fan-out end to end: a dispatcher started in-process with `[channels]` and
//! `[[routes]]`, tasks that name no target, and real receivers on loopback sockets that check
//! each delivery's Standard Webhooks signature themselves (`webhook_check`).
//!
//! Nothing here asserts a duration: tasks are polled with a generous deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use workflow_dispatch::channels::ChannelConfig;
use workflow_dispatch::routing::RouteList;

use crate::SECRET;
use crate::channels::{
    Dir, Harness, PUBLIC_URL, Peer, Reply, channel, start_with, status_reply, webhook_check,
};

/// `pr-team` and `partner` hear of high-risk interventions; everything else goes to `ops`.
fn example_routes() -> RouteList {
    serde_json::from_value(json!([
        {
            "name": "critical-to-pr-and-partner",
            "when": {"risk_level": ["high", "critical"], "task_type": ["negative_evidence_intervention"]},
            "to": ["pr-team", "partner"],
        },
        {"to": ["ops"]},
    ]))
    .unwrap()
}

/// Three `webhook` channels, one per receiver.
fn channels(pr: &Peer, partner: &Peer, ops: &Peer) -> Vec<ChannelConfig> {
    vec![
        channel("pr-team", "webhook", &pr.url("/pr")),
        channel("partner", "webhook", &partner.url("/partner")),
        channel("ops", "webhook", &ops.url("/ops")),
    ]
}

async fn start_routed(channels: Vec<ChannelConfig>, routes: RouteList) -> Harness {
    start_with(Dir::new(), channels, |c| {
        c.routes = routes;
        c.max_retries = 1;
    })
    .await
}

/// The seed's request with `risk` and no target at all.
fn untargeted(risk: &str) -> Value {
    let mut body: Value =
        serde_json::from_str(&crate::seed_body("https://unused.example/")).unwrap();
    body.as_object_mut().unwrap().remove("webhook_url");
    body["evidence_data"]["risk_level"] = risk.into();
    body
}

async fn receiver() -> Peer {
    Peer::start(webhook_check(SECRET), status_reply()).await
}

/// A receiver that answers 500 until `healthy` is set.
async fn flaky(healthy: Arc<AtomicBool>) -> Peer {
    let reply: Reply = Arc::new(move |_, check| {
        if check.is_err() {
            (StatusCode::UNAUTHORIZED, "bad signature".to_owned())
        } else if healthy.load(Ordering::SeqCst) {
            (StatusCode::OK, "accepted".to_owned())
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned())
        }
    });
    Peer::start(webhook_check(SECRET), reply).await
}

fn delivery<'v>(info: &'v Value, target: &str) -> &'v Value {
    info["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == target)
        .unwrap_or_else(|| panic!("no delivery to {target} in {info:#}"))
}

#[tokio::test]
async fn a_high_risk_task_reaches_two_channels_and_a_low_risk_one_the_default() {
    let (pr, partner, ops) = (receiver().await, receiver().await, receiver().await);
    let t = start_routed(channels(&pr, &partner, &ops), example_routes()).await;

    let (status, created) = t.post("/workflow/tasks", &untargeted("high")).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["route"], "critical-to-pr-and-partner", "{created}");
    let id = created["task_id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["deliveries"],
        json!([{"id": id, "target": "pr-team"}, {"id": format!("{id}.1"), "target": "partner"}]),
        "{created}"
    );
    let info = t.wait_final(&id).await;
    assert_eq!(info["status"], "completed", "{info:#}");
    for target in ["pr-team", "partner"] {
        let d = delivery(&info, target);
        assert_eq!(d["status"], "completed", "{info:#}");
        assert_eq!(d["attempts"], 1, "{info:#}");
    }
    // Each attempt names its delivery's target in a task that fans out.
    let targets: Vec<&str> = info["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets.len(), 2, "{info:#}");
    assert!(targets.contains(&"pr-team") && targets.contains(&"partner"));

    // Both receivers got the standard package, each signed, each with the task's callback link
    // and a token of its own; the default route's receiver got nothing.
    let (a, b) = (pr.single(), partner.single());
    assert!(ops.hits().is_empty());
    let callback = format!("{PUBLIC_URL}/workflow/tasks/{id}/callback");
    for hit in [&a, &b] {
        assert_eq!(hit.body["delivery_instructions"]["callback_url"], callback);
        assert_eq!(hit.body["evidence_data"]["risk_level"], "high");
    }
    let token = |h: &crate::channels::Hit| {
        h.body["delivery_instructions"]["callback_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(token(&a), token(&b));
    assert_ne!(a.headers["webhook-id"], b.headers["webhook-id"]);

    // The partner reports back: the report is recorded on the partner's delivery.
    let (status, v) = t
        .call(
            Request::post(format!("/workflow/tasks/{id}/callback"))
                .header("x-callback-token", token(&b))
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"status": "resolved", "note": "partner handled it"}"#,
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let info = &v["task_info"];
    assert_eq!(info["callback"]["status"], "resolved", "{info:#}");
    assert_eq!(delivery(info, "partner")["callback"]["status"], "resolved");
    assert!(delivery(info, "pr-team")["callback"].is_null(), "{info:#}");

    // A low-risk task falls through to the default route.
    let (status, created) = t.post("/workflow/tasks", &untargeted("low")).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["route"], "routes[1]", "{created}");
    let low = created["task_id"].as_str().unwrap().to_owned();
    let info = t.wait_final(&low).await;
    assert_eq!(info["status"], "completed", "{info:#}");
    assert_eq!(info["channel"], "ops", "{info:#}");
    assert_eq!(info["deliveries"].as_array().unwrap().len(), 1, "{info:#}");
    assert_eq!(ops.single().body["evidence_data"]["risk_level"], "low");
    assert_eq!((pr.hits().len(), partner.hits().len()), (1, 1));

    // The list shows each task once, as a whole.
    let (_, list) = t.get("/workflow/tasks").await;
    let listed: Vec<(&str, usize)> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task_id"].as_str().unwrap(),
                t["deliveries"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(listed, [(low.as_str(), 1), (id.as_str(), 2)], "{list:#}");
    t.stop().await;
}

#[tokio::test]
async fn one_failing_delivery_does_not_hold_back_the_other_and_is_retried_alone() {
    let healthy = Arc::new(AtomicBool::new(false));
    let (pr, partner, ops) = (
        receiver().await,
        flaky(healthy.clone()).await,
        receiver().await,
    );
    let t = start_routed(channels(&pr, &partner, &ops), example_routes()).await;

    let (status, created) = t.post("/workflow/tasks", &untargeted("critical")).await;
    assert_eq!(status, 200, "{created}");
    let id = created["task_id"].as_str().unwrap().to_owned();
    // The task fails once the partner's delivery has spent its budget (1 + max_retries = 2)...
    let info = t
        .wait_until(&id, "failed with every delivery ended", |t| {
            t["status"] == "failed"
                && t["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|d| d["status"] == "completed" || d["status"] == "failed")
        })
        .await;
    // ...while the PR team's was delivered at its first attempt, untouched by the other.
    let pr_delivery = delivery(&info, "pr-team");
    assert_eq!(pr_delivery["status"], "completed", "{info:#}");
    assert_eq!(pr_delivery["attempts"], 1, "{info:#}");
    let failed = delivery(&info, "partner");
    assert_eq!(failed["status"], "failed", "{info:#}");
    assert_eq!(failed["attempts"], 2, "{info:#}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("500"),
        "{info:#}"
    );
    assert_eq!(info["retries"], 1, "{info:#}");
    assert_eq!(partner.hits().len(), 2);

    // Retrying one delivery resends to that receiver only.
    healthy.store(true, Ordering::SeqCst);
    let (status, v) = t
        .post(
            &format!("/workflow/tasks/{id}/retry?delivery=partner"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let info = t.wait_final(&id).await;
    assert_eq!(info["status"], "completed", "{info:#}");
    assert_eq!(delivery(&info, "partner")["status"], "completed");
    assert_eq!(partner.hits().len(), 3);
    assert_eq!(pr.hits().len(), 1, "the delivered one is not sent again");

    // Nothing failed any more: a whole-task retry has nothing to do; an unknown delivery is 404.
    let (status, v) = t
        .post(&format!("/workflow/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = t
        .post(
            &format!("/workflow/tasks/{id}/cancel?delivery=nobody"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    t.stop().await;
}

#[tokio::test]
async fn cancelling_a_task_cancels_every_delivery_still_waiting() {
    let healthy = Arc::new(AtomicBool::new(false));
    let (pr, partner, ops) = (
        flaky(healthy.clone()).await,
        flaky(healthy.clone()).await,
        receiver().await,
    );
    // Long retry delays: both deliveries wait after their first failed attempt.
    let t = start_with(Dir::new(), channels(&pr, &partner, &ops), |c| {
        c.routes = example_routes();
        c.base_retry_delay = std::time::Duration::from_secs(600);
        c.max_retry_delay = std::time::Duration::from_secs(600);
    })
    .await;
    let (_, created) = t.post("/workflow/tasks", &untargeted("high")).await;
    let id = created["task_id"].as_str().unwrap().to_owned();
    t.wait_until(&id, "retrying in both deliveries", |t| {
        t["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "retrying")
    })
    .await;
    // One delivery first, then the rest of the task.
    let (status, v) = t
        .post(
            &format!("/workflow/tasks/{id}/cancel?delivery={id}.1"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(delivery(&v["task_info"], "partner")["status"], "cancelled");
    assert_eq!(delivery(&v["task_info"], "pr-team")["status"], "retrying");
    assert_eq!(v["task_info"]["status"], "retrying", "{v:#}");
    let (status, v) = t
        .post(&format!("/workflow/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["task_info"]["status"], "cancelled", "{v:#}");
    let (status, _) = t
        .post(&format!("/workflow/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409);
    t.stop().await;
}

#[tokio::test]
async fn without_a_match_or_a_default_a_task_is_refused_and_the_test_route_creates_nothing() {
    let (pr, partner, ops) = (receiver().await, receiver().await, receiver().await);
    let mut routes = example_routes();
    routes.0.pop(); // no default route
    let t = start_routed(channels(&pr, &partner, &ops), routes).await;

    let (status, v) = t.post("/workflow/tasks", &untargeted("low")).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["details"][0]["field"], "webhook_url", "{v}");
    assert!(
        v["details"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no route matches"),
        "{v}"
    );

    let (status, v) = t
        .post("/workflow/routes/test", &untargeted("critical"))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "success", "route": "critical-to-pr-and-partner", "targets": [
            {"target": "pr-team", "kind": "webhook"}, {"target": "partner", "kind": "webhook"},
        ]})
    );
    // A body that names its targets goes there, routes or not; unknown names are each named.
    let mut named = untargeted("low");
    named["webhook_url"] = pr.url("/direct").into();
    named["channels"] = json!(["ops", "partner"]);
    let (status, v) = t.post("/workflow/routes/test", &named).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("route").is_none(), "{v}");
    let targets: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, [pr.url("/direct").as_str(), "ops", "partner"]);
    named["channels"] = json!(["ops", "nope", "nada"]);
    let (status, v) = t.post("/workflow/routes/test", &named).await;
    assert_eq!(status, 400, "{v}");
    let fields: Vec<&str> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["channels[1]", "channels[2]"], "{v}");
    // With other errors in the body, one 400 names the unknown channels too.
    named["channels"] = json!(["ops", "nope", ""]);
    let (status, v) = t.post("/workflow/tasks", &named).await;
    assert_eq!(status, 400, "{v}");
    let details: Vec<(&str, &str)> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["field"].as_str().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(details.len(), 2, "{v}");
    assert_eq!(details[0], ("channels[2]", "must not be empty"), "{v}");
    assert_eq!(details[1].0, "channels[1]", "{v}");
    assert!(details[1].1.contains("unknown channel \"nope\""), "{v}");
    let (status, v) = t
        .post("/workflow/routes/test", &json!({"priority": 1}))
        .await;
    assert_eq!(status, 400, "{v}");

    // Nothing was created, nothing delivered.
    let (_, list) = t.get("/workflow/tasks").await;
    assert_eq!(list["tasks"], json!([]), "{list}");
    assert!(pr.hits().is_empty() && partner.hits().is_empty() && ops.hits().is_empty());

    let (status, v) = t.get("/workflow/routes").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["routes"],
        json!([{
            "name": "critical-to-pr-and-partner",
            "when": {"risk_level": ["high", "critical"], "task_type": ["negative_evidence_intervention"]},
            "to": ["pr-team", "partner"],
            "default": false,
        }])
    );
    t.stop().await;
}

#[tokio::test]
async fn a_request_naming_several_targets_fans_out_to_each() {
    let (pr, partner, ops) = (receiver().await, receiver().await, receiver().await);
    let hook = receiver().await;
    let t = start_routed(channels(&pr, &partner, &ops), example_routes()).await;
    let mut body = untargeted("low");
    body["webhook_url"] = hook.url("/hook").into();
    body["channel"] = "ops".into();
    body["channels"] = json!(["ops", "partner"]);
    let create = || {
        Request::post("/workflow/tasks")
            .header("authorization", format!("Bearer {}", crate::KEY))
            .header("content-type", "application/json")
            .header("idempotency-key", "fan-out-once")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (status, created) = t.call(create()).await;
    assert_eq!(status, 200, "{created}");
    assert!(created.get("route").is_none(), "{created}");
    let id = created["task_id"].as_str().unwrap().to_owned();
    // `ops` named twice is one delivery.
    let targets: Vec<&str> = created["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, [hook.url("/hook").as_str(), "ops", "partner"]);
    let info = t.wait_final(&id).await;
    assert_eq!(info["status"], "completed", "{info:#}");
    assert_eq!(info["webhook_url"], hook.url("/hook"), "{info:#}");
    assert_eq!(hook.single().headers["webhook-id"], id.as_str());
    assert_eq!(ops.hits().len(), 1);
    assert_eq!(partner.hits().len(), 1);
    assert!(pr.hits().is_empty());
    // The same Idempotency-Key answers the stored task and its deliveries; nothing is resent.
    let (status, replay) = t.call(create()).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["task_id"], id.as_str(), "{replay}");
    assert_eq!(replay["deliveries"], created["deliveries"], "{replay}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!((ops.hits().len(), partner.hits().len()), (1, 1));
    let (_, list) = t.get("/workflow/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "{list:#}");
    t.stop().await;
}
