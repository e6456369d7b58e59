//! The netlink connection shared by [`crate::route`] and
//! [`crate::conntrack`]: one socket per protocol and process, its I/O task
//! spawned once on the tokio runtime, handed out as cloneable handles, and
//! reopened by the next call if it died (its runtime was shut down, the
//! socket failed).
//!
//! Not public: callers see the typed operations of the two modules.

use std::fmt::Debug;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use rtnetlink::proto::{self, ConnectionHandle};
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use tokio::task::JoinHandle;

/// Aborts the connection task when the last handle is dropped.
#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One netlink connection: a handle to send requests, and its I/O task.
#[derive(Debug)]
pub(crate) struct Conn<T: Debug> {
    handle: ConnectionHandle<T>,
    task: Arc<Task>,
}

impl<T: Debug + Clone> Clone for Conn<T> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            task: Arc::clone(&self.task),
        }
    }
}

/// How a request failed, before the caller names the operation.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The kernel answered with an error.
    Kernel {
        /// Positive errno.
        errno: i32,
        /// Extended-ack message, empty if none.
        msg: String,
    },
    /// The connection task is gone: no answer will come.
    Closed,
    /// No complete answer within [`REPLY_TIMEOUT`] (a reply the codec
    /// could not decode is dropped, and with it the end of the answer).
    Timeout,
}

/// How long a request may wait for the kernel's complete answer. The kernel
/// answers these requests in well under a millisecond; this only bounds a
/// lost answer.
pub(crate) const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl<T> Conn<T>
where
    T: Debug + Clone + NetlinkSerializable + NetlinkDeserializable + Unpin + Send + 'static,
{
    /// Opens a socket of `protocol` in the calling thread's network
    /// namespace and spawns its task on the current tokio runtime.
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("netlink needs a tokio runtime: {e}")))?;
        let (mut conn, handle, _unsolicited) = proto::new_connection::<T>(protocol)?;
        {
            let sock = conn.socket_mut().socket_ref();
            // The kernel's error strings; best effort (old kernels lack it).
            if let Err(e) = sock.set_ext_ack(true) {
                tracing::debug!(error = %e, "netlink: NETLINK_EXT_ACK not available");
            }
            if let Err(e) = sock.set_cap_ack(true) {
                tracing::debug!(error = %e, "netlink: NETLINK_CAP_ACK not available");
            }
        }
        let task = Arc::new(Task(rt.spawn(conn)));
        Ok(Self { handle, task })
    }

    fn is_alive(&self) -> bool {
        !self.task.0.is_finished()
    }

    /// Sends `msg` (its flags already set) and collects the reply payloads
    /// until the kernel's acknowledgement, the end of a dump, or an error.
    pub(crate) async fn request(&self, msg: NetlinkMessage<T>) -> Result<Vec<T>, Failure> {
        let handle = self.handle.clone();
        let mut replies = handle
            .request(msg, SocketAddr::new(0, 0))
            .map_err(|_| Failure::Closed)?;
        let mut out = Vec::new();
        let mut answered = false;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let reply = match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(_) => return Err(Failure::Timeout),
            };
            answered = true;
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(err) => {
                    if let Some(code) = err.code {
                        let errno = code.get().checked_neg().unwrap_or(i32::MAX);
                        let msg = crate::pm::extack_message(reply.header.flags, &err.header)
                            .unwrap_or_default();
                        return Err(Failure::Kernel { errno, msg });
                    }
                    // A plain acknowledgement: done.
                }
                _ => {}
            }
        }
        // The stream ends without any message only when the connection
        // task dropped the request (it died).
        if !answered && !self.is_alive() {
            return Err(Failure::Closed);
        }
        Ok(out)
    }
}

/// The process's connection of one protocol, opened on first use.
#[derive(Debug)]
pub(crate) struct Shared<T: Debug> {
    slot: Mutex<Option<Conn<T>>>,
}

impl<T> Shared<T>
where
    T: Debug + Clone + NetlinkSerializable + NetlinkDeserializable + Unpin + Send + 'static,
{
    pub(crate) const fn new() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }

    /// The live connection, opening it (again) if there is none.
    pub(crate) fn get(&self, protocol: isize) -> io::Result<Conn<T>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = slot.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        if slot.is_some() {
            tracing::debug!(protocol, "netlink: connection died, reopening");
        }
        let c = Conn::open(protocol)?;
        *slot = Some(c.clone());
        Ok(c)
    }
}
