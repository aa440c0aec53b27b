//! Interactive cards, called as the official SDK's `CardReplier` calls them: create an instance
//! of a template (`POST /v1.0/card/instances`), deliver it to a chat
//! (`POST /v1.0/card/instances/deliver`), then update it in place (`PUT /v1.0/card/instances`).
//! The card is named by an `outTrackId` the caller chooses; its variables are a
//! `cardParamMap` of strings.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::client::{Api, DingTalkSender};
use crate::error::{Error, Result};

/// Where a card is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardSpace {
    /// The robot's one-to-one chat with this user (staff id): `dtv1.card//IM_ROBOT.<userId>`.
    User(String),
    /// A group (a group callback's `conversationId`): `dtv1.card//IM_GROUP.<conversationId>`.
    Group(String),
}

impl CardSpace {
    /// The `openSpaceId` DingTalk takes.
    pub fn open_space_id(&self) -> String {
        match self {
            CardSpace::User(u) => format!("dtv1.card//IM_ROBOT.{u}"),
            CardSpace::Group(c) => format!("dtv1.card//IM_GROUP.{c}"),
        }
    }
}

/// A card's variables: names of the template's variables to their (string) values.
pub type CardParams = BTreeMap<String, String>;

fn card_data(params: &CardParams) -> Value {
    json!({"cardParamMap": params})
}

/// DingTalk reports delivery per space inside a 200: `{"success":…, "result":[{"success":…,
/// "errorMsg":…}]}`. Either `false` is a failure.
fn check_delivered(v: &Value) -> Result<()> {
    let failed = |detail: String| {
        Err(Error::UnexpectedResponse {
            status: 200,
            detail,
        })
    };
    if v.get("success").and_then(Value::as_bool) == Some(false) {
        return failed("card delivery answered success=false".into());
    }
    for r in v
        .get("result")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if r.get("success").and_then(Value::as_bool) == Some(false) {
            let msg: String = r
                .get("errorMsg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            return failed(format!("card not delivered: {msg}"));
        }
    }
    Ok(())
}

// === impl DingTalkSender ===

impl DingTalkSender {
    /// Creates a card from `template_id` with `params` under the caller's `out_track_id` (unique
    /// per card; it names the card in [`DingTalkSender::update_card`]) and delivers it to
    /// `space`, as `CardReplier.create_and_send_card` does (no forwarding; `userIdType` 1 =
    /// staff ids).
    ///
    /// # Errors
    ///
    /// Either call failed ([`Error::Api`] with DingTalk's code, throttling past the retries), or
    /// the delivery answer reported the space as failed ([`Error::UnexpectedResponse`]).
    pub async fn create_and_deliver_card(
        &self,
        template_id: &str,
        out_track_id: &str,
        space: &CardSpace,
        params: &CardParams,
    ) -> Result<()> {
        let create = json!({
            "cardTemplateId": template_id,
            "outTrackId": out_track_id,
            "cardData": card_data(params),
            "imGroupOpenSpaceModel": {"supportForward": false},
            "imRobotOpenSpaceModel": {"supportForward": false},
        });
        self.api_call(Api::CardCreate, &create).await?;
        let mut deliver = json!({
            "outTrackId": out_track_id,
            "userIdType": 1,
            "openSpaceId": space.open_space_id(),
        });
        match space {
            CardSpace::Group(_) => {
                deliver["imGroupOpenDeliverModel"] = json!({"robotCode": self.robot_code()});
            }
            CardSpace::User(_) => {
                deliver["imRobotOpenDeliverModel"] = json!({"spaceType": "IM_ROBOT"});
            }
        }
        let v = self.api_call(Api::CardDeliver, &deliver).await?;
        check_delivered(&v)
    }

    /// Replaces the variables of a delivered card (`PUT /v1.0/card/instances`,
    /// `CardReplier.put_card_data`); the chat shows the new values in place.
    ///
    /// # Errors
    ///
    /// The call failed (e.g. an unknown `outTrackId`), or throttling outlasted the retries.
    pub async fn update_card(&self, out_track_id: &str, params: &CardParams) -> Result<()> {
        let body = json!({"outTrackId": out_track_id, "cardData": card_data(params)});
        let v = self.api_call(Api::CardUpdate, &body).await?;
        if v.get("success").and_then(Value::as_bool) == Some(false) {
            return Err(Error::UnexpectedResponse {
                status: 200,
                detail: "card update answered success=false".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_are_named_as_dingtalk_names_them() {
        assert_eq!(
            CardSpace::User("u1".into()).open_space_id(),
            "dtv1.card//IM_ROBOT.u1"
        );
        assert_eq!(
            CardSpace::Group("cid==".into()).open_space_id(),
            "dtv1.card//IM_GROUP.cid=="
        );
    }

    #[test]
    fn a_space_reported_failed_inside_a_200_is_an_error() {
        assert!(check_delivered(&json!({"success": true, "result": [{"success": true}]})).is_ok());
        assert!(check_delivered(&Value::Null).is_ok());
        let e = check_delivered(
            &json!({"success": true, "result": [{"success": false, "errorMsg": "no robot"}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no robot"), "{e}");
        assert!(check_delivered(&json!({"success": false})).is_err());
    }
}
