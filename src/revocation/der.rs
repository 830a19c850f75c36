//! Minimal DER reader (placeholder, being written).
