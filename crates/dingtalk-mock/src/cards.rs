//! Interactive cards, as the official SDK's `CardReplier` / `AICardReplier` and
//! `ChatbotHandler.reply_card` call them:
//!
//! - `POST /v1.0/card/instances` (create), `POST /v1.0/card/instances/deliver`,
//!   `POST /v1.0/card/instances/createAndDeliver`, `PUT /v1.0/card/instances` (update the
//!   data), `PUT /v1.0/card/streaming` (AI card streaming);
//! - the older robot cards: `POST /v1.0/im/v1.0/robot/interactiveCards/send` and
//!   `PUT /v1.0/im/robots/interactiveCards`.
//!
//! Request and answer shapes follow the official SDK (`dingtalk_stream/card_replier.py`,
//! `chatbot.py`) and the generated OpenAPI models (`card_1_0`: `{"success", "result"}`).
//! Error codes for these APIs are not documented in the protocol reference: the mock's are
//! named after the robot APIs' `invalidParameter.*` family.

// Handlers short-circuit with ready responses as the error side; boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::openapi::{error, fault_response, json_response, parse_body};
use crate::state::{Api, State, now_ms};

/// One call of a card API, as received.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CardCall {
    /// `METHOD /path`, e.g. `PUT /v1.0/card/streaming`.
    pub api: String,
    /// The JSON body.
    pub body: Value,
    /// When it arrived, epoch ms.
    pub at_ms: i64,
}

/// A card the bot created, with its state after every call so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CardRecord {
    /// `outTrackId` (`cardBizId` of the older robot cards).
    pub out_track_id: String,
    /// `cardTemplateId`.
    pub template_id: String,
    /// The card's data now: `cardData.cardParamMap` (string values), after updates.
    pub card_data: Map<String, Value>,
    /// Where it was delivered: `openSpaceId`s such as `dtv1.card//IM_ROBOT.user1` or
    /// `dtv1.card//IM_GROUP.cid...` (for the older robot cards, `IM_ROBOT.<userId>` /
    /// `IM_GROUP.<openConversationId>` too).
    pub spaces: Vec<String>,
    /// Streamed content per `key` (`PUT /v1.0/card/streaming`, appended unless `isFull`).
    pub streamed: BTreeMap<String, String>,
    /// Whether a streaming update said `isFinalize`.
    pub finalized: bool,
    /// Whether a streaming update said `isError`.
    pub failed: bool,
    /// How many times the data was updated (`PUT /v1.0/card/instances`, or the older update).
    pub updates: usize,
    /// Every call that concerned this card, in order.
    pub calls: Vec<CardCall>,
}

/// All cards, in creation order.
#[derive(Debug, Default)]
pub(crate) struct Cards {
    pub(crate) cards: Vec<CardRecord>,
}

impl Cards {
    fn get_mut(&mut self, id: &str) -> Option<&mut CardRecord> {
        self.cards.iter_mut().find(|c| c.out_track_id == id)
    }
}

fn bad(code: &str, message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, code, message)
}

/// Token, an injected fault for `fault_api`, body; the call is recorded against
/// `out_track_id` by the caller. A faulted call changes no card, as a refused call does not.
fn check(
    state: &State,
    headers: &HeaderMap,
    body: &str,
    fault_api: Option<Api>,
) -> Result<Value, Response> {
    let token = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !state.token_valid(token) {
        return Err(bad("InvalidAuthentication", "不合法的access_token"));
    }
    if let Some(f) = fault_api.and_then(|api| state.take_fault(api)) {
        return Err(fault_response(&f));
    }
    parse_body(body)
}

fn str_field<'a>(body: &'a Value, k: &str) -> &'a str {
    body.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// `cardData.cardParamMap`: a map of strings (DingTalk's model is `Map<String, String>`).
