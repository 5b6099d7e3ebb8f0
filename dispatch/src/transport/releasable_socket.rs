//! The platform's QUIC UDP socket, which can be closed on demand.
//!
//! quinn's endpoint driver owns its socket and drops it on its own task only once every
//! connection has drained (three probe timeouts of its RTT estimate after the close,
//! RFC 9000 §10.2), and every per-connection write poller of quinn's own socket type
//! holds it too. With thousands of connections, some of them handshakes a device gave up
//! under load with RTT estimates of seconds, that took 20–30 s, and at 10,000 devices
//! longer than the idle timeout: a platform restarting on the same port (a supervisor, a
//! test, `voltex bench dispatch`) failed its bind with `AddrInUse`.
//!
//! [`ReleasableSocket`] is quinn's Tokio socket spelled out (a `tokio::net::UdpSocket`
//! with quinn-udp's `UdpSocketState`, so GSO/GRO and ECN work as before), but the OS
//! socket sits behind a lock, and its write pollers hold the wrapper, not the socket.
//! [`ReleasableSocket::release`] takes the OS socket out and closes it, whoever still
//! holds the wrapper.
//!
//! # Guarantees
//! - After [`ReleasableSocket::release`] returns, the OS socket is closed and its port
//!   can be bound again (no other handle to it exists).
//! - Afterwards the wrapper behaves like a link that lost its network: sends succeed
//!   and go nowhere, receives never complete, write readiness is immediate (so quinn
//!   never waits on a socket that is gone). Connections still open then end by their
//!   idle timeout, as they would after a power cut; the devices reconnect.
//! - Nothing panics: a poisoned lock is recovered (the guarded data is an OS handle
//!   with no invariant of its own).

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;

/// What the kernel reports of a socket buffer's size per byte granted: Linux reports
/// twice the grant (the other half is its bookkeeping, `socket(7)`).
#[cfg(target_os = "linux")]
const KERNEL_REPORTS_PER_GRANTED: usize = 2;
#[cfg(not(target_os = "linux"))]
const KERNEL_REPORTS_PER_GRANTED: usize = 1;

/// A receive buffer as set by [`ReleasableSocket::set_recv_buffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecvBuffer {
    /// Bytes the kernel granted (on Linux half what it reports).
    pub(crate) granted_bytes: usize,
    /// Set with `SO_RCVBUFFORCE`, past `net.core.rmem_max`.
    pub(crate) forced: bool,
}

/// The OS socket and quinn-udp's state for it.
struct Bound {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

/// A UDP socket for quinn that can be closed while quinn still holds it; see the module
/// doc.
pub(crate) struct ReleasableSocket {
    /// `None` once released.
    bound: RwLock<Option<Bound>>,
    local_addr: SocketAddr,
    max_transmit_segments: usize,
    max_receive_segments: usize,
    may_fragment: bool,
}

impl ReleasableSocket {
    /// Wraps a bound socket. Must be called inside a Tokio runtime (the socket is
    /// registered with its reactor).
    ///
    /// # Errors
    /// If the socket cannot be set up for quinn (non-blocking mode, socket options) or
    /// registered with the reactor.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<Arc<ReleasableSocket>> {
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        Ok(Arc::new(ReleasableSocket {
            local_addr: io.local_addr()?,
            max_transmit_segments: state.max_gso_segments(),
            max_receive_segments: state.gro_segments(),
            may_fragment: state.may_fragment(),
            bound: RwLock::new(Some(Bound { io, state })),
        }))
    }

    /// Asks the kernel for a receive buffer of `bytes` and returns what it granted.
    /// Linux caps an unprivileged request at `net.core.rmem_max`; when that falls short
    /// and the process has `CAP_NET_ADMIN`, the size is set with `SO_RCVBUFFORCE`,
    /// past the cap, as quic-go does. A released socket reports 0.
    ///
    /// # Errors
    /// If the socket option cannot be set or read.
    pub(crate) fn set_recv_buffer(&self, bytes: usize) -> io::Result<RecvBuffer> {
        let guard = self.read();
        let Some(bound) = &*guard else {
            return Ok(RecvBuffer {
                granted_bytes: 0,
                forced: false,
            });
        };
        let granted = || -> io::Result<usize> {
            let reported = bound.state.recv_buffer_size((&bound.io).into())?;
            Ok(reported / KERNEL_REPORTS_PER_GRANTED)
        };
        bound
            .state
            .set_recv_buffer_size((&bound.io).into(), bytes)?;
        let granted_bytes = granted()?;
        #[cfg(target_os = "linux")]
        if granted_bytes < bytes
            && rustix::net::sockopt::set_socket_recv_buffer_size_force(&bound.io, bytes).is_ok()
        {
            return Ok(RecvBuffer {
                granted_bytes: granted()?,
                forced: true,
            });
        }
        Ok(RecvBuffer {
            granted_bytes,
            forced: false,
        })
    }

