//! RFC 8803 wire format (placeholder, being written).
#![forbid(unsafe_code)]
