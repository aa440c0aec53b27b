//! The operator dashboard, served by the dispatcher under `/ui/`: an overview with live
//! charts, the task list with filters and live updates, a task's page with its deliveries,
//! attempts and callback and Retry / Cancel, targets with their breakers, and the channels.
//!
//! - Server-rendered HTML ([`maud`], which escapes every value) plus one small script
//!   (`assets/app.js`) that polls the fragments and the overview's JSON and draws the chart
//!   on a canvas. Everything is embedded in the binary: no CDN, no Node toolchain. No
//!   JavaScript library is vendored: the chart is two lines on a canvas and the live parts
//!   are `fetch` + `innerHTML` of server-escaped fragments, which a library would not shorten.
//! - Same data as the API: the handlers call the same [`workflow_dispatch::WorkflowManager`]
//!   methods and the same query validation (`ListQuery::to_filter`) as `/workflow/tasks`.
//! - Sessions ([`session`]): `GET /ui/login?key=<api key>` (or the form) sets an HttpOnly,
//!   SameSite=Strict cookie and redirects to `/ui/` without the key in the URL. Without a
//!   session a page redirects to the login and a data request is 401. Every POST needs the
//!   session's CSRF token. A strict Content-Security-Policy (`script-src 'self'`, no inline
//!   script or style) and `frame-ancestors 'none'` on every response.
//! - Behind a reverse proxy on a sub-path: links, redirects and the cookie's path use
//!   `public_url`'s path (`https://ops.example/dispatch` serves `/ui/` as `/dispatch/ui/`).
//! - Chinese labels by default, English with `?lang=en` (remembered in a cookie).

mod pages;
pub mod session;
pub mod stats;

use std::collections::BTreeMap;
use std::str::FromStr as _;

use axum::Router;
use axum::extract::{Form, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use workflow_core::{CancelOutcome, EngineError, StoreError, Task, TaskFilter, TaskStatus};
use workflow_dispatch::api::ListQuery;

use crate::AppState;
use crate::auth::key_matches;
pub use session::{SESSION_TTL, Session, Sessions};
pub use stats::Stats;

/// What the dashboard needs besides the API's state.
#[derive(Debug, Clone)]
pub struct Ui {
    /// Session cookies and CSRF tokens.
    pub sessions: Sessions,
    /// Live rates of this instance.
    pub stats: Stats,
    /// `public_url`'s path without the trailing slash (`""` at the root).
    pub prefix: String,
    /// Whether cookies are marked `Secure` (`public_url` is https).
    pub secure: bool,
}

impl Ui {
    /// The dashboard for a dispatcher reachable at `public_url`.
    pub fn new(public_url: &str, sessions: Sessions, stats: Stats) -> Ui {
        let after_scheme = public_url.split_once("://").map_or(public_url, |(_, r)| r);
        let prefix = after_scheme
            .find('/')
            .map_or("", |i| &after_scheme[i..])
            .trim_end_matches('/')
            .to_owned();
        Ui {
            sessions,
            stats,
            prefix,
            secure: public_url.starts_with("https://"),
        }
    }

    /// The dashboard's path for `rest` (`"/tasks"` becomes `"<prefix>/ui/tasks"`).
    pub fn path(&self, rest: &str) -> String {
        format!("{}/ui{rest}", self.prefix)
    }
}

/// The login link the startup banner prints.
pub fn login_url(public_url: &str) -> String {
    format!("{}/ui/login", public_url.trim_end_matches('/'))
}

/// The dashboard's routes (merged into the API router, whose outer layers they share).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ui",
            get(|State(s): State<AppState>| async move { Redirect::to(&s.ui.path("/")) }),
        )
        .route("/ui/", get(overview))
        .route("/ui/overview.json", get(overview_json))
        .route("/ui/login", get(login_page).post(login_form))
        .route("/ui/logout", post(logout))
        .route("/ui/tasks", get(tasks))
        .route("/ui/tasks/rows", get(task_rows))
        .route("/ui/tasks/retry-failed", post(retry_failed))
        .route("/ui/tasks/{task_id}", get(task))
        .route("/ui/tasks/{task_id}/live", get(task_live))
        .route("/ui/tasks/{task_id}/{action}", post(task_action))
        .route("/ui/targets", get(targets))
        .route("/ui/channels", get(channels))
        .route("/ui/assets/app.js", get(app_js))
        .route("/ui/assets/app.css", get(app_css))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The Content-Security-Policy of every dashboard response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const LANG_COOKIE: &str = "dispatcher_ui_lang";

