//! The live agent: the pure [`AgentCore`] wired to a transport, a store, a driver and
//! the real clocks.
//!
//! One task, one loop (`tokio::select!`, `biased;`): shutdown first, then inbound
//! messages, then a timer that wakes at the next executor boundary, tick, telemetry,
//! heartbeat or re-send deadline. Every wake ticks the executor. Steps follow the
//! order of [`crate::core`]: a schedule is committed with its `Received` ack before the
//! delivery is confirmed (PUBACK), decided and committed before anything is sent; an
//! executor transition is committed before the driver is commanded.
//!
//! Reconnection is the transport's job ([`voltex_dispatch::transport`] reconnects with
//! exponential back-off and seeded jitter, `ReconnectPolicy`); the runtime notices a
//! reconnect through [`AgentLink::is_connected`] and re-sends the whole unreceipted
//! outbox, and it also re-sends everything when no receipt has advanced for
//! [`RuntimeConfig::resend_after`] (a broker that lost messages), or at once when a
//! schedule it already holds arrives again (the platform re-sends only while it has no
//! ack: the ack was lost).
//!
//! **The clock seam:** [`SystemClock`] is the only place in the crate that reads
//! `Instant::now` / `SystemTime::now` (`#[allow(clippy::disallowed_methods)]` there).
//! It can run fast (`time_scale`), for measurements and demos.
//!
//! # Invariants
//! - Nothing is confirmed to the transport before the store holds it; nothing is sent
//!   or commanded before the batch describing it is committed.
//! - The emergency stop (file flag, or the driver's input; an unreadable input counts as
//!   engaged) is checked on every tick, at least every [`RuntimeConfig::tick`], and
//!   wins over every schedule and fallback.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::sleep;
use voltex_dispatch::message::HealthFlags;
use voltex_dispatch::transport::{
    DeliveryToken, DeviceLink, MqttDeviceLink, QuicDeviceLink, TransportError,
};
use voltex_dispatch::{Message, SignedSchedule};
use voltex_market::UtcNanos;

use crate::core::AgentCore;
use crate::driver::{BatteryDriver, DriverError};
use crate::executor::MonoNanos;
use crate::outbox::{Sample, next_messages};
use crate::store::{AgentStore, ExecLogEntry, ExecLogEvent, WriteBatch};

/// A device link whose connection state the runtime can watch.
pub trait AgentLink: DeviceLink {
    /// Whether the link is connected now (a `false` → `true` change makes the runtime
    /// re-send the unreceipted outbox).
    fn is_connected(&self) -> bool;
}

impl AgentLink for MqttDeviceLink {
    fn is_connected(&self) -> bool {
        MqttDeviceLink::is_connected(self)
    }
}

impl AgentLink for QuicDeviceLink {
    fn is_connected(&self) -> bool {
        QuicDeviceLink::is_connected(self)
    }
}

/// The real clocks, optionally running `time_scale` times faster than real time.
#[derive(Clone, Debug)]
pub struct SystemClock {
    origin: Instant,
    wall_origin: UtcNanos,
    time_scale: u32,
}

impl SystemClock {
    /// Clocks starting now; `time_scale` 1 is real time.
    // The clock seam of the crate (see the module doc).
    #[allow(clippy::disallowed_methods)]
    pub fn new(time_scale: u32) -> SystemClock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        SystemClock {
            origin: Instant::now(),
            wall_origin: UtcNanos(wall),
            time_scale: time_scale.max(1),
        }
    }

    // The clock seam of the crate (see the module doc).
    #[allow(clippy::disallowed_methods)]
    fn elapsed_ns(&self) -> i64 {
        let real = i64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(i64::MAX);
        real.saturating_mul(i64::from(self.time_scale))
    }

    /// Wall-clock time (UTC). At `time_scale` 1 this is the system clock, read anew so
    /// that clock steps are seen; when fast, it is derived from the monotonic clock.
    // The clock seam of the crate (see the module doc).
    #[allow(clippy::disallowed_methods)]
    pub fn now_wall(&self) -> UtcNanos {
        if self.time_scale == 1 {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            return UtcNanos(wall);
        }
        UtcNanos(self.wall_origin.0.saturating_add(self.elapsed_ns()))
    }

    /// Monotonic time since the clock started (scaled).
    pub fn now_mono(&self) -> MonoNanos {
        MonoNanos(self.elapsed_ns())
    }

    /// The real duration of `clock_ns` nanoseconds of clock time.
    pub fn real_duration(&self, clock_ns: i64) -> Duration {
        let ns = u64::try_from(clock_ns.max(0)).unwrap_or(0) / u64::from(self.time_scale);
        Duration::from_nanos(ns)
    }
}

