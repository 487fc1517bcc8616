//! systemd's readiness protocol (`Type=notify`): the node says `READY=1` once its index is
//! reconciled and it listens, and `STOPPING=1` when it begins to stop. Outside systemd
//! (`NOTIFY_SOCKET` unset) nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells systemd the node is serving.
pub(crate) fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// Tells systemd the node is stopping (requests in flight may finish).
pub(crate) fn stopping() {
    send("STOPPING=1\nSTATUS=stopping: requests in flight may finish");
}

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let address = match path.as_bytes().strip_prefix(b"@") {
            // An abstract socket, as systemd passes it.
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&path)?,
        };
        socket.send_to_addr(state.as_bytes(), &address)
    });
    if let Err(err) = sent {
        tracing::warn!(
            socket = %path.to_string_lossy(),
            %err,
            "could not tell systemd the node's state (NOTIFY_SOCKET); with Type=notify the unit \
             may time out starting"
        );
    }
}
