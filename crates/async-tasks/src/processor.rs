//! The slow backend that answers a request (the seed's "AI API"): the [`Processor`] trait and
//! four processors: a command, an HTTP service, an OpenAI-compatible chat endpoint, or the echo
//! demo.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Who asked what.
#[derive(Debug, Clone)]
pub struct Job {
    /// The bot task id.
    pub task_id: String,
    /// The asker's staff id.
    pub user_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// What was asked.
    pub prompt: String,
    /// The pictures and files that came with it, downloaded.
    pub files: Vec<JobFile>,
}

/// A picture or file the user sent, downloaded for the processor.
#[derive(Clone)]
pub struct JobFile {
    /// Where it was saved (removed when the job's attempt ends).
    pub path: PathBuf,
    /// Its name (`fileName`, or `picture-<n>.<ext>`).
    pub name: String,
    /// A picture (not a file).
    pub picture: bool,
    /// What the file server said it is.
    pub content_type: Option<String>,
    /// DingTalk's temporary download URL (valid for a short while; needs no token).
    pub url: String,
}

impl std::fmt::Debug for JobFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobFile")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("picture", &self.picture)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl JobFile {
    fn media_type(&self) -> &str {
        match self.content_type.as_deref() {
            Some(t) if !t.is_empty() => t,
            _ if self.picture => "image/jpeg",
            _ => "application/octet-stream",
        }
    }

    async fn base64(&self) -> Result<String, ProcessError> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| ProcessError::Failed(format!("cannot read {}: {e}", self.name)))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

/// `BOT_FILES`: the paths, one a line.
fn files_env(files: &[JobFile]) -> String {
    files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why processing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// The processor failed; may succeed on a retry.
    #[error("processor failed: {0}")]
    Failed(String),
    /// Cancelled (user or shutdown).
    #[error("cancelled")]
    Cancelled,
}

/// Answers a request.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// Produces the answer, stopping promptly when `cancel` fires.
    async fn process(&self, job: &Job, cancel: &CancellationToken) -> Result<String, ProcessError>;
}

/// The demo processor: answers with the prompt after an optional delay.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    /// How long "thinking" takes.
    pub delay: Duration,
}

#[async_trait]
impl Processor for Echo {
    async fn process(&self, job: &Job, cancel: &CancellationToken) -> Result<String, ProcessError> {
        tokio::select! {
            () = tokio::time::sleep(self.delay) => Ok(format!("处理结果：{}", job.prompt)),
            () = cancel.cancelled() => Err(ProcessError::Cancelled),
        }
    }
}

/// Runs a program with the prompt on stdin and `BOT_PROMPT`, `BOT_USER_ID`,
/// `BOT_CONVERSATION_ID`, `BOT_TASK_ID` and `BOT_FILES` (the paths of the pictures and files
/// sent with the request, one a line; empty when none) in its environment; stdout is the
/// answer; a non-zero exit is a failure; the process is killed on cancel.
#[derive(Debug, Clone)]
pub struct CommandProcessor {
    /// Program and arguments, split on whitespace (quote-free by design: no shell).
    pub argv: Vec<String>,
}

#[async_trait]
impl Processor for CommandProcessor {
    async fn process(&self, job: &Job, cancel: &CancellationToken) -> Result<String, ProcessError> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| ProcessError::Failed("empty processor command".into()))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("BOT_PROMPT", &job.prompt)
            .env("BOT_USER_ID", &job.user_id)
            .env("BOT_CONVERSATION_ID", &job.conversation_id)
            .env("BOT_TASK_ID", &job.task_id)
            .env("BOT_FILES", files_env(&job.files))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProcessError::Failed(format!("cannot start {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(job.prompt.as_bytes()).await;
        }
        tokio::select! {
            out = child.wait_with_output() => {
                let out = out.map_err(|e| ProcessError::Failed(e.to_string()))?;
                if out.status.success() {
                    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
                } else {
                    let err: String = String::from_utf8_lossy(&out.stderr).chars().take(300).collect();
                    Err(ProcessError::Failed(format!("exit {}: {}", out.status, err.trim())))
                }
            }
            // Dropping the wait future drops the child: kill_on_drop kills it.
            () = cancel.cancelled() => Err(ProcessError::Cancelled),
        }
    }
}

/// POSTs `{"prompt","user_id","conversation_id","task_id","files"}` and takes a field of the
/// JSON answer. `files` lists the pictures and files sent with the request as
/// `{"name","kind":"picture"|"file","content_type","url","base64"}` (`url` is DingTalk's
/// temporary download URL; `base64` the content).
#[derive(Debug, Clone)]
pub struct HttpProcessor {
    /// The service URL.
    pub url: String,
    /// The answer field (default `result`).
    pub field: String,
    /// HTTP client.
    pub client: reqwest::Client,
}

