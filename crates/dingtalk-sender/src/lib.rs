//! DingTalk OpenAPI client: token cache, robot sends, session-webhook replies.