/// Security headers on every dashboard response, and the language cookie when `?lang=` asks.
async fn security_headers(request: Request, next: Next) -> Response {
    let lang = query_param(request.uri().query(), "lang").and_then(|l| Lang::parse(&l));
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if let Some(lang) = lang {
        let cookie = format!(
            "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax",
            lang.code()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
    response
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url_pairs(query?).find(|(k, _)| k == name).map(|(_, v)| v)
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The labels' language: Chinese unless asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// 中文 (default).
    #[default]
    Zh,
    /// English.
    En,
}

impl Lang {
    fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh" | "zh-CN" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The label in this language.
    pub fn t(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    fn of(parts: &Parts) -> Lang {
        query_param(parts.uri.query(), "lang")
            .as_deref()
            .or_else(|| cookie(&parts.headers, LANG_COOKIE))
            .and_then(Lang::parse)
            .unwrap_or_default()
    }
}

/// A request with a valid session: what every page and action takes first. Without one a
/// page (GET) redirects to the login and anything else is 403.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    session: Session,
    lang: Lang,
    csrf: String,
}

/// A data request (fragment or JSON) with a valid session; without one it is 401 and no data.
#[derive(Debug, Clone)]
pub(crate) struct DataViewer {
    lang: Lang,
}

fn session_of(parts: &Parts, state: &AppState) -> Option<Session> {
    let value = cookie(&parts.headers, session::COOKIE)?;
    state
        .ui
        .sessions
        .check(value, &state.api_keys, Utc::now().timestamp())
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let lang = Lang::of(parts);
        match session_of(parts, state) {
            Some(session) => Ok(Viewer {
                csrf: state.ui.sessions.csrf(&session),
                session,
                lang,
            }),
            None if parts.method == Method::GET => {
                Err(Redirect::to(&state.ui.path("/login")).into_response())
            }
            None => Err(UiError::new(
                StatusCode::FORBIDDEN,
                lang.t(
                    "没有有效的会话：请先登录。",
                    "No valid session: log in first.",
                ),
            )
            .into_response()),
        }
    }
}

impl FromRequestParts<AppState> for DataViewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session_of(parts, state) {
            Some(_) => Ok(DataViewer {
                lang: Lang::of(parts),
            }),
            None => Err((StatusCode::UNAUTHORIZED, "no dashboard session").into_response()),
        }
    }
}

/// A dashboard error: a small HTML page with the status.
#[derive(Debug)]
pub(crate) struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    fn new(status: StatusCode, message: impl Into<String>) -> UiError {
        UiError {
            status,
            message: message.into(),
        }
    }
}