#[async_trait]
impl Processor for HttpProcessor {
    async fn process(&self, job: &Job, cancel: &CancellationToken) -> Result<String, ProcessError> {
        let mut files = Vec::new();
        for f in &job.files {
            files.push(serde_json::json!({
                "name": f.name,
                "kind": if f.picture { "picture" } else { "file" },
                "content_type": f.media_type(),
                "url": f.url,
                "base64": f.base64().await?,
            }));
        }
        let body = serde_json::json!({
            "prompt": job.prompt, "user_id": job.user_id, "conversation_id": job.conversation_id,
            "task_id": job.task_id, "files": files
        });
        let v = post_json(self.client.post(&self.url), &body, cancel).await?;
        v.get(&self.field)
            .and_then(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .or_else(|| Some(x.to_string()))
            })
            .ok_or_else(|| ProcessError::Failed(format!("answer has no {:?} field", self.field)))
    }
}

/// An OpenAI-compatible `POST {base}/chat/completions`. Pictures sent with the request go
/// with it as image input (`image_url` parts with `data:` URLs); other files are named in the
/// text.
#[derive(Clone)]
pub struct OpenAiProcessor {
    /// e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// `OPENAI_API_KEY`.
    pub api_key: String,
    /// HTTP client.
    pub client: reqwest::Client,
}

impl std::fmt::Debug for OpenAiProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProcessor")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Processor for OpenAiProcessor {
    async fn process(&self, job: &Job, cancel: &CancellationToken) -> Result<String, ProcessError> {
        let user_content = if job.files.is_empty() {
            serde_json::Value::String(job.prompt.clone())
        } else {
            let mut text = job.prompt.clone();
            let mut parts = Vec::new();
            for f in &job.files {
                if f.picture {
                    let url = format!("data:{};base64,{}", f.media_type(), f.base64().await?);
                    parts.push(serde_json::json!({"type": "image_url", "image_url": {"url": url}}));
                } else {
                    text.push_str(&format!("\n（附件：{}）", f.name));
                }
            }
            parts.insert(0, serde_json::json!({"type": "text", "text": text}));
            serde_json::Value::Array(parts)
        };
        let body = serde_json::json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": "你是企业舆情与客户分析助手，请用中文回答。"},
                {"role": "user", "content": user_content}
            ]
        });
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let request = self.client.post(url).bearer_auth(&self.api_key);
        let v = post_json(request, &body, cancel).await?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ProcessError::Failed("no choices[0].message.content".into()))
    }
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("http client: {0}")]
pub struct ClientError(String);

/// How a processor's HTTP client reaches the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Egress {
    /// As the process's `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` say.
    #[default]
    Environment,
    /// Directly, whatever the variables say.
    Direct,
    /// Through this proxy URL (`http://`, `https://`, `socks5://`; credentials allowed).
    Proxy(String),
}

/// An HTTP client for [`HttpProcessor`] and [`OpenAiProcessor`] trusting the platform's roots
/// (on Linux the system store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`) plus `extra_roots_pem` (a
/// PEM bundle), with rustls' `ring` provider passed explicitly: no process-wide provider is
/// installed, so it works in any process.
///
/// # Errors
///
/// The PEM has no readable certificate, the proxy URL is unusable, or the TLS or HTTP client
/// cannot be built.
pub fn http_client(
    timeout: Duration,
    extra_roots_pem: Option<&[u8]>,
    egress: Egress,
) -> Result<reqwest::Client, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let failed = |e: &dyn std::fmt::Display| ClientError(e.to_string());
    let extra = match extra_roots_pem {
        Some(pem) => CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(&e))?,
        None => Vec::new(),
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| failed(&e))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(&e))?
        .dangerous()
        // The platform verifier checks chains and names like WebPKI, with the platform's roots.
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut builder = reqwest::Client::builder();
    match egress {
        Egress::Environment => {}
        Egress::Direct => builder = builder.no_proxy(),
        Egress::Proxy(url) => {
            // The URL may hold credentials: the error does not repeat it.
            let proxy = reqwest::Proxy::all(&url)
                .map_err(|_| ClientError("egress proxy is not a valid proxy URL".into()))?;
            builder = builder.no_proxy().proxy(proxy);
        }
    }
    builder
        .timeout(timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| failed(&e))
}

