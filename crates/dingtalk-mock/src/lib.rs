//! A faithful local DingTalk for tests, examples and benchmarks.
