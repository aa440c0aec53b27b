//! The delivery handler of `webhook` tasks: a task whose payload names a `channel` goes out
//! through that channel; any other task is a plain signed webhook.
//!
//! A channel delivery is one tower stack, so retries, breakers and the attempt record behave
//! alike for every kind: a [`KeyedCircuitBreakerLayer`] over the client's breakers (key
//! `channel:<name>` for chat and app channels; a `webhook` channel's breaker is its endpoint's,
//! asked by the client) in front of the channel's sender, which asks the rate limiter and then
//! sends. An open breaker or a rate limiter saying "not now" defers the task to when it may go,
//! without spending an attempt or a token. The send's outcome (success, retryable with the
//! platform's wait, permanent) becomes the attempt, and its verdict the breaker's record.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use circuit_breaker::{
    BreakerPolicy, CircuitOpen, KeyedCircuitBreakerLayer, KeyedCircuitBreakerService, Verdict,
};
use futures::future::BoxFuture;
use serde::Deserialize as _;
use task_package::TaskPackage;
use tower::{Layer as _, ServiceExt as _};
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
    stack: KeyedCircuitBreakerService<ChannelSender, ByChannel, String>,
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
        let breakers = client.breakers().clone();
        let sender = ChannelSender {
            client,
            secrets: Arc::new(secrets),
        };
        ChannelDeliveryHandler {
            plain,
            channels,
            stack: KeyedCircuitBreakerLayer::new(breakers, ByChannel).layer(sender),
        }
    }
}

/// One send through a channel: the request of the delivery stack.
struct ChannelSend<'a> {
    channel: &'a Channel,
    task: &'a Task,
    package: &'a serde_json::Value,
}

/// What a send did: the attempt for the engine, and for the breaker what it says about the
/// channel's target.
struct ChannelAnswer {
    outcome: HandlerOutcome,
    verdict: Verdict,
}

impl ChannelAnswer {
    fn from_report(report: AttemptReport) -> ChannelAnswer {
        ChannelAnswer {
            verdict: report.verdict(),
            outcome: attempt_outcome(report, "circuit open for channel", true),
        }
    }

    /// Nothing reached the target (a refused package, a rate limit): the breaker hears nothing.
    fn unsent(outcome: HandlerOutcome) -> ChannelAnswer {
        ChannelAnswer {
            outcome,
            verdict: Verdict::Ignore,
        }
    }
}

/// The breaker policy of channel sends: chat and app channels have their own breaker
/// (`channel:<name>`); a `webhook` channel's is its endpoint's, which the client asks itself.
#[derive(Debug, Clone, Copy)]
struct ByChannel;

impl<'a> BreakerPolicy<ChannelSend<'a>, ChannelAnswer> for ByChannel {
    type Key = String;

    fn key(&self, send: &ChannelSend<'a>) -> Option<String> {
        (send.channel.kind != ChannelKind::Webhook).then(|| send.channel.breaker_key())
    }

    fn verdict(&self, answer: &ChannelAnswer) -> Verdict {
        answer.verdict
    }

    fn refused(&self, _: ChannelSend<'a>, open: CircuitOpen) -> ChannelAnswer {
        ChannelAnswer::unsent(HandlerOutcome::deferred(
            open.retry_in,
            "circuit open for channel",
        ))
    }
}

/// The innermost service: the channel's rate limiter, then the send of its kind.
#[derive(Debug, Clone)]
struct ChannelSender {
    client: WebhookClient,
    secrets: Arc<Vec<SigningSecret>>,
}

impl<'a> tower::Service<ChannelSend<'a>> for ChannelSender {
    type Response = ChannelAnswer;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'a, Result<ChannelAnswer, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, send: ChannelSend<'a>) -> Self::Future {
        let sender = self.clone();
        Box::pin(async move {
            let name = &send.channel.name;
            if let Err(wait) = send.channel.limiter.try_acquire() {
                tracing::debug!(task_id = %send.task.id, channel = %name, ?wait, "channel rate limit: delayed");
                return Ok(ChannelAnswer::unsent(HandlerOutcome::deferred(
                    wait,
                    format!("rate limit of channel {name}"),
                )));
            }
            Ok(sender.send(send.channel, send.task, send.package).await)
        })
    }
}

