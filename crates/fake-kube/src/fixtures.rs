//! Real-shaped fixtures (being built).
