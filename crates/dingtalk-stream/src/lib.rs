//! DingTalk Stream-mode client and HTTP-callback verification.
