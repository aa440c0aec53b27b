//! The preset channels a task may name.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::ApiKey;
use crate::error::ErrorBody;
use workflow_dispatch::channels::ChannelView;

/// The answer to `GET /workflow/channels`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChannelListResponse {
    /// `"success"`.
    pub status: String,
    /// The channels, by name: names, kinds and limits, never URLs or secrets.
    pub channels: Vec<ChannelView>,
}

/// Lists the preset channels (name, kind, rate limits); never their URLs or secrets.
#[utoipa::path(
    get, path = "/workflow/channels", tag = "channels",
    responses(
        (status = 200, description = "The channels", body = ChannelListResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn list_channels(
    _: ApiKey,
    State(state): State<AppState>,
) -> Json<ChannelListResponse> {
    Json(ChannelListResponse {
        status: "success".to_owned(),
        channels: state.manager.channels().views(),
    })
}