fn param_map(body: &Value) -> Result<Map<String, Value>, Response> {
    let map = body
        .get("cardData")
        .and_then(|d| d.get("cardParamMap"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    match map {
        Value::Object(m) if m.values().all(Value::is_string) => Ok(m),
        _ => Err(bad(
            "invalidParameter.cardData.invalid",
            "cardData.cardParamMap must map keys to strings",
        )),
    }
}

fn call(api: &str, body: &Value) -> CardCall {
    CardCall {
        api: api.to_owned(),
        body: body.clone(),
        at_ms: now_ms(),
    }
}

/// The spaces a deliver names, or the error answer.
fn spaces(state: &State, body: &Value) -> Result<Vec<(String, String)>, Response> {
    let open_space_id = str_field(body, "openSpaceId");
    let mut out = Vec::new();
    for space in open_space_id.split(';').filter(|s| !s.is_empty()) {
        let Some((kind, id)) = space
            .strip_prefix("dtv1.card//")
            .and_then(|s| s.split_once('.'))
        else {
            return Err(bad(
                "invalidParameter.openSpaceId.invalid",
                "openSpaceId is invalid",
            ));
        };
        match kind {
            "IM_ROBOT" => {
                if body.get("imRobotOpenDeliverModel").is_none() {
                    return Err(bad(
                        "invalidParameter.imRobotOpenDeliverModel.empty",
                        "imRobotOpenDeliverModel is required for IM_ROBOT",
                    ));
                }
            }
            "IM_GROUP" => {
                let robot = body
                    .get("imGroupOpenDeliverModel")
                    .and_then(|m| m.get("robotCode"))
                    .and_then(Value::as_str);
                if robot != Some(state.config.robot_code.as_str()) {
                    return Err(bad(
                        "invalidParameter.robotCode.auth",
                        "imGroupOpenDeliverModel.robotCode does not match the app",
                    ));
                }
                if !state.groups.lock().contains(id) {
                    return Err(bad(
                        "invalidParameter.openConversationId.invalid",
                        "openConversationId is invalid",
                    ));
                }
            }
            _ => {
                return Err(bad(
                    "invalidParameter.openSpaceId.invalid",
                    "openSpaceId is invalid",
                ));
            }
        }
        out.push((kind.to_owned(), id.to_owned()));
    }
    if out.is_empty() {
        return Err(bad(
            "invalidParameter.openSpaceId.empty",
            "openSpaceId is required",
        ));
    }
    Ok(out)
}

fn deliver_results(spaces: &[(String, String)]) -> Value {
    Value::Array(
        spaces
            .iter()
            .map(|(kind, id)| {
                json!({
                    "spaceType": kind, "spaceId": id, "success": true,
                    "carrierId": crate::state::random_hex(24),
                })
            })
            .collect(),
    )
}

impl CardRecord {
    fn new(
        id: String,
        template_id: String,
        card_data: Map<String, Value>,
        spaces: Vec<String>,
        first: CardCall,
    ) -> CardRecord {
        CardRecord {
            out_track_id: id,
            template_id,
            card_data,
            spaces,
            streamed: BTreeMap::new(),
            finalized: false,
            failed: false,
            updates: 0,
            calls: vec![first],
        }
    }
}

/// What a card endpoint does once the token and body are checked: the answer's JSON, or the
/// error answer.
type CardApi = fn(&State, &Value) -> Result<Value, Response>;

/// The axum handler for a card endpoint: the token, the faults injected for `fault_api` and
/// the body are checked ([`check`]), then `api` runs; its JSON is answered with 200.
pub(crate) fn endpoint(
    fault_api: Option<Api>,
    api: CardApi,
) -> impl Fn(AxState<Arc<State>>, HeaderMap, String) -> std::future::Ready<Response>
+ Clone
+ Send
+ Sync
+ 'static {
    move |AxState(state): AxState<Arc<State>>, headers: HeaderMap, body: String| {
        let answer = check(&state, &headers, &body, fault_api).and_then(|body| api(&state, &body));
        std::future::ready(match answer {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(r) => r,
        })
    }
}

/// The card `field` (`outTrackId` or `cardBizId`) of `body` names, or the `notExist` error.
fn card_mut<'a>(
    cards: &'a mut Cards,
    body: &Value,
    field: &str,
) -> Result<&'a mut CardRecord, Response> {
    cards.get_mut(str_field(body, field)).ok_or_else(|| {
        bad(
            &format!("invalidParameter.{field}.notExist"),
            &format!("no card with this {field}"),
        )
    })
}

fn push_spaces(card: &mut CardRecord, spaces: &[(String, String)]) {
    for (kind, sid) in spaces {
        card.spaces.push(format!("dtv1.card//{kind}.{sid}"));
    }
}

fn create_record(state: &State, body: &Value, api: &str) -> Result<String, Response> {
    let id = str_field(body, "outTrackId");
    if id.is_empty() {
        return Err(bad(
            "invalidParameter.outTrackId.empty",
            "outTrackId is required",
        ));
    }
    let template = str_field(body, "cardTemplateId");
    if template.is_empty() {
        return Err(bad(
            "invalidParameter.cardTemplateId.empty",
            "cardTemplateId is required",
        ));
    }
    let data = param_map(body)?;
    let mut cards = state.cards.lock();
    if cards.get_mut(id).is_some() {
        return Err(bad(
            "invalidParameter.outTrackId.duplicate",
            "a card with this outTrackId exists",
        ));
    }
    cards.cards.push(CardRecord::new(
        id.to_owned(),
        template.to_owned(),
        data,
        Vec::new(),
        call(api, body),
    ));
    Ok(id.to_owned())
}

/// `POST /v1.0/card/instances`.
pub(crate) fn create(state: &State, body: &Value) -> Result<Value, Response> {
    let id = create_record(state, body, "POST /v1.0/card/instances")?;
    Ok(json!({"success": true, "result": id}))
}

/// `POST /v1.0/card/instances/deliver`.
pub(crate) fn deliver(state: &State, body: &Value) -> Result<Value, Response> {
    card_mut(&mut state.cards.lock(), body, "outTrackId")?;
    let spaces = spaces(state, body)?;
    if let Ok(card) = card_mut(&mut state.cards.lock(), body, "outTrackId") {
        card.calls
            .push(call("POST /v1.0/card/instances/deliver", body));
        push_spaces(card, &spaces);
    }
    Ok(json!({"success": true, "result": deliver_results(&spaces)}))
}