impl From<EngineError> for UiError {
    fn from(e: EngineError) -> UiError {
        match e {
            EngineError::Store(StoreError::NotFound(_)) => {
                UiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            EngineError::Store(StoreError::InvalidState { .. }) => {
                UiError::new(StatusCode::CONFLICT, e.to_string())
            }
            other => {
                tracing::error!(error = %other, "dashboard: store error");
                UiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store error (see the logs)",
                )
            }
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        (self.status, pages::error_page(self.status, &self.message)).into_response()
    }
}

type UiResult<T> = Result<T, UiError>;

fn no_such_task(lang: Lang, id: &str) -> UiError {
    UiError::new(
        StatusCode::NOT_FOUND,
        format!("{} {id}", lang.t("没有这个任务：", "No such task:")),
    )
}

/// A task with its attempts and events, or 404.
async fn task_view(
    state: &AppState,
    lang: Lang,
    id: &str,
) -> UiResult<workflow_dispatch::TaskStatusView> {
    state
        .manager
        .get_task_status(id)
        .await?
        .ok_or_else(|| no_such_task(lang, id))
}

// === login ===

#[derive(Debug, Deserialize)]
struct LoginQuery {
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
}

async fn login_page(
    State(state): State<AppState>,
    parts: Parts0,
    Query(q): Query<LoginQuery>,
) -> Response {
    match q.key {
        Some(key) => login(&state, parts.lang, &key),
        None => pages::login(&state.ui, parts.lang, None).into_response(),
    }
}

async fn login_form(
    State(state): State<AppState>,
    parts: Parts0,
    Form(form): Form<LoginForm>,
) -> Response {
    login(&state, parts.lang, &form.key)
}

fn login(state: &AppState, lang: Lang, key: &str) -> Response {
    let key = key.trim();
    if key.is_empty() || !key_matches(key, &state.api_keys) {
        let message = lang.t("API 密钥无效。", "Invalid API key.");
        return (
            StatusCode::UNAUTHORIZED,
            pages::login(&state.ui, lang, Some(message)),
        )
            .into_response();
    }
    tracing::info!("dashboard: session opened");
    let session = state.ui.sessions.issue(key, Utc::now().timestamp());
    let cookie = format!(
        "{}={}; Path={}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        session::COOKIE,
        session.value(),
        state.ui.path(""),
        SESSION_TTL.as_secs(),
        if state.ui.secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&state.ui.path("/")).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The language of a request that needs no session.
struct Parts0 {
    lang: Lang,
}

impl<S: Send + Sync> FromRequestParts<S> for Parts0 {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Parts0 {
            lang: Lang::of(parts),
        })
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn check_csrf(state: &AppState, viewer: &Viewer, token: &str) -> UiResult<()> {
    if state.ui.sessions.csrf_matches(&viewer.session, token) {
        Ok(())
    } else {
        tracing::warn!("dashboard: a POST without the session's CSRF token was refused");
        Err(UiError::new(
            StatusCode::FORBIDDEN,
            viewer.lang.t(
                "请求缺少有效的 CSRF 令牌，已拒绝。",
                "The request has no valid CSRF token and was refused.",
            ),
        ))
    }
}

async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<CsrfForm>,
) -> UiResult<Response> {
    check_csrf(&state, &viewer, &form.csrf)?;
    let cookie = format!(
        "{}=; Path={}; Max-Age=0; HttpOnly; SameSite=Strict",
        session::COOKIE,
        state.ui.path("")
    );
    let mut response = Redirect::to(&state.ui.path("/login")).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

// === overview ===

/// What the overview shows; also its live JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Overview {
    rates: stats::Rates,
    /// Non-pruned tasks by status.
    by_status: BTreeMap<String, u64>,
    /// Waiting or running tasks by priority.
    backlog: BTreeMap<String, u64>,
    open_breakers: usize,
    in_flight: usize,
}

async fn overview_of(state: &AppState) -> UiResult<Overview> {
    let counts = state
        .store
        .counts()
        .await
        .map_err(|e| UiError::from(EngineError::from(e)))?;
    let mut by_status = BTreeMap::new();
    let mut backlog = BTreeMap::new();
    for (status, priority, n) in &counts.by_status_priority {
        *by_status.entry(status.to_string()).or_default() += n;
        if !status.is_final() {
            *backlog.entry(priority.to_string()).or_default() += n;
        }
    }
    let open_breakers = state.manager.client().map_or(0, |c| {
        c.breakers()
            .snapshot()
            .iter()
            .filter(|(_, s)| s.state != circuit_breaker::State::Closed)
            .count()
    });
    Ok(Overview {
        rates: state.ui.stats.rates(Utc::now().timestamp()),
        by_status,
        backlog,
        open_breakers,
        in_flight: state.manager.engine().in_flight(),
    })
}

async fn overview(State(state): State<AppState>, viewer: Viewer) -> UiResult<Response> {
    let data = overview_of(&state).await?;
    Ok(pages::overview(&state.ui, &viewer, &data).into_response())
}

async fn overview_json(State(state): State<AppState>, _: DataViewer) -> UiResult<Response> {
    Ok(axum::Json(overview_of(&state).await?).into_response())
}

// === tasks ===

/// The task list's filters, as the form sends them (empty means any).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub(crate) struct TaskQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    task_type: String,
    #[serde(default)]
    risk_level: String,
    /// `YYYY-MM-DDTHH:MM` (UTC), as `<input type=datetime-local>` sends it, or RFC 3339.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    cursor: String,
    /// A notice to show (after a bulk retry).
    #[serde(default, skip_serializing)]
    retried: Option<u64>,
}

/// A [`TaskQuery`] checked: the store's filter plus what is matched in the package.
struct Selection {
    filter: TaskFilter,
    task_type: Option<String>,
    risk_level: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

fn nonempty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| t.and_utc())
        })
}