/// Timing of the live loop (clock time, i.e. scaled when the clock is fast).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Longest gap between executor ticks.
    pub tick: Duration,
    /// Telemetry sample interval.
    pub telemetry_interval: Duration,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Re-send the whole unreceipted outbox when no receipt advanced for this long.
    pub resend_after: Duration,
    /// A file whose existence engages the emergency stop.
    pub emergency_file: Option<PathBuf>,
    /// Most messages sent per flush (the rest follow on the next wake).
    pub flush_messages_max: usize,
}

/// Why the runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The store failed: the agent stops rather than act on state it could not save.
    #[error("store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The transport closed for good.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
}

/// Counters of one run (for logs and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Executor ticks.
    pub ticks: u64,
    /// Schedules received (including duplicates).
    pub schedules_received: u64,
    /// Receipts received.
    pub receipts: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Telemetry samples queued.
    pub samples: u64,
}

/// The live agent. See the module doc.
pub struct Runtime<S, D, L> {
    core: AgentCore,
    store: S,
    driver: D,
    link: L,
    clock: SystemClock,
    config: RuntimeConfig,
    connected: bool,
    clock_skew: bool,
    driver_fault: bool,
    last_progress: MonoNanos,
    next_telemetry: MonoNanos,
    next_heartbeat: MonoNanos,
    outgoing: Vec<(Message, u64)>,
    stats: RunStats,
}

fn add(at: MonoNanos, duration: Duration) -> MonoNanos {
    MonoNanos(at.0.saturating_add(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)))
}

