//! OCSP requests and verified responses (placeholder, being written).