impl TaskQuery {
    /// The checked selection, or every invalid field named.
    fn select(&self, page_size: usize) -> Result<Selection, Vec<(String, String)>> {
        let target = match (nonempty(&self.channel), nonempty(&self.target)) {
            (Some(channel), _) => Some(format!("channel:{channel}")),
            (None, target) => target,
        };
        let list = ListQuery {
            status: nonempty(&self.status),
            priority: nonempty(&self.priority),
            target,
            limit: Some(page_size.to_string()),
            cursor: nonempty(&self.cursor),
        };
        let mut errors = Vec::new();
        let filter = match list.to_filter() {
            Ok(f) => Some(f),
            Err(e) => {
                errors.extend(e.errors.into_iter().map(|f| (f.field, f.reason)));
                None
            }
        };
        let mut time = |field: &str, value: &str| {
            let value = nonempty(value)?;
            let parsed = parse_time(&value);
            if parsed.is_none() {
                errors.push((
                    field.to_owned(),
                    "expected YYYY-MM-DDTHH:MM (UTC)".to_owned(),
                ));
            }
            parsed
        };
        let (from, to) = (time("from", &self.from), time("to", &self.to));
        let risk_level = nonempty(&self.risk_level).map(|r| r.to_ascii_lowercase());
        if let Some(r) = &risk_level
            && task_package::RiskLevel::from_str(r).is_err()
        {
            errors.push(("risk_level".into(), "unknown risk level".into()));
        }
        match filter {
            Some(filter) if errors.is_empty() => Ok(Selection {
                filter,
                task_type: nonempty(&self.task_type),
                risk_level,
                from,
                to,
            }),
            _ => Err(errors),
        }
    }