impl<S, D, L> Runtime<S, D, L>
where
    S: AgentStore + Send,
    D: BatteryDriver,
    L: AgentLink,
{
    /// Restores the core from `store` and decides any schedule stored but left
    /// undecided by a crash.
    ///
    /// Cancellation safety: not cancel-safe in the sense that a cancelled call may have
    /// committed the pending decisions; that is harmless (the next start sees them).
    ///
    /// # Errors
    /// The store failed.
    pub async fn start(
        core_config: crate::core::CoreConfig,
        mut store: S,
        driver: D,
        link: L,
        clock: SystemClock,
        config: RuntimeConfig,
    ) -> Result<Runtime<S, D, L>, RuntimeError> {
        let state = store
            .load()
            .await
            .map_err(|e| RuntimeError::Store(Box::new(e)))?;
        let core = AgentCore::restore(core_config, state);
        let now = clock.now_mono();
        let mut runtime = Runtime {
            core,
            store,
            driver,
            link,
            config,
            connected: false,
            clock_skew: false,
            driver_fault: false,
            last_progress: now,
            next_telemetry: now,
            next_heartbeat: now,
            outgoing: Vec::new(),
            stats: RunStats::default(),
            clock,
        };
        let wall = runtime.clock.now_wall();
        let mut batch = WriteBatch::default();
        batch.exec_log.push(ExecLogEntry {
            at: wall,
            key: None,
            event: ExecLogEvent::Boot,
        });
        let decided = runtime.core.decide_pending(wall);
        runtime.note_skew(decided.clock_skew_s);
        batch.append(decided.batch);
        runtime.commit(&batch).await?;
        tracing::info!(
            device = %runtime.core.device(),
            live = ?runtime.core.live_schedule(),
            outbox = runtime.core.outbox().len(),
            "agent started"
        );
        Ok(runtime)
    }

    /// The core (read-only), for tests and diagnostics.
    pub fn core(&self) -> &AgentCore {
        &self.core
    }

    /// The counters so far.
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    async fn commit(&mut self, batch: &WriteBatch) -> Result<(), RuntimeError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.store
            .commit(batch)
            .await
            .map_err(|e| RuntimeError::Store(Box::new(e)))
    }

    fn note_skew(&mut self, skew_s: Option<i64>) {
        if let Some(skew_s) = skew_s {
            self.clock_skew = true;
            tracing::warn!(
                skew_s,
                "schedule issued ahead of the agent clock beyond tolerance: is NTP running?"
            );
        }
    }

    /// Runs until `shutdown` completes or a fatal error.
    ///
    /// Cancellation safety: cancelling (or dropping) the future at any await point is
    /// crash-equivalent and safe by design: every state change is committed before it
    /// is acted on, and the next [`Runtime::start`] resumes from the store.
    ///
    /// # Errors
    /// The store failed or the transport closed.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunStats, RuntimeError> {
        tokio::pin!(shutdown);
        loop {
            self.step().await?;
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                inbound = self.link.recv() => {
                    let inbound = inbound?;
                    self.handle_inbound(inbound.message, inbound.delivery).await?;
                }
                () = sleep(wake) => {}
            }
        }
        // Leave the battery idle on an orderly shutdown.
        let now = self.clock.now_mono();
        if let Err(error) = self.driver.apply(0, now) {
            tracing::error!(%error, "could not idle the battery at shutdown");
        }
        tracing::info!(stats = ?self.stats, "agent stopped");
        Ok(self.stats)
    }

    fn next_wake(&self) -> Duration {
        let now_mono = self.clock.now_mono();
        let now_wall = self.clock.now_wall();
        let mut until = add(now_mono, self.config.tick);
        if let Some(boundary) = self.core.executor().next_boundary(now_wall, now_mono) {
            until = until.min(boundary);
        }
        until = until.min(self.next_telemetry).min(self.next_heartbeat);
        self.clock.real_duration(until.0 - now_mono.0)
    }

    fn emergency_engaged(&mut self) -> bool {
        let file = self
            .config
            .emergency_file
            .as_ref()
            .is_some_and(|path| path.exists());
        let input = self.driver.emergency_input().unwrap_or_else(|error| {
            tracing::error!(%error, "emergency input unreadable: treating as engaged");
            true
        });
        file || input
    }

    /// One wake: tick, telemetry, heartbeat, re-send, flush.
    async fn step(&mut self) -> Result<(), RuntimeError> {
        let estop = self.emergency_engaged();
        let wall = self.clock.now_wall();
        let mono = self.clock.now_mono();
        let ticked = self.core.tick(wall, mono, estop);
        self.stats.ticks += 1;
        self.commit(&ticked.batch).await?;
        if let Some(step_ns) = ticked.clock_stepped_ns {
            self.clock_skew = true;
            tracing::warn!(
                step_ms = step_ns / 1_000_000,
                "wall clock stepped; re-anchored"
            );
        }
        if estop {
            if let Err(error) = self.driver.emergency_stop(mono) {
                tracing::error!(%error, "EMERGENCY STOP NOT APPLIED by the driver; retrying");
            }
        } else if let Err(error) = self.driver.apply(ticked.setpoint.target_w, mono) {
            self.on_driver_error(error, wall).await?;
        }

        if mono >= self.next_telemetry {
            self.next_telemetry = add(mono, self.config.telemetry_interval);
            self.sample(wall, mono).await?;
        }
        if mono >= self.next_heartbeat {
            self.next_heartbeat = add(mono, self.config.heartbeat_interval);
            let uptime_s = u64::try_from(mono.0 / 1_000_000_000).unwrap_or(0);
            let heartbeat = self.core.heartbeat(wall, uptime_s);
            if self.link.is_connected() {
                self.link.send(&Message::Heartbeat(heartbeat)).await?;
                self.stats.messages_sent += 1;
            }
        }

        let connected = self.link.is_connected();
        if connected && !self.connected {
            tracing::info!(
                outbox = self.core.outbox().len(),
                "connected: re-sending outbox"
            );
            self.core.outbox_mut().reconnected();
            self.last_progress = mono;
        }
        self.connected = connected;
        let stalled = mono.0.saturating_sub(self.last_progress.0)
            > i64::try_from(self.config.resend_after.as_nanos()).unwrap_or(i64::MAX);
        if !self.core.outbox().is_empty() && stalled {
            tracing::debug!("no receipt for a while: re-sending the outbox");
            self.core.outbox_mut().reconnected();
            self.last_progress = mono;
        }
        self.flush().await
    }

    async fn on_driver_error(
        &mut self,
        error: DriverError,
        wall: UtcNanos,
    ) -> Result<(), RuntimeError> {
        if !self.driver_fault {
            tracing::error!(%error, "driver fault: failing the live schedule");
        }
        self.driver_fault = true;
        let batch = self.core.driver_fault(wall);
        self.commit(&batch).await
    }

    async fn sample(&mut self, wall: UtcNanos, mono: MonoNanos) -> Result<(), RuntimeError> {
        let reading = match self.driver.read(mono) {
            Ok(reading) => {
                self.driver_fault = reading.fault;
                reading
            }
            Err(error) => {
                tracing::warn!(%error, "driver reading failed");
                self.driver_fault = true;
                Default::default()
            }
        };
        let mut health = 0;
        if self.driver_fault {
            health |= HealthFlags::DRIVER_FAULT;
        }
        if self.clock_skew {
            health |= HealthFlags::CLOCK_SKEW;
        }
        let batch = self.core.push_telemetry(Sample {
            at: wall,
            soc_wh: reading.soc_wh,
            power_w: reading.power_w,
            charged_wh: reading.charged_wh,
            discharged_wh: reading.discharged_wh,
            temperature_mc: reading.temperature_mc,
            health,
        });
        self.stats.samples += 1;
        self.commit(&batch).await
    }

    /// Sends unsent outbox entries (when connected).
    async fn flush(&mut self) -> Result<(), RuntimeError> {
        if !self.link.is_connected() {
            return Ok(());
        }
        let mut outgoing = std::mem::take(&mut self.outgoing);
        outgoing.clear();
        next_messages(
            self.core.outbox(),
            self.core.device(),
            self.config.flush_messages_max,
            &mut outgoing,
        );
        for (message, seq) in &outgoing {
            self.link.send(message).await?;
            self.core.outbox_mut().mark_sent(*seq);
            self.stats.messages_sent += 1;
        }
        outgoing.clear();
        self.outgoing = outgoing;
        Ok(())
    }

    async fn handle_inbound(
        &mut self,
        message: Message,
        delivery: DeliveryToken,
    ) -> Result<(), RuntimeError> {
        match message {
            Message::Schedule(signed) => self.handle_schedule(signed, delivery).await,
            Message::Receipt(receipt) => {
                self.stats.receipts += 1;
                let batch = self.core.on_receipt(&receipt);
                if !batch.is_empty() {
                    self.last_progress = self.clock.now_mono();
                }
                self.commit(&batch).await?;
                self.link.confirm(delivery).await?;
                Ok(())
            }
            Message::Ack(_) | Message::Acks(_) | Message::Telemetry(_) | Message::Heartbeat(_) => {
                // The transport never returns uplink kinds; confirm so it is not redelivered.
                self.link.confirm(delivery).await?;
                Ok(())
            }
        }
    }

    /// receive → commit (schedule + Received ack) → confirm → decide → commit → send.
    async fn handle_schedule(
        &mut self,
        signed: SignedSchedule,
        delivery: DeliveryToken,
    ) -> Result<(), RuntimeError> {
        self.stats.schedules_received += 1;
        let wall = self.clock.now_wall();
        let key = crate::acceptance::ScheduleKey::of(&signed);
        let received = self.core.receive(signed, wall);
        self.commit(&received.batch).await?;
        self.link.confirm(delivery).await?;
        if received.duplicate {
            // The platform re-sends a schedule only while it has stored no ack for it:
            // ours was lost on the way (e.g. a broker dropped it from a full queue).
            // Re-send the unreceipted outbox now instead of waiting for `resend_after`.
            tracing::debug!(?key, "duplicate schedule: confirmed; re-sending the outbox");
            self.core.outbox_mut().reconnected();
            self.last_progress = self.clock.now_mono();
            return Ok(());
        }
        let decided = self.core.decide_pending(wall);
        self.note_skew(decided.clock_skew_s);
        self.commit(&decided.batch).await?;
        for key in &decided.accepted {
            tracing::info!(?key, "schedule accepted");
        }
        for key in &decided.rejected {
            tracing::warn!(?key, "schedule rejected");
        }
        // The next loop iteration ticks (new setpoint at once) and flushes the acks.
        Ok(())
    }
}