/// POSTs `body` as JSON and reads the JSON answer, stopping when `cancel` fires. A transport
/// error, a non-2xx status or an unreadable answer is a (retryable) failure; URLs (which may
/// carry keys) are left out of errors.
async fn post_json(
    request: reqwest::RequestBuilder,
    body: &serde_json::Value,
    cancel: &CancellationToken,
) -> Result<serde_json::Value, ProcessError> {
    let failed = |e: reqwest::Error| ProcessError::Failed(e.without_url().to_string());
    let call = async {
        let r = request.json(body).send().await.map_err(failed)?;
        if !r.status().is_success() {
            return Err(ProcessError::Failed(format!(
                "HTTP {}",
                r.status().as_u16()
            )));
        }
        r.json().await.map_err(failed)
    };
    tokio::select! {
        r = call => r,
        () = cancel.cancelled() => Err(ProcessError::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            task_id: "t1".into(),
            user_id: "u1".into(),
            conversation_id: "c1".into(),
            prompt: "分析公司".into(),
            files: Vec::new(),
        }
    }

    #[tokio::test]
    async fn command_gets_the_prompt_on_stdin_and_in_its_environment() {
        let p = CommandProcessor {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "read x; echo \"$x|$BOT_USER_ID|$BOT_TASK_ID\"".into(),
            ],
        };
        assert_eq!(
            p.process(&job(), &CancellationToken::new()).await.unwrap(),
            "分析公司|u1|t1"
        );
    }

    #[tokio::test]
    async fn a_failing_command_is_a_failure() {
        let p = CommandProcessor {
            argv: vec!["sh".into(), "-c".into(), "echo boom >&2; exit 3".into()],
        };
        let err = p
            .process(&job(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Failed(m) if m.contains("boom")));
    }

    #[tokio::test]
    async fn cancel_kills_the_command() {
        let p = CommandProcessor {
            argv: vec!["sleep".into(), "30".into()],
        };
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            t.cancel();
        });
        assert_eq!(
            p.process(&job(), &token).await,
            Err(ProcessError::Cancelled)
        );
    }

    /// A loopback server that answers `answer` and hands over the JSON bodies it got.
    async fn capture(
        answer: serde_json::Value,
    ) -> (
        String,
        tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(axum::routing::post(
            move |axum::Json(body): axum::Json<serde_json::Value>| {
                let tx = tx.clone();
                let answer = answer.clone();
                async move {
                    let _ = tx.send(body);
                    axum::Json(answer)
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, rx)
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn with_files(dir: &std::path::Path) -> Job {
        let png = dir.join("1-picture-1.png");
        std::fs::write(&png, b"\x89PNG-bytes").unwrap();
        let pdf = dir.join("2-a.pdf");
        std::fs::write(&pdf, b"pdf-bytes").unwrap();
        Job {
            files: vec![
                JobFile {
                    path: png,
                    name: "picture-1.png".into(),
                    picture: true,
                    content_type: Some("image/png".into()),
                    url: "https://files.example/p".into(),
                },
                JobFile {
                    path: pdf,
                    name: "a.pdf".into(),
                    picture: false,
                    content_type: None,
                    url: "https://files.example/f".into(),
                },
            ],
            ..job()
        }
    }

    #[tokio::test]
    async fn command_gets_the_file_paths_in_bot_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = CommandProcessor {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "printf '%s\\n' \"$BOT_FILES\" | while IFS= read -r f; do cat \"$f\"; echo; done"
                    .into(),
            ],
        };
        let out = p
            .process(&with_files(dir.path()), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out, "\u{FFFD}PNG-bytes\npdf-bytes");
    }

    #[tokio::test]
    async fn http_gets_the_files_as_urls_and_base64() {
        let dir = tempfile::tempdir().unwrap();
        let (url, mut bodies) = capture(serde_json::json!({"result": "ok"})).await;
        let p = HttpProcessor {
            url,
            field: "result".into(),
            client: client(),
        };
        let out = p
            .process(&with_files(dir.path()), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out, "ok");
        let body = bodies.recv().await.unwrap();
        let files = body["files"].as_array().unwrap();
        assert_eq!(files[0]["kind"], "picture");
        assert_eq!(files[0]["content_type"], "image/png");
        assert_eq!(files[0]["url"], "https://files.example/p");
        assert_eq!(
            files[1]["base64"],
            base64::engine::general_purpose::STANDARD.encode(b"pdf-bytes")
        );
        assert_eq!(files[1]["content_type"], "application/octet-stream");
    }

    #[tokio::test]
    async fn openai_gets_pictures_as_image_input() {
        let dir = tempfile::tempdir().unwrap();
        let (url, mut bodies) =
            capture(serde_json::json!({"choices": [{"message": {"content": "一张图"}}]})).await;
        let p = OpenAiProcessor {
            base_url: url,
            model: "m".into(),
            api_key: "k".into(),
            client: client(),
        };
        let out = p
            .process(&with_files(dir.path()), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out, "一张图");
        let body = bodies.recv().await.unwrap();
        let parts = body["messages"][1]["content"].as_array().unwrap();
        assert_eq!(parts[0]["type"], "text");
        assert!(parts[0]["text"].as_str().unwrap().contains("a.pdf"));
        assert_eq!(parts[1]["type"], "image_url");
        let data = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(b"\x89PNG-bytes")
        );
        assert_eq!(parts[1]["image_url"]["url"], data.as_str());
        assert_eq!(parts.len(), 2, "only pictures are images");
    }
}
