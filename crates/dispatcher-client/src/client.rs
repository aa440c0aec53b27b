//! [`Client`] and its builder: one method per API endpoint, retries of busy answers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{self, BoxStream, StreamExt as _};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use retry_policy::{Jitter, RetryPolicy};
use serde::de::DeserializeOwned;
use task_package::{CreateTaskRequest, Priority, TaskPackage};
use workflow_dispatch::api::{
    CallbackRequest, ChannelListResponse, CreateTaskResponse, ListQuery, REPLAYED_MESSAGE,
    RouteListResponse, RouteTestResponse, TaskInfo, TaskListResponse, TaskStatusResponse,
};
use workflow_dispatch::channels::ChannelView;
use workflow_dispatch::routing::RouteView;

use crate::error::{Error, Result, retryable_status};

/// The dispatcher endpoints this client calls, as `(method, path template)` in the server's
/// OpenAPI spelling. A test compares them with the running server's `/openapi.json`, so the
/// client and the routes cannot drift apart. The operations routes (`/healthz`, `/readyz`,
/// `/metrics`, `/openapi.json`) are not wrapped.
///
/// There is no routes (routing rules) endpoint yet: routing rules are server configuration
/// only. When the server grows one, add it here and the drift test will ask for a method.
pub const ENDPOINTS: &[(&str, &str)] = &[
    CREATE_TASK,
    LIST_TASKS,
    GET_TASK,
    CANCEL_TASK,
    RETRY_TASK,
    CALLBACK,
    CHANNELS,
    ROUTES,
    TEST_ROUTE,
];

const CREATE_TASK: (&str, &str) = ("POST", "/workflow/tasks");
const LIST_TASKS: (&str, &str) = ("GET", "/workflow/tasks");
const GET_TASK: (&str, &str) = ("GET", "/workflow/tasks/{task_id}");
const CANCEL_TASK: (&str, &str) = ("POST", "/workflow/tasks/{task_id}/cancel");
const RETRY_TASK: (&str, &str) = ("POST", "/workflow/tasks/{task_id}/retry");
const CALLBACK: (&str, &str) = ("POST", "/workflow/tasks/{task_id}/callback");
const CHANNELS: (&str, &str) = ("GET", "/workflow/channels");
const ROUTES: (&str, &str) = ("GET", "/workflow/routes");
const TEST_ROUTE: (&str, &str) = ("POST", "/workflow/routes/test");

/// The header that makes a create safe to repeat: same key, same task.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A typed client of the dispatcher's HTTP API. Cheap to clone (an `Arc` inside); clones share
/// the connection pool.
///
/// Every call retries `503 Service Unavailable`, `429 Too Many Requests` and connection
/// failures on the configured [`RetryPolicy`], waiting at least the server's `Retry-After`
/// (capped by the policy's `max_delay`). Timeouts are retried only for requests that are safe
/// to repeat (reads, and creates, which always carry an `Idempotency-Key`). Other 4xx answers
/// are returned at once.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The base URL may carry credentials and the key is a secret: neither is shown.
        f.debug_struct("Client")
            .field("api_key", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]: `Client::builder().base_url(..).api_key(..).build()?`.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    api_key: Option<Secret>,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    user_agent: String,
}

/// A string never printed by `Debug`.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What [`Client::create_task`] sends: the seed's flat JSON form, the nested
/// [`CreateTaskRequest`] (the type the server parses), or a [`TaskPackage`] to deliver again;
/// plus an optional `Idempotency-Key`.
///
/// ```
/// use dispatcher_client::NewTask;
/// use task_package::Priority;
///
/// let flat = NewTask::from(task_package::examples::seed_flat_request())
///     .priority(Priority::High)
///     .idempotency_key("order-42");
/// # let _ = flat;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct NewTask {
    body: Body,
    idempotency_key: Option<String>,
}

#[derive(Debug, Clone)]
enum Body {
    Request(Box<CreateTaskRequest>),
    Json(serde_json::Value),
}

