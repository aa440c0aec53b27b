//! Per-target circuit breakers, a keyed registry and a tower layer.