    /// Closes the OS socket now (idempotent); see the module doc for what the wrapper
    /// does afterwards.
    pub(crate) fn release(&self) {
        let bound = self
            .bound
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Dropped outside the lock: deregisters from the reactor and closes the fd.
        drop(bound);
    }

    /// Whether [`ReleasableSocket::release`] has run.
    pub(crate) fn is_released(&self) -> bool {
        self.read().is_none()
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<Bound>> {
        self.bound
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for ReleasableSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleasableSocket")
            .field("local_addr", &self.local_addr)
            .field("released", &self.is_released())
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for ReleasableSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller { socket: self })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        match &*self.read() {
            Some(bound) => bound.io.try_io(Interest::WRITABLE, || {
                bound.state.send((&bound.io).into(), transmit)
            }),
            // Released: the datagram is lost, as on a cut network. `Ok`, not
            // `WouldBlock`, so quinn does not wait for a readiness that never comes.
            None => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let guard = self.read();
        let Some(bound) = &*guard else {
            // Released: nothing will ever arrive.
            return Poll::Pending;
        };
        loop {
            ready!(bound.io.poll_recv_ready(cx))?;
            if let Ok(received) = bound.io.try_io(Interest::READABLE, || {
                bound.state.recv((&bound.io).into(), bufs, meta)
            }) {
                return Poll::Ready(Ok(received));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    fn max_transmit_segments(&self) -> usize {
        self.max_transmit_segments
    }

    fn max_receive_segments(&self) -> usize {
        self.max_receive_segments
    }

    fn may_fragment(&self) -> bool {
        self.may_fragment
    }
}

/// Write readiness of a [`ReleasableSocket`]; holds the wrapper, never the OS socket.
#[derive(Debug)]
struct WritablePoller {
    socket: Arc<ReleasableSocket>,
}

impl UdpPoller for WritablePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        match &*self.socket.read() {
            Some(bound) => bound.io.poll_send_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_released_socket_frees_its_port_and_goes_quiet() {
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = ReleasableSocket::new(std_socket).unwrap();
        let addr = socket.local_addr().unwrap();
        let poller = Arc::clone(&socket).create_io_poller();
        assert!(std::net::UdpSocket::bind(addr).is_err(), "bound while held");
        socket.release();
        assert!(socket.is_released());
        let again = std::net::UdpSocket::bind(addr);
        assert!(
            again.is_ok(),
            "the port is free though quinn's handles remain"
        );
        drop(again);

        // Sends vanish, readiness is immediate, receives never complete.
        let transmit = Transmit {
            destination: addr,
            ecn: None,
            contents: b"lost",
            segment_size: None,
            src_ip: None,
        };
        assert!(socket.try_send(&transmit).is_ok());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut poller = poller;
        assert!(matches!(
            poller.as_mut().poll_writable(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let mut buf = [0_u8; 64];
        let mut bufs = [IoSliceMut::new(&mut buf)];
        let mut meta = [RecvMeta::default()];
        assert!(socket.poll_recv(&mut cx, &mut bufs, &mut meta).is_pending());
        socket.release();
        assert!(socket.is_released(), "idempotent");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_receive_buffer_asked_for_is_granted_up_to_the_kernel_cap() {
        let socket =
            ReleasableSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        // 48 KiB is under every Linux `rmem_max` default.
        let requested = 48 << 10;
        let granted = socket.set_recv_buffer(requested).unwrap();
        assert_eq!(
            granted,
            RecvBuffer {
                granted_bytes: requested,
                forced: false
            }
        );
        socket.release();
        assert_eq!(
            socket.set_recv_buffer(requested).unwrap().granted_bytes,
            0,
            "released"
        );
    }

    /// Past `net.core.rmem_max`: granted in full with `CAP_NET_ADMIN` (`SO_RCVBUFFORCE`),
    /// capped at `rmem_max` without.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_receive_buffer_past_the_cap_is_forced_when_the_process_may() {
        let read = |path: &str| std::fs::read_to_string(path).unwrap();
        let rmem_max: usize = read("/proc/sys/net/core/rmem_max").trim().parse().unwrap();
        const CAP_NET_ADMIN: u32 = 12;
        let effective_caps = read("/proc/self/status")
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        let may_force = effective_caps & (1 << CAP_NET_ADMIN) != 0;
        let socket =
            ReleasableSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let requested = rmem_max + (64 << 10);
        let granted = socket.set_recv_buffer(requested).unwrap();
        if may_force {
            assert_eq!(
                granted,
                RecvBuffer {
                    granted_bytes: requested,
                    forced: true
                }
            );
        } else {
            assert_eq!(
                granted,
                RecvBuffer {
                    granted_bytes: rmem_max,
                    forced: false
                }
            );
        }
    }
}