/// A created (or, for a repeated `Idempotency-Key`, found) task.
#[derive(Debug)]
#[non_exhaustive]
pub struct Created {
    /// The server's answer.
    pub response: CreateTaskResponse,
    /// Whether the key named a task that already existed (header `Idempotent-Replayed: true`):
    /// no second task was made.
    pub replayed: bool,
    /// The `Idempotency-Key` sent (the caller's, or the one generated for this call): send it
    /// again to repeat the create safely.
    pub idempotency_key: String,
}

impl Created {
    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.response.task_id
    }
}

// === impl NewTask ===

impl NewTask {
    /// A task from any JSON body the server accepts: the seed's flat form (evidence fields at
    /// the top level) or the nested form. The server validates it and answers 400 naming
    /// every bad field.
    pub fn json(body: serde_json::Value) -> NewTask {
        NewTask {
            body: Body::Json(body),
            idempotency_key: None,
        }
    }

    /// A task delivering `package`'s evidence to its `delivery_instructions.webhook_url`, at
    /// the default priority (change it with [`NewTask::priority`]). The server makes a new
    /// package (new `created_at`, its own callback URL and token).
    pub fn package(package: &TaskPackage) -> NewTask {
        let url = &package.delivery_instructions.webhook_url;
        NewTask::from(CreateTaskRequest {
            task_type: package.task_type.clone(),
            evidence_data: package.evidence_data.clone(),
            webhook_url: (!url.is_empty()).then(|| url.clone()),
            priority: Priority::default(),
            channel: None,
            channels: Vec::new(),
        })
    }

    /// Sets the queue priority.
    pub fn priority(mut self, priority: Priority) -> NewTask {
        match &mut self.body {
            Body::Request(r) => r.priority = priority,
            Body::Json(serde_json::Value::Object(o)) => {
                o.insert("priority".to_owned(), priority.as_str().into());
            }
            // Not an object: the server will refuse the body whatever its priority.
            Body::Json(_) => {}
        }
        self
    }

    /// Uses `key` as the `Idempotency-Key` (1 to 255 visible ASCII characters) instead of a
    /// generated one: every create with the same key gives the same task.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> NewTask {
        self.idempotency_key = Some(key.into());
        self
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        match &self.body {
            Body::Request(r) => serde_json::to_vec(r),
            Body::Json(v) => serde_json::to_vec(v),
        }
        .map_err(|e| Error::builder(format!("task body does not serialise: {e}")))
    }
}

impl From<CreateTaskRequest> for NewTask {
    fn from(request: CreateTaskRequest) -> NewTask {
        NewTask {
            body: Body::Request(Box::new(request)),
            idempotency_key: None,
        }
    }
}

impl From<&TaskPackage> for NewTask {
    fn from(package: &TaskPackage) -> NewTask {
        NewTask::package(package)
    }
}

impl From<TaskPackage> for NewTask {
    fn from(package: TaskPackage) -> NewTask {
        NewTask::package(&package)
    }
}

impl From<serde_json::Value> for NewTask {
    fn from(body: serde_json::Value) -> NewTask {
        NewTask::json(body)
    }
}

// === impl ClientBuilder ===

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: None,
            api_key: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry: default_retry(),
            user_agent: concat!("dispatcher-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// 3 retries from 250 ms, doubling with jitter, at most 30 s apart (also the cap on how long
/// a `Retry-After` is honoured).
fn default_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(30),
        jitter: Jitter::Full,
    }
}

