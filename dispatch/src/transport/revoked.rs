//! The certificates the platform no longer accepts: a shared, live set of SHA-256
//! fingerprints (of the certificate's DER, lowercase hex, as
//! [`certs::fingerprint_sha256`](super::certs::fingerprint_sha256) gives them).
//!
//! The QUIC platform checks every new connection's client certificate against it after
//! the TLS handshake, and every live connection watches it: revoking a certificate
//! closes the connections that use it at once, and its device cannot come back with
//! it. The owner (the server) persists revocations and fills the set at start; this
//! type holds no I/O.
//!
//! # Invariants
//! - The set only grows: a revoked certificate is never accepted again (a device gets
//!   a new certificate instead).
//! - Every change is announced to the watchers after it is in the set, so a watcher
//!   that wakes sees it.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::watch;

/// Handle to the shared set; clones share it.
#[derive(Clone)]
pub struct RevokedCertificates {
    inner: Arc<Inner>,
}

struct Inner {
    fingerprints: RwLock<HashSet<String>>,
    /// Bumped after each change; the value is the number of revocations so far.
    changes: watch::Sender<usize>,
}

impl Default for RevokedCertificates {
    fn default() -> Self {
        RevokedCertificates::new()
    }
}

impl RevokedCertificates {
    /// An empty set.
    pub fn new() -> RevokedCertificates {
        RevokedCertificates {
            inner: Arc::new(Inner {
                fingerprints: RwLock::new(HashSet::new()),
                changes: watch::Sender::new(0),
            }),
        }
    }

    /// Revokes the certificate with this fingerprint (case-insensitive hex); returns
    /// whether it was not revoked already. Live connections using it close.
    pub fn revoke(&self, fingerprint_sha256: &str) -> bool {
        let fingerprint = fingerprint_sha256.to_ascii_lowercase();
        let (added, n) = {
            let mut set = self
                .inner
                .fingerprints
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let added = set.insert(fingerprint);
            (added, set.len())
        };
        if added {
            self.inner.changes.send_replace(n);
        }
        added
    }

    /// Whether the certificate with this fingerprint (lowercase hex) is revoked.
    pub fn is_revoked(&self, fingerprint_sha256: &str) -> bool {
        self.inner
            .fingerprints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(fingerprint_sha256)
    }

    /// Number of revoked certificates.
    pub fn len(&self) -> usize {
        self.inner
            .fingerprints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that sees every later change.
    pub(crate) fn watch(&self) -> watch::Receiver<usize> {
        self.inner.changes.subscribe()
    }
}

impl fmt::Debug for RevokedCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevokedCertificates")
            .field("len", &self.len())
            .finish()
    }
}

/// Two handles are equal when they share one set (configs compare by identity).
impl PartialEq for RevokedCertificates {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for RevokedCertificates {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_are_shared_case_insensitive_and_announced() {
        let revoked = RevokedCertificates::new();
        let clone = revoked.clone();
        let mut changes = revoked.watch();
        assert!(!changes.has_changed().unwrap());
        assert!(clone.revoke("AB12"));
        assert!(!revoked.revoke("ab12"), "already revoked");
        assert!(revoked.is_revoked("ab12"));
        assert!(!revoked.is_revoked("cd34"));
        assert_eq!(revoked.len(), 1);
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), 1);
        assert_eq!(revoked, clone);
        assert_ne!(revoked, RevokedCertificates::new());
    }
}
