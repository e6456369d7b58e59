//! Tandem shield (being written).
#![forbid(unsafe_code)]
