//! Shared helpers of the integration tests (each test binary includes this module
//! with `mod support;` and uses what it needs).
//!
//! `dead_code` is allowed because every test binary compiles the whole module but no
//! single one uses all of it.
#![allow(dead_code)]

use tokio::sync::mpsc;
use voltex_dispatch::transport::{PlatformLink, TransportError};
use voltex_dispatch::{DeviceId, Message};

/// A platform link driven by the test: it sees downlink and injects uplink.
pub struct FakeLink {
    /// Messages the test injects as if devices had sent them.
    pub uplink: mpsc::Receiver<(DeviceId, Message)>,
    /// Where the orchestrator's sends go, for the test to read.
    pub downlink: mpsc::Sender<(DeviceId, Message)>,
}

impl PlatformLink for FakeLink {
    async fn send_to(
        &mut self,
        device: &DeviceId,
        message: &Message,
    ) -> Result<(), TransportError> {
        self.downlink
            .send((device.clone(), message.clone()))
            .await
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&mut self) -> Result<(DeviceId, Message), TransportError> {
        self.uplink.recv().await.ok_or(TransportError::Closed)
    }
}
