//! The preset channels a task may name.

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::auth::ApiKey;
use crate::error::ErrorBody;
pub use workflow_dispatch::api::ChannelListResponse;

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
