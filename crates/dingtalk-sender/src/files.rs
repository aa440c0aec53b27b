//! Files users send the robot (pictures, files, the pictures of a rich text): DingTalk hands the
//! bot a `downloadCode`; `POST /v1.0/robot/messageFiles/download` turns it into a short-lived
//! `downloadUrl`, which is fetched without the access token.

use serde_json::{Value, json};

use crate::client::{Api, DingTalkSender};
use crate::error::{Error, Result};

/// A file a user sent the robot, downloaded ([`DingTalkSender::download_file`]).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownloadedFile {
    /// The content.
    pub bytes: Vec<u8>,
    /// The `Content-Type` the file server answered with, if any.
    pub content_type: Option<String>,
    /// The temporary URL it came from (a credential of sorts: it needs no token; not printed
    /// by `Debug`).
    pub url: String,
}

impl std::fmt::Debug for DownloadedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadedFile")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

// === impl DingTalkSender ===

impl DingTalkSender {
    /// The temporary URL of a file a user sent (`messageFiles/download` with the robot code and
    /// the callback's `downloadCode`). It needs no token: treat it as a secret, and do not log it.
    ///
    /// # Errors
    ///
    /// DingTalk refused the code (e.g. expired), throttling that outlasted the retries, or an
    /// answer without `downloadUrl`.
    pub async fn file_download_url(&self, download_code: &str) -> Result<String> {
        let body = json!({"robotCode": self.robot_code(), "downloadCode": download_code});
        let v = self.api_call(Api::FileDownload, &body).await?;
        v.get("downloadUrl")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::UnexpectedResponse {
                status: 200,
                detail: "no downloadUrl in the messageFiles/download answer".into(),
            })
    }

    /// Downloads a file a user sent: [`DingTalkSender::file_download_url`], then its bytes, at
    /// most [`crate::SenderBuilder::max_file_bytes`].
    ///
    /// # Errors
    ///
    /// As [`DingTalkSender::file_download_url`]; [`Error::UnexpectedResponse`] when the file
    /// server answers non-2xx or the file is too large; [`Error::Transport`].
    pub async fn download_file(&self, download_code: &str) -> Result<DownloadedFile> {
        let url = self.file_download_url(download_code).await?;
        let max = self.max_file_bytes();
        let mut resp = self
            .http()
            .get(url.as_str())
            .send()
            .await
            .map_err(Error::transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(Error::UnexpectedResponse {
                status,
                detail: "the file download failed".into(),
            });
        }
        let too_large = || Error::UnexpectedResponse {
            status,
            detail: format!("the file is larger than {max} bytes"),
        };
        if resp
            .content_length()
            .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > max))
        {
            return Err(too_large());
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(Error::transport)? {
            if bytes.len() + chunk.len() > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(DownloadedFile {
            bytes,
            content_type,
            url,
        })
    }
}