/// A chat message shows the package's fields: read it as the typed package it was stored as.
fn typed(package: &serde_json::Value) -> Result<TaskPackage, HandlerOutcome> {
    TaskPackage::deserialize(package)
        .map_err(|e| HandlerOutcome::permanent(format!("unreadable task package: {e}")))
}

impl ChannelSender {
    async fn send(
        &self,
        channel: &Channel,
        task: &Task,
        package: &serde_json::Value,
    ) -> ChannelAnswer {
        match channel.kind {
            ChannelKind::Webhook => {
                let body = match serde_json::to_vec(package) {
                    Ok(b) => bytes::Bytes::from(b),
                    Err(e) => {
                        return ChannelAnswer::unsent(HandlerOutcome::permanent(format!(
                            "unserialisable package: {e}"
                        )));
                    }
                };
                let secrets = channel.signing.as_deref().unwrap_or(&self.secrets);
                ChannelAnswer::from_report(
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
                    Err(outcome) => return ChannelAnswer::unsent(outcome),
                };
                let fields = ChatFields::from_package(
                    crate::payload::task_id_of(task),
                    &package,
                    channel.fragment_chars,
                );
                let body = render::render(kind, &fields, channel.template.as_ref());
                // Unguarded here: the stack's breaker (`channel:<name>`) asked already.
                ChannelAnswer::from_report(
                    self.client
                        .send_chat_unguarded(&ChatRequest {
                            kind,
                            url: &channel.url,
                            secret: channel.secret(),
                            body: &body,
                            breaker_key: None,
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
    ) -> ChannelAnswer {
        let Some(app) = &channel.app else {
            return ChannelAnswer::unsent(HandlerOutcome::permanent(
                "dingtalk_app channel without its app settings",
            ));
        };
        let package = match typed(package) {
            Ok(p) => p,
            Err(outcome) => return ChannelAnswer::unsent(outcome),
        };
        // The app robot's markdown is DingTalk markdown: the custom robot's template fits it.
        let fields = ChatFields::from_package(
            crate::payload::task_id_of(task),
            &package,
            channel.fragment_chars,
        );
        let default = Template::default_for(ChatKind::DingTalkRobot);
        let body = render::render(
            ChatKind::DingTalkRobot,
            &fields,
            Some(channel.template.as_ref().unwrap_or(&default)),
        );
        let title = body["markdown"]["title"].as_str().unwrap_or_default();
        let text = body["markdown"]["text"].as_str().unwrap_or_default();
        let message = dingtalk_sender::Message::markdown(title, text);
        // Any answer from DingTalk shows it up, except a server error or a throttle.
        let answered = |outcome| ChannelAnswer {
            outcome,
            verdict: Verdict::Success,
        };
        match app.sender.send(&app.target, &message).await {
            Ok(dingtalk_sender::SendReport::Users(r)) if !r.all_delivered() => {
                answered(HandlerOutcome::permanent(format!(
                    "dingtalk_app: not delivered to invalid {:?}, filtered {:?}, flow-controlled {:?}",
                    r.invalid_users, r.filtered_users, r.flow_controlled_users_failed
                )))
            }
            Ok(_) => answered(HandlerOutcome::success()),
            Err(e) => {
                let status = e.status();
                if e.is_retryable() {
                    let verdict = if status.is_none_or(|s| s >= 500) || e.is_throttled() {
                        Verdict::Failure
                    } else {
                        Verdict::Success
                    };
                    ChannelAnswer {
                        outcome: HandlerOutcome::from(AttemptResult::Retryable {
                            error: format!("dingtalk_app: {e}"),
                            retry_after: e.is_throttled().then_some(Duration::from_secs(1)),
                        })
                        .with_status(status),
                        verdict,
                    }
                } else {
                    answered(
                        HandlerOutcome::permanent(format!("dingtalk_app: {e}")).with_status(status),
                    )
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
        let send = ChannelSend {
            channel,
            task,
            package,
        };
        tokio::select! {
            answer = self.stack.clone().oneshot(send) => match answer {
                Ok(answer) => answer.outcome,
                Err(never) => match never {},
            },
            () = ctx.cancel.cancelled() => HandlerOutcome::retryable("cancelled while sending"),
        }
    }
}
