//! Tokio glue shared by both ends of the Convert data path.
//!
//! - [`preamble`]: read one RFC 8803 Convert message from the front of a
//!   stream, with a deadline, keeping the application bytes that came with it;
//! - [`copy`]: relay two TCP streams both ways until both sides are done,
//!   mirroring half-close (FIN ↔ FIN) and reset (RST ↔ RST), with an idle
//!   timeout and bounded buffers;
//! - [`probe`]: the path probe the CPE sends on each link and the HAG
//!   echoes.
//!
//! It knows nothing of subscribers, policy or sockets options: the CPE and the
//! HAG bring those.
#![forbid(unsafe_code)]

pub mod copy;
pub mod preamble;
pub mod probe;

pub use copy::{relay, relay_until, Failure, Phase, RelayEnd, RelayOptions, RelayOutcome, Side};
pub use preamble::{read_message, PreambleError};
