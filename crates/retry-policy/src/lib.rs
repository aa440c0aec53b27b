//! Backoff schedules, Retry-After handling and outcome classification.