impl ClientBuilder {
    /// The dispatcher's base URL, e.g. `http://127.0.0.1:8080` (a path prefix is kept).
    /// Required.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The API key, sent as `Authorization: Bearer <key>`. Needed by every call but
    /// [`Client::callback`], which authenticates with the task's callback token.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret(key.into()));
        self
    }

    /// How long one request may take, connecting included (default 30 s). Retries get a
    /// fresh timeout each.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How busy answers (503, 429) and connection failures are retried (default: 3 retries
    /// from 250 ms, doubling with jitter, at most 30 s apart). `Retry-After` raises a delay
    /// but never above `max_delay`.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Never retries: every error is returned at once.
    pub fn no_retry(mut self) -> Self {
        self.retry.max_retries = 0;
        self
    }

    /// The `User-Agent` (default `dispatcher-client/<version>`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Builds the client. TLS uses rustls with the `ring` provider and the platform's trust
    /// roots, passed explicitly: no process-wide crypto provider is installed.
    ///
    /// # Errors
    ///
    /// [`Error::is_builder`]: no or an invalid base URL (not http(s)), an API key that is not
    /// a valid header value, an invalid retry policy, or a TLS setup failure.
    pub fn build(self) -> Result<Client> {
        let raw = self
            .base_url
            .ok_or_else(|| Error::builder("base_url is required"))?;
        let base = Url::parse(raw.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .filter(|u| !u.cannot_be_a_base())
            .ok_or_else(|| Error::builder("base_url is not an absolute http(s) URL"))?;
        let auth = self
            .api_key
            .map(|Secret(k)| {
                let mut v = HeaderValue::try_from(format!("Bearer {}", k.trim()))
                    .map_err(|_| Error::builder("api_key is not a valid header value"))?;
                v.set_sensitive(true);
                Ok::<_, Error>(v)
            })
            .transpose()?;
        RetryPolicy::try_new(
            self.retry.max_retries,
            self.retry.base_delay,
            self.retry.max_delay,
            self.retry.jitter,
        )
        .map_err(|e| Error::builder(format!("invalid retry policy: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            // The API never redirects; following one could send the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls_config()?)
            .build()
            .map_err(|e| Error::builder(format!("http client: {}", e.without_url())))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                retry: self.retry,
            }),
        })
    }
}

