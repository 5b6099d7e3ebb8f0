//! A UDP socket wrapper that says when the operating system socket has been closed.
//!
//! quinn's endpoint driver owns its socket and drops it on its own task some time after
//! the last [`quinn::Endpoint`] handle and connection are gone; nothing in quinn's API
//! reports that moment. A platform that restarts on the same port (a supervisor, a test,
//! `voltex bench dispatch`) needs it, or the new bind races the old socket and fails with
//! `AddrInUse`. [`ReleasedSocket`] wraps the runtime's socket and fires a one-shot signal
//! once the wrapped socket, and every write-readiness poller that holds it, has been
//! dropped.
//!
//! # Invariant
//! The signal fires strictly after the inner socket's last reference is dropped: every
//! holder stores the inner socket (or its poller) in a field declared **before** its
//! [`ReleaseGuard`] handle, so Rust's declaration-order field drop releases the socket
//! first, and the guard's `Drop` (which sends the signal) runs when the last handle goes.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::oneshot;

/// Sends the release signal when dropped, i.e. when its last `Arc` handle goes.
struct ReleaseGuard {
    released: Option<oneshot::Sender<()>>,
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        if let Some(released) = self.released.take() {
            // Nobody waiting is fine: the link was dropped rather than shut down.
            let _ = released.send(());
        }
    }
}

/// An [`AsyncUdpSocket`] that delegates everything to the runtime's socket; see the
/// module doc.
pub(crate) struct ReleasedSocket {
    // Field order matters: `inner` must drop before `guard` (module invariant).
    inner: Arc<dyn AsyncUdpSocket>,
    guard: Arc<ReleaseGuard>,
}

impl ReleasedSocket {
    /// Wraps `inner`; the receiver completes once `inner` has been dropped everywhere.
    pub(crate) fn wrap(inner: Arc<dyn AsyncUdpSocket>) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (released_tx, released_rx) = oneshot::channel();
        let socket = ReleasedSocket {
            inner,
            guard: Arc::new(ReleaseGuard {
                released: Some(released_tx),
            }),
        };
        (Arc::new(socket), released_rx)
    }
}

impl fmt::Debug for ReleasedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleasedSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for ReleasedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(ReleasedPoller {
            inner: self.inner.clone().create_io_poller(),
            _guard: self.guard.clone(),
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The inner socket's poller plus a guard handle, so a poller outliving the socket wrapper
/// still delays the signal until it lets go of the inner socket.
struct ReleasedPoller {
    // Field order matters: `inner` (which holds the inner socket) drops before `_guard`.
    inner: Pin<Box<dyn UdpPoller>>,
    _guard: Arc<ReleaseGuard>,
}

impl fmt::Debug for ReleasedPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleasedPoller")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl UdpPoller for ReleasedPoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        // `ReleasedPoller` is `Unpin` (a boxed poller and an Arc), so the projection is safe
        // code: the inner poller stays pinned inside its own box.
        self.inner.as_mut().poll_writable(cx)
    }
}
