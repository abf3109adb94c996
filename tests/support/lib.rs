//! Helpers for driving the holdfast binary in tests.
