//! The OpenAPI document's frame (info, security, the request schemas of
//! [`workflow_dispatch::api::schema`]). Its paths come from the handlers' `#[utoipa::path]`
//! attributes as [`crate::routes::api`] routes them, so no path list is kept by hand; this
//! module knows nothing of the routes.

use utoipa::{Modify, OpenApi};
pub use workflow_dispatch::api::schema::restrict_channels;
use workflow_dispatch::api::schema::{
    CreateTaskBody, CreateTaskForms, EvidenceDataBody, FlatTaskBody,
};

/// The OpenAPI description of the API (served at `/openapi.json`).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "dispatcher",
        description = "Closed-loop task dispatch: queue by priority, deliver by signed webhook, retry, report back"
    ),
    components(schemas(CreateTaskForms, FlatTaskBody, CreateTaskBody, EvidenceDataBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
