//! CRL parsing and verification (placeholder, being written).
