//! Run with: cargo run -p example-task-package
//!
//! Builds the seed's request into a standard task package, prints it, reads a 竞品监控告警
//! (competitor alert) scenario back typed, then shows how an invalid request is reported:
//! every bad field at once, as the dispatcher's HTTP 400 body.

use task_package::{CreateTaskRequest, TaskId, TaskType, create_task_package};

const SEED_REQUEST: &str = r#"{
  "task_type": "negative_evidence_intervention",
  "evidence_data": {
    "evidence_fragment": "某品牌手机电池续航严重虚标，用户实测不到宣传的一半",
    "associated_url": "https://weibo.com/1234567890/AbCdEf",
    "source_name": "微博",
    "risk_level": "high",
    "brand_name": "某品牌",
    "intervention_script": "您好，我们已关注到您反馈的续航问题，请私信提供订单号，我们将安排专人跟进。",
    "source_meta": {"author": "数码测评君", "followers": 250000, "published_at": "2026-11-20T08:30:00Z"}
  },
  "webhook_url": "https://api.example.com/webhooks/intervention",
  "priority": "high"
}"#;

const COMPETITOR_ALERT: &str = r#"{
  "task_type": "competitor_alert",
  "evidence_data": {
    "evidence_fragment": "竞品发布会宣称续航领先我司 30%",
    "associated_url": "https://news.example.com/2026/11/24/launch",
    "source_name": "新闻",
    "risk_level": "critical",
    "brand_name": "某品牌",
    "intervention_script": "准备对比测试数据，24 小时内发布官方回应。",
    "source_meta": {"competitor_name": "竞品A", "alert_type": "product_launch"}
  },
  "channel": "pr-team"
}"#;

const BAD_REQUEST: &str = r#"{
  "task_type": "Competitor Alert",
  "evidence_data": {
    "evidence_fragment": "",
    "associated_url": "ftp://example.com/x",
    "source_name": 42,
    "risk_level": "extreme",
    "brand_name": "某品牌",
    "intervention_script": "…"
  },
  "webhook_url": "https://user:secret@api.example.com/hook",
  "priority": "soon"
}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The seed's request, as POST /workflow/tasks receives it.
    let request = CreateTaskRequest::from_json_slice(SEED_REQUEST.as_bytes())?;
    let package = create_task_package(&request, chrono::Utc::now());
    package.validate()?;
    println!("task id:  {}", TaskId::generate());
    println!("priority: {}", request.priority);
    println!("{}", serde_json::to_string_pretty(&package)?);

    // 2. A scenario with its own fields, sent to a preset channel instead of a URL.
    let alert = CreateTaskRequest::from_json_slice(COMPETITOR_ALERT.as_bytes())?;
    assert_eq!(alert.task_type, TaskType::CompetitorAlert);
    if let Some(fields) = alert.evidence_data.competitor_alert() {
        println!(
            "\ncompetitor alert: {} / {} -> channel {:?} (priority {})",
            fields.competitor_name,
            fields.alert_type,
            alert.channel.as_deref().unwrap_or_default(),
            alert.priority,
        );
    }

    // 3. An invalid request: every bad field at once, never echoing the credentials.
    match CreateTaskRequest::from_json_slice(BAD_REQUEST.as_bytes()) {
        Ok(_) => println!("unexpectedly valid"),
        Err(errors) => {
            println!("\nan invalid request is refused with every field named:");
            for e in &errors {
                println!("  {:<36} {}", e.field, e.reason);
            }
            println!(
                "\nas an HTTP 400 body:\n{}",
                serde_json::to_string_pretty(&errors)?
            );
        }
    }
    Ok(())
}
