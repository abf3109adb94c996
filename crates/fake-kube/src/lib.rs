//! A fake Kubernetes API server for the agent's tests (being built).
#![deny(missing_docs)]
