//! Kubelet directory builder (being built).
