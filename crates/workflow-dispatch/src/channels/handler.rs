//! The delivery handler of `webhook` tasks: a task whose payload names a `channel` goes out
//! through that channel; any other task is a plain signed webhook.
//!
//! Every kind goes through the same steps, so retries, breakers and the attempt record behave
//! alike: the channel's breaker (`channel:<name>`) is asked first, then its rate limiter; either
//! one saying "not now" defers the task to when it may go, without spending an attempt. The
//! send's outcome (success, retryable with the platform's wait, permanent) becomes the attempt.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize as _;
use task_package::TaskPackage;
use webhook_client::chat::ChatKind;
use webhook_client::{AttemptReport, ChatRequest, SigningSecret, WebhookClient, WebhookRequest};
use workflow_core::{AttemptContext, AttemptResult, Handler, HandlerOutcome, Task};

use super::{Channel, ChannelKind, Channels};
use crate::payload::DeliveryPayload;
use crate::render::{self, ChatFields, Template};
use crate::webhook::{WebhookDeliveryHandler, attempt_outcome};

/// Routes each `webhook` task to its channel, or to the plain webhook handler.
#[derive(Debug, Clone)]
pub struct ChannelDeliveryHandler {
    plain: WebhookDeliveryHandler,
    channels: Channels,
    client: WebhookClient,
    secrets: Arc<Vec<SigningSecret>>,
}

impl ChannelDeliveryHandler {
    /// Channel tasks go through `channels` (sending with `client`; `webhook` channels without
    /// their own secret sign with `secrets`); others go to `plain`.
    pub fn new(
        plain: WebhookDeliveryHandler,
        channels: Channels,
        client: WebhookClient,
        secrets: Vec<SigningSecret>,
    ) -> ChannelDeliveryHandler {
        ChannelDeliveryHandler {
            plain,
            channels,
            client,
            secrets: Arc::new(secrets),
        }
    }
}

/// A chat message shows the package's fields: read it as the typed package it was stored as.
fn typed(package: &serde_json::Value) -> Result<TaskPackage, HandlerOutcome> {
    TaskPackage::deserialize(package)
        .map_err(|e| HandlerOutcome::permanent(format!("unreadable task package: {e}")))
}

fn from_report(report: AttemptReport) -> HandlerOutcome {
    attempt_outcome(report, "circuit open for channel", true)
}

impl ChannelDeliveryHandler {
    async fn send(
        &self,
        channel: &Channel,
        task: &Task,
        package: &serde_json::Value,
    ) -> HandlerOutcome {
        match channel.kind {
            ChannelKind::Webhook => {
                let body = match serde_json::to_vec(package) {
                    Ok(b) => bytes::Bytes::from(b),
                    Err(e) => {
                        return HandlerOutcome::permanent(format!("unserialisable package: {e}"));
                    }
                };
                let secrets = channel.signing.as_deref().unwrap_or(&self.secrets);
                from_report(
                    self.client
                        .send_webhook(&WebhookRequest {
                            url: &channel.url,
                            msg_id: &task.id,
                            body,
                            secrets,
                            headers: &crate::trace_context::outgoing_headers(),
                        })
                        .await,
                )
            }
            ChannelKind::Chat(kind) => {
                let package = match typed(package) {
                    Ok(p) => p,
                    Err(outcome) => return outcome,
                };
                let fields = ChatFields::from_package(&task.id, &package, channel.fragment_chars);
                let body = render::render(kind, &fields, channel.template.as_ref());
                let key = channel.breaker_key();
                from_report(
                    self.client
                        .send_chat(&ChatRequest {
                            kind,
                            url: &channel.url,
                            secret: channel.secret(),
                            body: &body,
                            breaker_key: Some(&key),
                        })
                        .await,
                )
            }
            ChannelKind::DingTalkApp => self.send_app(channel, task, package).await,
        }
    }

    async fn send_app(
        &self,
        channel: &Channel,
        task: &Task,
        package: &serde_json::Value,
    ) -> HandlerOutcome {
        let Some(app) = &channel.app else {
            return HandlerOutcome::permanent("dingtalk_app channel without its app settings");
        };
        let package = match typed(package) {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        // The app robot's markdown is DingTalk markdown: the custom robot's template fits it.
        let fields = ChatFields::from_package(&task.id, &package, channel.fragment_chars);
        let default = Template::default_for(ChatKind::DingTalkRobot);
        let body = render::render(
            ChatKind::DingTalkRobot,
            &fields,
            Some(channel.template.as_ref().unwrap_or(&default)),
        );
        let title = body["markdown"]["title"].as_str().unwrap_or_default();
        let text = body["markdown"]["text"].as_str().unwrap_or_default();
        let message = dingtalk_sender::Message::markdown(title, text);
        // The same breaker discipline as HTTP targets: open → defer; answers count.
        let permit = match self.client.breakers().try_acquire(&channel.breaker_key()) {
            Ok(p) => p,
            Err(open) => {
                return HandlerOutcome::deferred(open.retry_in, "circuit open for channel");
            }
        };
        match app.sender.send(&app.target, &message).await {
            Ok(dingtalk_sender::SendReport::Users(r)) if !r.all_delivered() => {
                permit.success();
                HandlerOutcome::permanent(format!(
                    "dingtalk_app: not delivered to invalid {:?}, filtered {:?}, flow-controlled {:?}",
                    r.invalid_users, r.filtered_users, r.flow_controlled_users_failed
                ))
            }
            Ok(_) => {
                permit.success();
                HandlerOutcome::success()
            }
            Err(e) => {
                let status = e.status();
                if e.is_retryable() {
                    if status.is_none_or(|s| s >= 500) || e.is_throttled() {
                        permit.failure();
                    } else {
                        permit.success();
                    }
                    HandlerOutcome::from(AttemptResult::Retryable {
                        error: format!("dingtalk_app: {e}"),
                        retry_after: e.is_throttled().then_some(Duration::from_secs(1)),
                    })
                    .with_status(status)
                } else {
                    permit.success();
                    HandlerOutcome::permanent(format!("dingtalk_app: {e}")).with_status(status)
                }
            }
        }
    }
}

#[async_trait]
impl Handler for ChannelDeliveryHandler {
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        let payload = match DeliveryPayload::read(&task.payload) {
            Ok(p) => p,
            Err(e) => return HandlerOutcome::permanent(e.to_string()),
        };
        let (Some(name), package) = (payload.channel, payload.package) else {
            return self.plain.handle(task, ctx).await;
        };
        let Some(channel) = self.channels.get(name) else {
            return HandlerOutcome::permanent(format!("channel {name:?} is no longer configured"));
        };
        if channel.kind != ChannelKind::Webhook
            && let Some(retry_in) = self.client.breaker_retry_in_key(&channel.breaker_key())
        {
            return HandlerOutcome::deferred(retry_in, "circuit open for channel");
        }
        if let Err(wait) = channel.limiter.try_acquire() {
            tracing::debug!(task_id = %task.id, channel = %name, ?wait, "channel rate limit: delayed");
            return HandlerOutcome::deferred(wait, format!("rate limit of channel {name}"));
        }
        tokio::select! {
            outcome = self.send(channel, task, package) => outcome,
            () = ctx.cancel.cancelled() => HandlerOutcome::retryable("cancelled while sending"),
        }
    }
}
