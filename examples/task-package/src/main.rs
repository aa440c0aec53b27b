//! Run with: cargo run -p example-task-package
//!
//! Builds the seed's request into a standard task package, prints it, then shows how an
//! invalid request is reported: every bad field at once.

use task_package::{CreateTaskRequest, TaskId, create_task_package};

const SEED_REQUEST: &str = r#"{
  "task_type": "negative_evidence_intervention",
  "evidence_data": {
    "evidence_fragment": "某品牌手机电池续航严重虚标，用户实测不到宣传的一半",
    "associated_url": "https://weibo.com/1234567890/AbCdEf",
    "source_name": "微博",
    "risk_level": "high",
    "brand_name": "某品牌",
    "intervention_script": "您好，我们已关注到您反馈的续航问题，请私信提供订单号，我们将安排专人跟进。",
    "source_meta": {"author": "数码测评君", "followers": 250000}
  },
  "webhook_url": "https://api.example.com/webhooks/intervention",
  "priority": "high"
}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let request = CreateTaskRequest::from_json_slice(SEED_REQUEST.as_bytes())?;
    let package = create_task_package(&request, chrono::Utc::now());
    package.validate()?;
    println!("task id:  {}", TaskId::generate());
    println!("priority: {}", request.priority);
    println!("{}", serde_json::to_string_pretty(&package)?);

    let bad = r#"{"task_type": "Bad Type", "evidence_data": {"associated_url": "ftp://x"}, "priority": "soon"}"#;
    match CreateTaskRequest::from_json_slice(bad.as_bytes()) {
        Ok(_) => println!("unexpectedly valid"),
        Err(errors) => {
            println!("\nan invalid request is refused with every field named:");
            for e in &errors.errors {
                println!("  {:<36} {}", e.field, e.reason);
            }
        }
    }
    Ok(())
}