/// `POST /v1.0/card/instances/createAndDeliver`.
pub(crate) fn create_and_deliver(state: &State, body: &Value) -> Result<Value, Response> {
    // Spaces are checked first: a refused delivery creates no card.
    let spaces = spaces(state, body)?;
    let id = create_record(state, body, "POST /v1.0/card/instances/createAndDeliver")?;
    if let Some(card) = state.cards.lock().get_mut(&id) {
        push_spaces(card, &spaces);
    }
    Ok(
        json!({"success": true, "result": {"outTrackId": id, "deliverResults": deliver_results(&spaces)}}),
    )
}

/// `PUT /v1.0/card/instances`: replaces the data, or merges it with
/// `cardUpdateOptions.updateCardDataByKey`.
pub(crate) fn update(state: &State, body: &Value) -> Result<Value, Response> {
    let data = param_map(body)?;
    let by_key = body
        .get("cardUpdateOptions")
        .and_then(|o| o.get("updateCardDataByKey"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut cards = state.cards.lock();
    let card = card_mut(&mut cards, body, "outTrackId")?;
    if by_key {
        card.card_data.extend(data);
    } else {
        card.card_data = data;
    }
    card.updates += 1;
    card.calls.push(call("PUT /v1.0/card/instances", body));
    Ok(json!({"success": true, "result": true}))
}

/// `PUT /v1.0/card/streaming` (AI cards).
pub(crate) fn streaming(state: &State, body: &Value) -> Result<Value, Response> {
    let key = str_field(body, "key").to_owned();
    if key.is_empty() || str_field(body, "guid").is_empty() {
        return Err(bad(
            "invalidParameter.streaming.invalid",
            "key and guid are required",
        ));
    }
    let content = str_field(body, "content").to_owned();
    let flag = |k: &str| body.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut cards = state.cards.lock();
    let card = card_mut(&mut cards, body, "outTrackId")?;
    let slot = card.streamed.entry(key).or_default();
    if flag("isFull") {
        *slot = content;
    } else {
        slot.push_str(&content);
    }
    card.finalized |= flag("isFinalize");
    card.failed |= flag("isError");
    card.calls.push(call("PUT /v1.0/card/streaming", body));
    Ok(json!({"success": true, "result": true}))
}

/// `cardData` of the older robot cards: a JSON string of an object.
fn legacy_data(body: &Value) -> Result<Map<String, Value>, Response> {
    body.get("cardData")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.as_object().cloned())
        .ok_or_else(|| {
            bad(
                "invalidParameter.cardData.invalid",
                "cardData must be a JSON string of an object",
            )
        })
}

/// Where an older robot card goes: the group, or the single-chat receiver.
fn legacy_space(state: &State, body: &Value) -> Result<String, Response> {
    if let Some(cid) = body.get("openConversationId").and_then(Value::as_str) {
        if !state.groups.lock().contains(cid) {
            return Err(bad(
                "invalidParameter.openConversationId.invalid",
                "openConversationId is invalid",
            ));
        }
        return Ok(format!("dtv1.card//IM_GROUP.{cid}"));
    }
    let user = body
        .get("singleChatReceiver")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.get("userId").and_then(Value::as_str).map(str::to_owned));
    match user {
        Some(u) if !u.is_empty() => Ok(format!("dtv1.card//IM_ROBOT.{u}")),
        _ => Err(bad(
            "invalidParameter.receiver.empty",
            "openConversationId or singleChatReceiver is required",
        )),
    }
}

fn legacy_answer() -> Value {
    json!({"processQueryKey": crate::state::random_hex(32)})
}

/// `POST /v1.0/im/v1.0/robot/interactiveCards/send` (`ChatbotHandler.reply_card`).
pub(crate) fn robot_card_send(state: &State, body: &Value) -> Result<Value, Response> {
    if str_field(body, "robotCode") != state.config.robot_code {
        return Err(bad(
            "invalidParameter.robotCode.auth",
            "This app's appkey does not match the bot's robotCode",
        ));
    }
    let id = str_field(body, "cardBizId").to_owned();
    if id.is_empty() {
        return Err(bad(
            "invalidParameter.cardBizId.empty",
            "cardBizId is required",
        ));
    }
    let data = legacy_data(body)?;
    let space = legacy_space(state, body)?;
    state.cards.lock().cards.push(CardRecord::new(
        id,
        str_field(body, "cardTemplateId").to_owned(),
        data,
        vec![space],
        call("POST /v1.0/im/v1.0/robot/interactiveCards/send", body),
    ));
    Ok(legacy_answer())
}

/// `PUT /v1.0/im/robots/interactiveCards` (`ChatbotHandler.update_card`).
pub(crate) fn robot_card_update(state: &State, body: &Value) -> Result<Value, Response> {
    let data = legacy_data(body)?;
    let mut cards = state.cards.lock();
    let card = card_mut(&mut cards, body, "cardBizId")?;
    card.card_data = data;
    card.updates += 1;
    card.calls
        .push(call("PUT /v1.0/im/robots/interactiveCards", body));
    Ok(legacy_answer())
}