    /// The query string of these filters (without the cursor), for links and the live rows.
    fn query_string(&self, with_cursor: bool) -> String {
        let mut q = self.clone();
        if !with_cursor {
            q.cursor.clear();
        }
        let pairs: Vec<(&str, &str)> = [
            ("status", q.status.as_str()),
            ("priority", q.priority.as_str()),
            ("channel", q.channel.as_str()),
            ("target", q.target.as_str()),
            ("task_type", q.task_type.as_str()),
            ("risk_level", q.risk_level.as_str()),
            ("from", q.from.as_str()),
            ("to", q.to.as_str()),
            ("cursor", q.cursor.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

impl Selection {
    fn matches(&self, task: &Task) -> bool {
        let package = workflow_dispatch::DeliveryPayload::read(&task.payload)
            .map(|p| p.package)
            .ok();
        let field = |path: &[&str]| {
            let mut v = package?;
            for p in path {
                v = v.get(*p)?;
            }
            v.as_str()
        };
        self.task_type
            .as_deref()
            .is_none_or(|t| field(&["task_type"]) == Some(t))
            && self
                .risk_level
                .as_deref()
                .is_none_or(|r| field(&["evidence_data", "risk_level"]) == Some(r))
            && self.to.is_none_or(|to| task.created_at <= to)
    }
}

/// Tasks shown per page.
const PAGE: usize = 50;
/// Tasks read per page at most when filtering on the package (task type, risk level, time):
/// a page may then hold fewer than [`PAGE`] matches, and its "next" link goes on from where
/// the scan stopped.
const SCAN: usize = 2_000;

/// A page of matching tasks, newest first, and the cursor after it.
async fn select_tasks(
    state: &AppState,
    selection: &Selection,
) -> UiResult<(Vec<Task>, Option<i64>)> {
    let mut filter = selection.filter.clone();
    let mut found = Vec::new();
    let mut scanned = 0;
    loop {
        let page = state.manager.list_tasks(&filter).await?;
        scanned += page.tasks.len();
        for task in page.tasks {
            if selection.from.is_some_and(|from| task.created_at < from) {
                // Newest first: everything after this is older still.
                return Ok((found, None));
            }
            let seq = task.seq;
            if selection.matches(&task) {
                found.push(task);
                if found.len() == PAGE {
                    return Ok((found, Some(seq)));
                }
            }
        }
        match page.next_cursor {
            Some(cursor) if scanned < SCAN => filter.before_seq = Some(cursor),
            next => return Ok((found, next)),
        }
    }
}

fn invalid(lang: Lang, errors: &[(String, String)]) -> UiError {
    let list = errors
        .iter()
        .map(|(f, r)| format!("{f}: {r}"))
        .collect::<Vec<_>>()
        .join("; ");
    UiError::new(
        StatusCode::BAD_REQUEST,
        format!("{} {list}", lang.t("筛选条件无效：", "Invalid filter:")),
    )
}

async fn tasks(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<TaskQuery>,
) -> UiResult<Response> {
    if let Some(id) = nonempty(&q.id) {
        // Only whether it exists: its attempts and events are read by the page it goes to.
        let found = state
            .store
            .get(&id)
            .await
            .map_err(|e| UiError::from(EngineError::from(e)))?;
        return match found {
            Some(_) => Ok(
                Redirect::to(&state.ui.path(&format!("/tasks/{}", encode(&id)))).into_response(),
            ),
            None => Err(no_such_task(viewer.lang, &id)),
        };
    }
    let selection = q.select(PAGE).map_err(|e| invalid(viewer.lang, &e))?;
    let (tasks, next) = select_tasks(&state, &selection).await?;
    Ok(pages::tasks(&state.ui, &viewer, &q, &tasks, next).into_response())
}

async fn task_rows(
    State(state): State<AppState>,
    viewer: DataViewer,
    Query(q): Query<TaskQuery>,
) -> UiResult<Response> {
    let selection = q.select(PAGE).map_err(|e| invalid(viewer.lang, &e))?;
    let (tasks, _) = select_tasks(&state, &selection).await?;
    Ok(pages::task_rows(&state.ui, viewer.lang, &tasks).into_response())
}

#[derive(Debug, Deserialize)]
struct BulkForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    query: TaskQuery,
}

/// Failed tasks retried at most per bulk retry.
const BULK_LIMIT: usize = 1_000;

async fn retry_failed(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<BulkForm>,
) -> UiResult<Response> {
    check_csrf(&state, &viewer, &form.csrf)?;
    let mut q = form.query;
    q.status = TaskStatus::Failed.to_string();
    q.cursor.clear();
    let mut selection = q.select(500).map_err(|e| invalid(viewer.lang, &e))?;
    let mut retried = 0u64;
    let mut seen = 0;
    'pages: loop {
        let page = state.manager.list_tasks(&selection.filter).await?;
        for task in &page.tasks {
            seen += 1;
            if selection.from.is_some_and(|from| task.created_at < from) {
                break 'pages;
            }
            if selection.matches(task) {
                match state.manager.retry_task(&task.id).await {
                    Ok(_) => retried += 1,
                    // Retried meanwhile by someone else: not an error of this request.
                    Err(EngineError::Store(
                        StoreError::InvalidState { .. } | StoreError::NotFound(_),
                    )) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if seen >= BULK_LIMIT {
                break 'pages;
            }
        }
        // Retried tasks leave `failed`, so the next page starts after the last one seen.
        match page.next_cursor {
            Some(c) => selection.filter.before_seq = Some(c),
            None => break,
        }
    }
    tracing::info!(retried, "dashboard: bulk retry of failed tasks");
    let mut back = q.clone();
    back.status = TaskStatus::Failed.to_string();
    let qs = back.query_string(false);
    let sep = if qs.is_empty() { "" } else { "&" };
    Ok(Redirect::to(&state.ui.path(&format!("/tasks?{qs}{sep}retried={retried}"))).into_response())
}

/// A path segment, percent-encoded (task ids are `wf_<digits>_<hex>`, but any id can be asked for).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn task(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(task_id): Path<String>,
) -> UiResult<Response> {
    let view = task_view(&state, viewer.lang, &task_id).await?;
    Ok(pages::task(&state.ui, &viewer, &view).into_response())
}

async fn task_live(
    State(state): State<AppState>,
    viewer: DataViewer,
    Path(task_id): Path<String>,
) -> UiResult<Response> {
    let view = task_view(&state, viewer.lang, &task_id).await?;
    Ok(pages::task_live(viewer.lang, &view).into_response())
}

async fn task_action(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((task_id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> UiResult<Response> {
    check_csrf(&state, &viewer, &form.csrf)?;
    let notice = match action.as_str() {
        "retry" => {
            state.manager.retry_task(&task_id).await?;
            "retried"
        }
        "cancel" => match state.manager.cancel_task(&task_id).await? {
            CancelOutcome::Cancelled(_) | CancelOutcome::Requested(_) => "cancelled",
            CancelOutcome::AlreadyFinal(t) => {
                return Err(UiError::new(
                    StatusCode::CONFLICT,
                    format!("task is already {}", t.status),
                ));
            }
        },
        _ => return Err(UiError::new(StatusCode::NOT_FOUND, "no such action")),
    };
    tracing::info!(task_id, action, "dashboard: task action");
    Ok(Redirect::to(
        &state
            .ui
            .path(&format!("/tasks/{}?done={notice}", encode(&task_id))),
    )
    .into_response())
}

// === targets and channels ===

/// One row of the targets page.
pub(crate) struct TargetRow {
    key: String,
    breaker: circuit_breaker::Snapshot,
    /// Tasks being delivered to it now (all instances).
    running: usize,
    /// Median duration of the last attempts of its newest tasks.
    latency_ms: Option<u64>,
}

/// Targets shown on the targets page at most.
const MAX_TARGETS: usize = 200;

/// Tasks whose last attempt makes a target's recent latency.
const LATENCY_SAMPLE: usize = 10;

async fn recent_latency(state: &AppState, target: &str) -> UiResult<Option<u64>> {
    let newest = state
        .manager
        .list_tasks(&TaskFilter {
            target: Some(target.to_owned()),
            limit: LATENCY_SAMPLE,
            ..TaskFilter::default()
        })
        .await?;
    let mut durations = Vec::new();
    for task in newest.tasks.iter().filter(|t| t.attempt > 0) {
        let attempts = state
            .store
            .attempts(&task.id)
            .await
            .map_err(|e| UiError::from(EngineError::from(e)))?;
        durations.extend(attempts.last().map(|a| a.duration_ms));
    }
    durations.sort_unstable();
    Ok(durations.get(durations.len() / 2).copied())
}

async fn targets(State(state): State<AppState>, viewer: Viewer) -> UiResult<Response> {
    let mut snapshot = state
        .manager
        .client()
        .map(|c| c.breakers().snapshot())
        .unwrap_or_default();
    // Each row costs a few store reads: a dispatcher that has seen thousands of endpoints
    // shows the first ones by name, and says how many there are.
    snapshot.sort_by(|a, b| a.0.cmp(&b.0));
    let total = snapshot.len();
    snapshot.truncate(MAX_TARGETS);
    let mut rows = Vec::with_capacity(snapshot.len());
    for (key, snap) in snapshot {
        let running = state
            .manager
            .list_tasks(&TaskFilter {
                status: Some(TaskStatus::Processing),
                target: Some(key.clone()),
                limit: 1_000,
                ..TaskFilter::default()
            })
            .await?
            .tasks
            .len();
        let latency = recent_latency(&state, &key).await?;
        rows.push(TargetRow {
            key,
            breaker: snap,
            running,
            latency_ms: latency,
        });
    }
    Ok(pages::targets(&state.ui, &viewer, &rows, total).into_response())
}

async fn channels(State(state): State<AppState>, viewer: Viewer) -> Response {
    pages::channels(
        &state.ui,
        &viewer,
        &state.manager.channels().views(),
        &state.manager.routes().views(),
    )
    .into_response()
}

// === assets ===

/// An embedded asset; cached briefly, as a new binary may change it.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_public_urls_path() {
        let ui = |u: &str| Ui::new(u, Sessions::new(b"s"), Stats::default());
        assert_eq!(ui("http://127.0.0.1:8080").path("/"), "/ui/");
        assert_eq!(
            ui("https://ops.example/dispatch/").path("/tasks"),
            "/dispatch/ui/tasks"
        );
        assert!(ui("https://ops.example/dispatch").secure);
        assert!(!ui("http://ops.example").secure);
    }

    #[test]
    fn filters_name_every_invalid_field() {
        let q = TaskQuery {
            status: "nope".into(),
            risk_level: "extreme".into(),
            from: "yesterday".into(),
            to: "2026-12-03T10:00".into(),
            ..TaskQuery::default()
        };
        let errors = q.select(PAGE).err().unwrap();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["status", "from", "risk_level"]);
        let ok = TaskQuery {
            channel: "ops".into(),
            target: "ignored when a channel is named".into(),
            risk_level: "HIGH".into(),
            from: "2026-12-03T10:00".into(),
            ..TaskQuery::default()
        }
        .select(PAGE)
        .ok()
        .unwrap();
        assert_eq!(ok.filter.target.as_deref(), Some("channel:ops"));
        assert_eq!(ok.risk_level.as_deref(), Some("high"));
        assert_eq!(ok.from.unwrap().to_rfc3339(), "2026-12-03T10:00:00+00:00");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; dispatcher_ui=x.y.z; b=2"),
        );
        assert_eq!(cookie(&h, "dispatcher_ui"), Some("x.y.z"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
