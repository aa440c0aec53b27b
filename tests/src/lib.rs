//! Test harness: spawn the real binaries on loopback ports, with local peers.
