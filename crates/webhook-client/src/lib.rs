//! One signed webhook delivery attempt, with SSRF guard and classification.