/// rustls with `ring` and the platform's roots, offering h2 and http/1.1.
fn tls_config() -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| Error::builder(format!("tls trust roots: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::builder(format!("tls protocol versions: {e}")))?
        .dangerous()
        // Not "dangerous": the platform verifier checks chains and names like the default
        // WebPKI verifier, only with the platform's roots.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// One request, ready to be sent (again).
struct Call<'a> {
    endpoint: (&'static str, &'static str),
    task_id: Option<&'a str>,
    query: Option<Query<'a>>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, HeaderValue)>,
    /// Send the API key.
    authenticated: bool,
    /// Safe to repeat after a timeout (the server may have acted on the first try).
    idempotent: bool,
}

/// A call's query string.
#[derive(Clone, Copy)]
enum Query<'a> {
    List(&'a ListQuery),
    /// One delivery of a task (`?delivery=`).
    Delivery(&'a str),
}

impl<'a> Call<'a> {
    fn new(endpoint: (&'static str, &'static str)) -> Call<'a> {
        Call {
            endpoint,
            task_id: None,
            query: None,
            body: None,
            headers: Vec::new(),
            authenticated: true,
            idempotent: endpoint.0 == "GET",
        }
    }

    fn task(mut self, task_id: &'a str) -> Self {
        self.task_id = Some(task_id);
        self
    }
}

// === impl Client ===

impl Client {
    /// A [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Creates a task (`POST /workflow/tasks`) from the seed's flat JSON, a
    /// [`CreateTaskRequest`] or a [`TaskPackage`] (see [`NewTask`]).
    ///
    /// Every call sends an `Idempotency-Key` (the caller's, or a fresh UUID), and the client's
    /// own retries repeat it, so a create retried after a lost answer never makes two tasks.
    ///
    /// # Errors
    ///
    /// 400 with [`Error::field_errors`] naming every invalid field (or an unknown channel),
    /// 401, 413, 415, and 503 (breaker open, queue full; retried first), transport errors.
    pub async fn create_task(&self, task: impl Into<NewTask>) -> Result<Created> {
        let task = task.into();
        let key = task
            .idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let value = HeaderValue::try_from(key.as_str())
            .map_err(|_| Error::builder("idempotency key is not a valid header value"))?;
        let mut call = Call::new(CREATE_TASK);
        call.body = Some(task.to_bytes()?);
        call.headers.push((IDEMPOTENCY_KEY, value));
        call.idempotent = true;
        let (headers, response): (_, CreateTaskResponse) = self.call(call).await?;
        let replayed = headers
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
            || response.message == REPLAYED_MESSAGE;
        Ok(Created {
            response,
            replayed,
            idempotency_key: key,
        })
    }

    /// A task's status, attempts and the receiver's latest report
    /// (`GET /workflow/tasks/{task_id}`).
    ///
    /// # Errors
    ///
    /// 404 for an unknown task, 401, transport errors.
    pub async fn get_task(&self, task_id: &str) -> Result<TaskInfo> {
        let (_, r): (_, TaskStatusResponse) = self.call(Call::new(GET_TASK).task(task_id)).await?;
        Ok(r.task_info)
    }

    /// One page of tasks, newest first (`GET /workflow/tasks`); pass the answer's
    /// `next_cursor` as `query.cursor` for the next. [`Client::list_tasks`] does that for you.
    ///
    /// # Errors
    ///
    /// 400 naming an invalid filter, 401, transport errors.
    pub async fn list_page(&self, query: &ListQuery) -> Result<TaskListResponse> {
        let mut call = Call::new(LIST_TASKS);
        call.query = Some(Query::List(query));
        Ok(self.call(call).await?.1)
    }

    /// Every task matching `query`, newest first, as a stream that fetches page after page
    /// (of `query.limit` tasks, default 100) following the cursor, lazily: the next page is
    /// asked for only when the current one is consumed. `query.cursor` is where to start.
    ///
    /// The stream ends after the last page, or after yielding the first error.
    pub fn list_tasks(&self, query: ListQuery) -> BoxStream<'static, Result<TaskInfo>> {
        struct Pages {
            client: Client,
            query: ListQuery,
            buffered: VecDeque<TaskInfo>,
            done: bool,
        }
        let pages = Pages {
            client: self.clone(),
            query,
            buffered: VecDeque::new(),
            done: false,
        };
        stream::unfold(pages, |mut p| async move {
            loop {
                if let Some(task) = p.buffered.pop_front() {
                    return Some((Ok(task), p));
                }
                if p.done {
                    return None;
                }
                match p.client.list_page(&p.query).await {
                    Ok(page) => {
                        p.buffered.extend(page.tasks);
                        p.done = page.next_cursor.is_none();
                        p.query.cursor = page.next_cursor;
                    }
                    Err(e) => {
                        p.done = true;
                        p.buffered.clear();
                        return Some((Err(e), p));
                    }
                }
            }
        })
        .boxed()
    }

    /// Cancels a task (`POST /workflow/tasks/{task_id}/cancel`): at once if it is waiting,
    /// after its current attempt if one is running (the answer then still shows it running).
    ///
    /// # Errors
    ///
    /// 404, 409 (`already_final`) for a completed, failed or cancelled task, 401, transport
    /// errors.
    pub async fn cancel(&self, task_id: &str) -> Result<TaskInfo> {
        let (_, r): (_, TaskStatusResponse) =
            self.call(Call::new(CANCEL_TASK).task(task_id)).await?;
        Ok(r.task_info)
    }

    /// Retries a failed or cancelled task now with a fresh attempt budget
    /// (`POST /workflow/tasks/{task_id}/retry`).
    ///
    /// # Errors
    ///
    /// 404, 409 (`invalid_state`) for a task that is not failed or cancelled, 401, transport
    /// errors.
    pub async fn retry(&self, task_id: &str) -> Result<TaskInfo> {
        let (_, r): (_, TaskStatusResponse) =
            self.call(Call::new(RETRY_TASK).task(task_id)).await?;
        Ok(r.task_info)
    }

    /// Cancels one delivery of a task that fans out to several targets (`delivery`: its
    /// target, a webhook URL or a channel's name, or its `delivery_id`); the others go on.
    ///
    /// # Errors
    ///
    /// 404 for an unknown task or delivery, 409 when that delivery already ended, 401,
    /// transport errors.
    pub async fn cancel_delivery(&self, task_id: &str, delivery: &str) -> Result<TaskInfo> {
        let mut call = Call::new(CANCEL_TASK).task(task_id);
        call.query = Some(Query::Delivery(delivery));
        let (_, r): (_, TaskStatusResponse) = self.call(call).await?;
        Ok(r.task_info)
    }

    /// Retries one failed or cancelled delivery of a task (`delivery`: its target or its
    /// `delivery_id`); the others are left as they are.
    ///
    /// # Errors
    ///
    /// 404 for an unknown task or delivery, 409 when that delivery did not fail, 401,
    /// transport errors.
    pub async fn retry_delivery(&self, task_id: &str, delivery: &str) -> Result<TaskInfo> {
        let mut call = Call::new(RETRY_TASK).task(task_id);
        call.query = Some(Query::Delivery(delivery));
        let (_, r): (_, TaskStatusResponse) = self.call(call).await?;
        Ok(r.task_info)
    }

    /// The server's routing rules, in order (`GET /workflow/routes`): which channels hear of
    /// a task whose request names no target.
    ///
    /// # Errors
    ///
    /// 401, transport errors.
    pub async fn routes(&self) -> Result<Vec<RouteView>> {
        let (_, r): (_, RouteListResponse) = self.call(Call::new(ROUTES)).await?;
        Ok(r.routes)
    }

    /// Where a task with this body would go, without creating it
    /// (`POST /workflow/routes/test`).
    ///
    /// # Errors
    ///
    /// 400 with [`Error::field_errors`] (invalid fields, an unknown channel, no route), 401,
    /// transport errors.
    pub async fn test_route(&self, task: impl Into<NewTask>) -> Result<RouteTestResponse> {
        let mut call = Call::new(TEST_ROUTE);
        call.body = Some(task.into().to_bytes()?);
        // Nothing is created: asking twice is asking once.
        call.idempotent = true;
        Ok(self.call(call).await?.1)
    }

    /// The preset channels a task may name (`GET /workflow/channels`): names, kinds, rate
    /// limits; never their URLs or secrets.
    ///
    /// # Errors
    ///
    /// 401, transport errors.
    pub async fn channels(&self) -> Result<Vec<ChannelView>> {
        let (_, r): (_, ChannelListResponse) = self.call(Call::new(CHANNELS)).await?;
        Ok(r.channels)
    }

    /// Reports how a delivered task ended, as its receiver
    /// (`POST /workflow/tasks/{task_id}/callback`). `token` is the package's
    /// `delivery_instructions.callback_token` (sent as `X-Callback-Token`; no API key is
    /// needed); `status` is one of [`CALLBACK_STATUSES`](workflow_dispatch::CALLBACK_STATUSES):
    /// `accepted`, `in_progress`, `resolved` or `rejected`; `note` is free text of at most
    /// 2,000 characters.
    ///
    /// # Errors
    ///
    /// 400 with [`Error::field_errors`] for an unknown status or a long note, 401 for a wrong
    /// token, 404, transport errors.
    pub async fn callback(
        &self,
        task_id: &str,
        token: &str,
        status: &str,
        note: Option<&str>,
    ) -> Result<TaskInfo> {
        let body = CallbackRequest {
            status: status.to_owned(),
            note: note.map(str::to_owned),
            callback_token: None,
        };
        let mut token = HeaderValue::try_from(token.trim())
            .map_err(|_| Error::builder("callback token is not a valid header value"))?;
        token.set_sensitive(true);
        let mut call = Call::new(CALLBACK).task(task_id);
        call.body = Some(serde_json::to_vec(&body).map_err(Error::decode)?);
        call.headers.push(("x-callback-token", token));
        call.authenticated = false;
        // The same report twice records the same thing.
        call.idempotent = true;
        let (_, r): (_, TaskStatusResponse) = self.call(call).await?;
        Ok(r.task_info)
    }

    /// The URL of `endpoint` with `task_id` in place.
    fn url(&self, path: &str, task_id: Option<&str>) -> Url {
        let mut url = self.inner.base.clone();
        // Always Ok: `build` checked that the base URL can be a base.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            for seg in path.trim_start_matches('/').split('/') {
                if seg == "{task_id}" {
                    segments.push(task_id.unwrap_or_default());
                } else {
                    segments.push(seg);
                }
            }
        }
        url
    }

    /// Sends `call`, retrying busy answers and connection failures on the policy; decodes a
    /// 2xx body as `T`.
    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<(HeaderMap, T)> {
        let method = Method::from_bytes(call.endpoint.0.as_bytes())
            .map_err(|_| Error::builder("invalid method"))?;
        let url = self.url(call.endpoint.1, call.task_id);
        let mut retries_done = 0;
        loop {
            let mut req = self.inner.http.request(method.clone(), url.clone());
            if call.authenticated
                && let Some(auth) = &self.inner.auth
            {
                req = req.header(AUTHORIZATION, auth.clone());
            }
            for (name, value) in &call.headers {
                req = req.header(*name, value.clone());
            }
            match call.query {
                Some(Query::List(q)) => req = req.query(q),
                Some(Query::Delivery(d)) => req = req.query(&[("delivery", d)]),
                None => {}
            }
            if let Some(body) = &call.body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let error = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let headers = resp.headers().clone();
                    let bytes = resp.bytes().await.map_err(Error::transport)?;
                    let value = serde_json::from_slice(&bytes).map_err(Error::decode)?;
                    return Ok((headers, value));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_policy::parse_retry_after(v, SystemTime::now()));
                    let body = resp.bytes().await.unwrap_or_default();
                    Error::api(status, &body, retry_after)
                }
                Err(e) => Error::transport(e),
            };
            let again = match error.status() {
                Some(status) => retryable_status(status),
                None => error.is_connect() || call.idempotent,
            };
            let delay = again
                .then(|| {
                    self.inner
                        .retry
                        .next_delay(retries_done, error.retry_after())
                })
                .flatten();
            let Some(delay) = delay else {
                return Err(error);
            };
            tracing::debug!(
                endpoint = call.endpoint.1,
                status = error.status().map(|s| s.as_u16()),
                retry = retries_done + 1,
                ?delay,
                "dispatcher busy or unreachable; retrying"
            );
            tokio::time::sleep(delay).await;
            retries_done += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::builder()
            .base_url(base)
            .api_key("k")
            .build()
            .unwrap()
    }

    #[test]
    fn urls_keep_a_path_prefix_and_escape_the_task_id() {
        let c = client("http://127.0.0.1:8080/dispatch/");
        assert_eq!(
            c.url(GET_TASK.1, Some("wf_1_a/b")).as_str(),
            "http://127.0.0.1:8080/dispatch/workflow/tasks/wf_1_a%2Fb"
        );
        let c = client("http://127.0.0.1:8080");
        assert_eq!(
            c.url(CANCEL_TASK.1, Some("wf_1")).as_str(),
            "http://127.0.0.1:8080/workflow/tasks/wf_1/cancel"
        );
    }

    #[test]
    fn the_builder_refuses_what_cannot_work() {
        assert!(Client::builder().build().unwrap_err().is_builder());
        for bad in ["ftp://x", "not a url", "mailto:a@b"] {
            let e = Client::builder().base_url(bad).build().unwrap_err();
            assert!(e.is_builder(), "{bad}");
        }
        let e = Client::builder()
            .base_url("http://x")
            .api_key("a\nb")
            .build()
            .unwrap_err();
        assert!(!e.to_string().contains("a\nb"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", client("http://user:pw@127.0.0.1:1"));
        assert!(
            !shown.contains("pw") && !shown.contains("Bearer"),
            "{shown}"
        );
    }

    #[test]
    fn priority_is_set_in_either_body_form() {
        let t = NewTask::from(task_package::examples::seed_flat_request()).priority(Priority::Low);
        let v: serde_json::Value = serde_json::from_slice(&t.to_bytes().unwrap()).unwrap();
        assert_eq!(v["priority"], "low");
        let request =
            CreateTaskRequest::from_json_slice(task_package::examples::SEED_REQUEST.as_bytes())
                .unwrap();
        let t = NewTask::from(request).priority(Priority::Critical);
        let v: serde_json::Value = serde_json::from_slice(&t.to_bytes().unwrap()).unwrap();
        assert_eq!(v["priority"], "critical");
        assert!(v["evidence_data"].is_object());
    }
}
