//! The roll-out orchestrator: signed schedules out, acks and telemetry in.
//!
//! [`Orchestrator`] runs the [`Tracker`] live. [`Orchestrator::roll_out`] validates the
//! schedules, stamps `issued_at` with the orchestrator's clock, signs them with the
//! platform's dispatch key, saves every version through the [`DispatchStore`], and only
//! then hands them to the tracker, which makes them due at once. Tasks:
//!
//! - **one task per [`PlatformLink`]** owns the link: it forwards uplink messages to the
//!   core loop (awaiting room in the bounded uplink queue: back-pressure to the
//!   transport) and sends what the core queued for it. Receiving is polled first so a
//!   flood of sends cannot wedge the transport's inbound queue. Once a schedule left
//!   the link (handed to the transport, or refused by it), the link tells the tracker
//!   ([`Tracker::on_handed_off`]): the retry back-off runs from then, so nothing is
//!   re-sent while an earlier send still waits in a queue.
//! - **the core loop** sends due versions (first attempts and retries, see
//!   [`super::tracker`]) to the link of each device's transport, using only `try_send`
//!   on the bounded link queues, so it never waits for a link; stores uplink acks,
//!   telemetry and heartbeats in batches, applies them to the tracker, persists the
//!   resulting delivery changes, then sends each reporting device one [`Receipt`]; and
//!   keeps the metrics.
//!
//! At start the core loop first restores the tracker from the store (the newest version
//! of every device, its delivery state, last seen: [`Tracker::restore`]); roll-outs
//! wait for that, so a restarted platform neither forgets a pending version nor
//! re-sends or re-issues an acknowledged one.
//!
//! A device is reached over the transport it was registered on
//! ([`Orchestrator::register_device`]), else the one it was last heard on, else
//! [`OrchestratorConfig::default_transport`] (or the first link added).
//!
//! Metrics: `voltex_dispatch_issue_to_ack_seconds` (histogram, issue to first ack of a
//! version), `voltex_dispatch_acks_total{status}` (counter of newly stored acks),
//! `voltex_devices_online` (gauge, heard from within
//! [`TrackerConfig::offline_after`](super::TrackerConfig::offline_after)).
//!
//! # Invariants
//! - A version is saved before its first send; a receipt is sent only after the acks
//!   and telemetry it covers are stored. A store failure means no receipt (the agent
//!   re-sends) or no roll-out (the caller gets the error), never a silent loss.
//! - Every queue is bounded ([`OrchestratorConfig`]); when a link queue is full, due
//!   versions wait in the tracker and receipts are skipped (the agent re-sends and the
//!   next receipt covers it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use voltex_dispatch::message::ProtocolError;
use voltex_dispatch::transport::{PlatformLink, TransportError};
use voltex_dispatch::{
    DeviceId, Message, Receipt, Schedule, ScheduleSigner, SignatureError, SignedSchedule,
};
use voltex_market::UtcNanos;

use super::TransportKind;
use super::store::{DeliveryUpdate, DispatchStore, ScheduleVersionRow, StoreError};
use super::tracker::{
    DeliveryState, DeviceStatus, Dispatch, FleetStatus, RolloutId, RolloutStatus, Tracker,
    TrackerConfig, TrackerError,
};
use crate::server::clock::Clock;

/// Limits and timing of the orchestrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrchestratorConfig {
    /// Retry, deadline, bounds (see [`TrackerConfig`]).
    pub tracker: TrackerConfig,
    /// Transport of devices neither registered nor heard from; `None`: the first link.
    pub default_transport: Option<TransportKind>,
    /// Capacity of each link's outbound queue (schedules and receipts).
    pub link_queue_len: usize,
    /// Capacity of the uplink queue shared by all links.
    pub uplink_queue_len: usize,
    /// Most uplink messages stored per batch.
    pub uplink_batch_max: usize,
    /// Most versions handed to links per wake of the core loop.
    pub dispatch_batch_max: usize,
    /// Longest sleep of the core loop (it also refreshes the online gauge this often).
    pub idle_wake: Duration,
    /// Most schedules per signed batch: each batch gets one signature over a Merkle
    /// tree ([`ScheduleSigner::sign_batch`]), and batches are hashed and signed on
    /// blocking threads in parallel. Deeper trees make each schedule's proof longer
    /// (33 bytes per level), smaller ones cost more signatures.
    pub sign_chunk_len: usize,
}

impl Default for OrchestratorConfig {
    /// Tracker defaults, queues of 65,536, batches of 1,024 (uplink) and 4,096 (sends),
    /// 1 s idle wake, signing in chunks of 1,024.
    fn default() -> Self {
        OrchestratorConfig {
            tracker: TrackerConfig::default(),
            default_transport: None,
            link_queue_len: 65_536,
            uplink_queue_len: 65_536,
            uplink_batch_max: 1_024,
            dispatch_batch_max: 4_096,
            idle_wake: Duration::from_secs(1),
            sign_chunk_len: 1_024,
        }
    }
}

/// Why a roll-out or the orchestrator's start failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A schedule breaks a protocol rule.
    #[error("schedule for {device} is invalid: {source}")]
    Invalid {
        /// Its device.
        device: DeviceId,
        /// The rule broken.
        #[source]
        source: ProtocolError,
    },
    /// The tracker refused the roll-out (stale version, duplicate device, bounds).
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// Signing failed.
    #[error("signing: {0}")]
    Signing(#[from] SignatureError),
    /// Persisting failed; nothing of the roll-out was sent.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configuration limit is zero, or no link / two links of one transport.
    #[error("orchestrator configuration: {0}")]
    Config(String),
    /// The orchestrator has shut down.
    #[error("orchestrator stopped")]
    Stopped,
}

/// Counters of the orchestrator since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchestratorCounters {
    /// Schedules handed to a link queue.
    pub schedules_queued: u64,
    /// Schedules a link accepted for sending.
    pub schedules_sent: u64,
    /// Sends that failed because the device had no connection (QUIC).
    pub sends_not_connected: u64,
    /// Other send failures.
    pub send_errors: u64,
    /// Due versions for whose transport no link exists.
    pub unroutable: u64,
    /// Receipts queued.
    pub receipts_queued: u64,
    /// Receipts skipped because a link queue was full.
    pub receipts_skipped: u64,
    /// Outbox sequence numbers never stored: holes a receipt skipped after waiting
    /// (see "Receipts" in the tracker's doc).
    pub receipt_seqs_given_up: u64,
    /// Acks stored for the first time.
    pub acks_new: u64,
    /// Acks that were already stored (re-sends).
    pub acks_duplicate: u64,
    /// Telemetry batches stored.
    pub telemetry_batches: u64,
    /// Heartbeats stored.
    pub heartbeats: u64,
    /// Store calls that failed.
    pub store_errors: u64,
    /// Re-sends (attempts after the first) handed to links.
    pub retries: u64,
    /// Re-sends that waited for the fleet-wide retry budget.
    pub retries_deferred: u64,
}

#[derive(Debug, Default)]
struct Counters {
    schedules_queued: AtomicU64,
    schedules_sent: AtomicU64,
    sends_not_connected: AtomicU64,
    send_errors: AtomicU64,
    unroutable: AtomicU64,
    receipts_queued: AtomicU64,
    receipts_skipped: AtomicU64,
    receipt_seqs_given_up: AtomicU64,
    acks_new: AtomicU64,
    acks_duplicate: AtomicU64,
    telemetry_batches: AtomicU64,
    heartbeats: AtomicU64,
    store_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> OrchestratorCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OrchestratorCounters {
            schedules_queued: get(&self.schedules_queued),
            schedules_sent: get(&self.schedules_sent),
            sends_not_connected: get(&self.sends_not_connected),
            send_errors: get(&self.send_errors),
            unroutable: get(&self.unroutable),
            receipts_queued: get(&self.receipts_queued),
            receipts_skipped: get(&self.receipts_skipped),
            receipt_seqs_given_up: get(&self.receipt_seqs_given_up),
            acks_new: get(&self.acks_new),
            acks_duplicate: get(&self.acks_duplicate),
            telemetry_batches: get(&self.telemetry_batches),
            heartbeats: get(&self.heartbeats),
            store_errors: get(&self.store_errors),
            retries: 0,
            retries_deferred: 0,
        }
    }
}

/// What the core loop asks a link task to send.
#[derive(Debug)]
enum Outbound {
    /// A schedule and its attempt number.
    Schedule(Arc<SignedSchedule>, u32),
    Receipt(Receipt),
}

/// An uplink message and the transport it came over.
type Uplink = (TransportKind, DeviceId, Message);

type LinkStarter = Box<
    dyn FnOnce(mpsc::Receiver<Outbound>, mpsc::Sender<Uplink>, Arc<Shared>) -> JoinHandle<()>
        + Send,
>;

/// State shared by the handle, the core loop and the link tasks (store excluded).
#[derive(Debug)]
struct Shared {
    tracker: Mutex<Tracker>,
    clock: Arc<dyn Clock>,
    counters: Counters,
    /// Wakes the core loop (new versions are due).
    wake: Notify,
    /// Bumped whenever the tracker changed: [`Orchestrator::wait_finished`] watches it.
    progress: watch::Sender<u64>,
    /// When the core loop means to wake next (UTC ns); [`CORE_BUSY`] while it is
    /// working out when. A link whose hand-off makes a retry due earlier wakes it.
    core_wake_at: AtomicI64,
    /// Set once the core loop restored the tracker from the store; roll-outs wait.
    restored: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
}

/// [`Shared::core_wake_at`] while the core loop is awake.
const CORE_BUSY: i64 = i64::MIN;

impl Shared {
    /// Starts the back-off clock of a schedule the link handed to its transport, and
    /// wakes the core loop if that retry comes before its planned wake.
    fn handed_off(&self, device: &DeviceId, version: u64, attempt: u32) {
        let now = self.now();
        let next = self.tracker().on_handed_off(now, device, version, attempt);
        if let Some(next) = next {
            let wake_at = self.core_wake_at.load(Ordering::Acquire);
            if wake_at == CORE_BUSY || next.0 < wake_at {
                self.wake.notify_one();
            }
        }
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> UtcNanos {
        self.clock.now()
    }

    fn progressed(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Builds an [`Orchestrator`]: configuration, store, key, clock and links.
pub struct OrchestratorBuilder<S> {
    config: OrchestratorConfig,
    store: S,
    signer: ScheduleSigner,
    clock: Arc<dyn Clock>,
    links: Vec<(TransportKind, LinkStarter)>,
}

impl<S: DispatchStore> OrchestratorBuilder<S> {
    /// Adds the platform side of a transport. At most one link per [`TransportKind`].
    pub fn link<L: PlatformLink + 'static>(mut self, kind: TransportKind, link: L) -> Self {
        let starter: LinkStarter = Box::new(move |outbound, uplink, shared| {
            tokio::spawn(drive_link(kind, link, outbound, uplink, shared))
        });
        self.links.push((kind, starter));
        self
    }

    /// Starts the link tasks and the core loop.
    ///
    /// # Errors
    /// [`RolloutError::Config`] for no link, two links of one transport, or a zero
    /// limit.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(self) -> Result<Orchestrator<S>, RolloutError> {
        let config = self.config;
        if self.links.is_empty() {
            return Err(RolloutError::Config("no platform link".into()));
        }
        for (index, (kind, _)) in self.links.iter().enumerate() {
            if self.links[..index].iter().any(|(other, _)| other == kind) {
                return Err(RolloutError::Config(format!("two {kind} links")));
            }
        }
        let limits = [
            config.link_queue_len,
            config.uplink_queue_len,
            config.uplink_batch_max,
            config.dispatch_batch_max,
            config.sign_chunk_len,
            config.tracker.devices_max,
            config.tracker.versions_per_device_max,
            config.tracker.rollouts_max,
        ];
        if limits.contains(&0) {
            return Err(RolloutError::Config("every limit must be > 0".into()));
        }
        let default_transport = config.default_transport.unwrap_or(self.links[0].0);
        let shared = Arc::new(Shared {
            tracker: Mutex::new(Tracker::new(config.tracker.clone())),
            clock: self.clock,
            counters: Counters::default(),
            wake: Notify::new(),
            progress: watch::channel(0).0,
            core_wake_at: AtomicI64::new(CORE_BUSY),
            restored: watch::channel(false).0,
            shutdown: watch::channel(false).0,
        });
        let (uplink_tx, uplink_rx) = mpsc::channel(config.uplink_queue_len);
        let mut routes = Vec::new();
        let mut tasks = Vec::new();
        for (kind, start) in self.links {
            let (tx, rx) = mpsc::channel(config.link_queue_len);
            tasks.push(start(rx, uplink_tx.clone(), shared.clone()));
            routes.push((kind, tx));
        }
        drop(uplink_tx);
        let store = Arc::new(self.store);
        let core = Core {
            shared: shared.clone(),
            store_warnings: WarnThrottle::default(),
            store: store.clone(),
            routes,
            default_transport,
            dispatch_batch_max: config.dispatch_batch_max,
            uplink_batch_max: config.uplink_batch_max,
            idle_wake: config.idle_wake,
        };
        tasks.push(tokio::spawn(core.run(uplink_rx)));
        Ok(Orchestrator {
            inner: Arc::new(Inner {
                shared,
                store,
                signer: Arc::new(self.signer),
                issue_lock: tokio::sync::Mutex::new(()),
                tasks: Mutex::new(tasks),
                sign_chunk_len: config.sign_chunk_len,
            }),
        })
    }
}

struct Inner<S> {
    shared: Arc<Shared>,
    store: Arc<S>,
    signer: Arc<ScheduleSigner>,
    /// Serialises roll-outs, so version checks and inserts cannot interleave.
    issue_lock: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    sign_chunk_len: usize,
}

/// The running orchestrator; cloning gives another handle to the same one. See the
/// module doc.
pub struct Orchestrator<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Orchestrator<S> {
    fn clone(&self) -> Self {
        Orchestrator {
            inner: self.inner.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Orchestrator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("counters", &self.inner.shared.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl<S: DispatchStore> Orchestrator<S> {
    /// A builder; add links with [`OrchestratorBuilder::link`], then
    /// [`OrchestratorBuilder::start`].
    pub fn builder(
        config: OrchestratorConfig,
        store: S,
        signer: ScheduleSigner,
        clock: Arc<dyn Clock>,
    ) -> OrchestratorBuilder<S> {
        OrchestratorBuilder {
            config,
            store,
            signer,
            clock,
            links: Vec::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Registers the transport a device is reached over.
    ///
    /// # Errors
    /// [`RolloutError::Tracker`] when the device bound is reached.
    pub fn register_device(
        &self,
        device: &DeviceId,
        transport: TransportKind,
    ) -> Result<(), RolloutError> {
        Ok(self.inner.shared.tracker().register(device, transport)?)
    }

    /// Issues one roll-out with each version's default deadline (see
    /// [`TrackerConfig::delivery_timeout`]).
    ///
    /// # Errors
    /// See [`Orchestrator::roll_out_with_deadline`].
    pub async fn roll_out(&self, schedules: Vec<Schedule>) -> Result<RolloutId, RolloutError> {
        self.roll_out_with_deadline(schedules, None).await
    }

    /// Issues one roll-out: validates, stamps `issued_at` with the clock, signs, saves
    /// every version, then starts delivery. `deadline` (capped at nothing: a deadline
    /// after `valid_until` is the caller's choice) applies to every version; `None`
    /// uses the default. Returns once every version is saved and due; delivery goes
    /// on in the background ([`Orchestrator::rollout_status`],
    /// [`Orchestrator::wait_finished`]).
    ///
    /// # Errors
    /// [`RolloutError::Invalid`], [`RolloutError::Tracker`] (stale version, duplicate
    /// device, bounds), [`RolloutError::Signing`], [`RolloutError::Store`] (nothing
    /// was sent; versions saved before the failure stay `issued` and are never sent).
    ///
    /// # Cancellation
    /// Not cancel-safe: a cancelled call may have saved some versions without
    /// sending them. Callers (HTTP handlers) should let it finish.
    pub async fn roll_out_with_deadline(
        &self,
        mut schedules: Vec<Schedule>,
        deadline: Option<UtcNanos>,
    ) -> Result<RolloutId, RolloutError> {
        let inner = &self.inner;
        if *inner.shared.shutdown.borrow() {
            return Err(RolloutError::Stopped);
        }
        self.wait_restored().await;
        let _serial = inner.issue_lock.lock().await;
        for schedule in &schedules {
            schedule
                .validate()
                .map_err(|source| RolloutError::Invalid {
                    device: schedule.device.clone(),
                    source,
                })?;
        }
        inner.shared.tracker().check_issue(schedules.iter())?;
        let now = inner.shared.now();
        for schedule in &mut schedules {
            schedule.issued_at = now;
        }
        let deadlines: Vec<UtcNanos> = {
            let tracker = inner.shared.tracker();
            schedules
                .iter()
                .map(|s| deadline.unwrap_or_else(|| tracker.default_deadline(now, s)))
                .collect()
        };
        let signed = self.sign_all(schedules).await?;
        let mut versions = Vec::with_capacity(signed.len());
        for (signed, deadline) in signed.into_iter().zip(deadlines) {
            let signed = Arc::new(signed);
            let row = ScheduleVersionRow {
                // The id is only known after `issue`; rows carry the lower bound the
                // tracker will use (ids are >= issue time in ns).
                rollout: RolloutId(u64::try_from(now.0).unwrap_or(0)),
                signed: signed.clone(),
                issued_at: now,
                deadline,
            };
            inner.store.save_schedule(&row).await?;
            versions.push((signed, deadline));
        }
        let mut updates = Vec::new();
        let id = inner.shared.tracker().issue(now, versions, &mut updates)?;
        persist(&*inner.store, &inner.shared.counters, &updates).await;
        inner.shared.wake.notify_one();
        inner.shared.progressed();
        tracing::info!(rollout = %id, "roll-out issued");
        Ok(id)
    }

    /// Waits until the tracker was restored from the store at start (see
    /// [`Tracker::restore`]); roll-outs wait for it too.
    ///
    /// # Cancellation
    /// Cancel-safe.
    pub async fn wait_restored(&self) {
        let mut restored = self.inner.shared.restored.subscribe();
        let _ = restored.wait_for(|done| *done).await;
    }

    /// Signs in batches of `sign_chunk_len` on blocking threads (one ed25519
    /// signature per batch, over a Merkle root; see [`ScheduleSigner::sign_batch`]).
    async fn sign_all(
        &self,
        schedules: Vec<Schedule>,
    ) -> Result<Vec<SignedSchedule>, RolloutError> {
        let chunk_len = self.inner.sign_chunk_len;
        if schedules.len() <= chunk_len {
            return Ok(self.inner.signer.sign_batch(schedules)?);
        }
        let mut chunks = Vec::new();
        let mut rest = schedules;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(chunk_len));
            chunks.push(std::mem::replace(&mut rest, tail));
        }
        let tasks: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let signer = self.inner.signer.clone();
                tokio::task::spawn_blocking(move || signer.sign_batch(chunk))
            })
            .collect();
        let mut signed = Vec::new();
        for task in tasks {
            let chunk = task.await.map_err(|_| RolloutError::Stopped)??;
            signed.extend(chunk);
        }
        Ok(signed)
    }

    /// The operator's snapshot of a roll-out (`None` if unknown or dropped).
    pub fn rollout_status(&self, rollout: RolloutId) -> Option<RolloutStatus> {
        let now = self.inner.shared.now();
        self.inner.shared.tracker().rollout_status(rollout, now)
    }

    /// One device (`None` if never issued to, registered or heard from).
    pub fn device_status(&self, device: &DeviceId) -> Option<DeviceStatus> {
        let now = self.inner.shared.now();
        self.inner.shared.tracker().device_status(device, now)
    }

    /// The fleet at a glance.
    pub fn fleet_status(&self) -> FleetStatus {
        let now = self.inner.shared.now();
        self.inner.shared.tracker().fleet_status(now)
    }

    /// The state of one version, if tracked.
    pub fn version_state(&self, device: &DeviceId, version: u64) -> Option<DeliveryState> {
        self.inner.shared.tracker().version_state(device, version)
    }

    /// Delivery attempts of one version, if tracked.
    pub fn version_attempts(&self, device: &DeviceId, version: u64) -> Option<u32> {
        self.inner
            .shared
            .tracker()
            .version_attempts(device, version)
    }

    /// Issue-to-first-ack latencies of a roll-out's acknowledged versions.
    pub fn ack_latencies(&self, rollout: RolloutId) -> Vec<Duration> {
        self.inner.shared.tracker().ack_latencies(rollout)
    }

    /// Counters since start.
    pub fn counters(&self) -> OrchestratorCounters {
        let mut counters = self.inner.shared.counters.snapshot();
        let (retries, deferred) = self.inner.shared.tracker().retry_counts();
        counters.retries = retries;
        counters.retries_deferred = deferred;
        counters
    }

    /// The p99 of recent hand-off-to-first-ack latencies the retry back-off starts
    /// from (see [`super::tracker`]), once enough were observed.
    pub fn ack_latency_p99(&self) -> Option<Duration> {
        self.inner.shared.tracker().latency_p99()
    }

    /// Asserts the tracker's invariants (tests).
    ///
    /// # Panics
    /// If one is broken.
    pub fn check_invariants(&self) {
        self.inner.shared.tracker().check_invariants();
    }

    /// Waits until `predicate` holds for the tracker's view, re-checking after every
    /// change (acks, deadlines, new roll-outs). No timeout: wrap it in one.
    ///
    /// # Cancellation
    /// Cancel-safe.
    pub async fn wait_until(&self, mut predicate: impl FnMut(&Orchestrator<S>) -> bool) {
        let mut progress = self.inner.shared.progress.subscribe();
        loop {
            if predicate(self) {
                return;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until every version of `rollout` stopped waiting for its first ack
    /// (acknowledged, failed at its deadline, or superseded). No timeout: wrap it.
    ///
    /// # Cancellation
    /// Cancel-safe.
    pub async fn wait_finished(&self, rollout: RolloutId) {
        self.wait_until(|o| o.inner.shared.tracker().is_finished(rollout))
            .await;
    }

    /// Stops the core loop and the link tasks (dropping the links) and waits for them.
    /// Other handles then get [`RolloutError::Stopped`].
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown.send_replace(true);
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Persists delivery changes; failures are logged and counted (the tracker holds the
/// truth while the process lives, and the next change of the version rewrites it).
async fn persist<S: DispatchStore>(store: &S, counters: &Counters, updates: &[DeliveryUpdate]) {
    for update in updates {
        if let Err(error) = store.update_delivery(update).await {
            bump(&counters.store_errors);
            tracing::warn!(%error, ?update, "could not persist a delivery update");
        }
    }
}

/// Owns one link: uplink to the core, outbound from the core.
async fn drive_link<L: PlatformLink>(
    kind: TransportKind,
    mut link: L,
    mut outbound: mpsc::Receiver<Outbound>,
    uplink: mpsc::Sender<Uplink>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let counters = &shared.counters;
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            received = link.recv() => match received {
                Ok((device, message)) => {
                    if uplink.send((kind, device, message)).await.is_err() {
                        break;
                    }
                }
                Err(TransportError::Closed) => {
                    tracing::warn!(transport = %kind, "platform link closed");
                    break;
                }
                Err(error) => tracing::warn!(transport = %kind, %error, "uplink receive failed"),
            },
            next = outbound.recv() => {
                let Some(next) = next else { break };
                let (device, message, attempt) = match next {
                    Outbound::Schedule(signed, attempt) => (
                        signed.schedule.device.clone(),
                        Message::Schedule((*signed).clone()),
                        Some((signed.schedule.version, attempt)),
                    ),
                    Outbound::Receipt(receipt) => {
                        (receipt.device.clone(), Message::Receipt(receipt), None)
                    }
                };
                let sent = link.send_to(&device, &message).await;
                // Sent or not (not connected, send error), the attempt left the queue:
                // its back-off clock starts now.
                if let Some((version, attempt)) = attempt {
                    shared.handed_off(&device, version, attempt);
                }
                match sent {
                    Ok(()) if attempt.is_some() => bump(&counters.schedules_sent),
                    Ok(()) => {}
                    Err(TransportError::NotConnected(_)) => bump(&counters.sends_not_connected),
                    Err(TransportError::Closed) => {
                        tracing::warn!(transport = %kind, "platform link closed");
                        break;
                    }
                    Err(error) => {
                        bump(&counters.send_errors);
                        tracing::warn!(transport = %kind, %device, %error, "send failed");
                    }
                }
            }
        }
    }
}

/// A stored uplink message, ready to apply to the tracker.
enum Stored {
    Ack {
        ack: voltex_dispatch::Ack,
        new: bool,
    },
    Telemetry {
        seqs: Vec<u64>,
        soc_wh: Option<i64>,
    },
    Heartbeat,
}

/// Shortest time between two warnings of one kind from the core loop.
const STORE_WARNING_INTERVAL_NS: i64 = 1_000_000_000;

/// Lets a repeated warning through at most once per [`STORE_WARNING_INTERVAL_NS`] and
/// counts the ones it holds back, so a flood of bad messages cannot flood the log.
#[derive(Debug)]
struct WarnThrottle {
    last_ns: AtomicI64,
    held_back: AtomicU64,
}

impl Default for WarnThrottle {
    fn default() -> WarnThrottle {
        WarnThrottle {
            last_ns: AtomicI64::new(i64::MIN),
            held_back: AtomicU64::new(0),
        }
    }
}

impl WarnThrottle {
    /// `Some(n held back since the last one)` if a warning may go out at `now`.
    fn allow(&self, now: UtcNanos) -> Option<u64> {
        let last = self.last_ns.load(Ordering::Relaxed);
        if last != i64::MIN && now.nanos().saturating_sub(last) < STORE_WARNING_INTERVAL_NS {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last_ns.store(now.nanos(), Ordering::Relaxed);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

/// The core loop. See the module doc.
struct Core<S> {
    shared: Arc<Shared>,
    /// Warnings about uplink messages that could not be stored (a device sending for
    /// an id this platform does not know, say) are let through at most once per
    /// [`STORE_WARNING_INTERVAL_NS`].
    store_warnings: WarnThrottle,
    store: Arc<S>,
    routes: Vec<(TransportKind, mpsc::Sender<Outbound>)>,
    default_transport: TransportKind,
    dispatch_batch_max: usize,
    uplink_batch_max: usize,
    idle_wake: Duration,
}

impl<S: DispatchStore> Core<S> {
    /// Rebuilds the tracker from the store's resume state (see [`Tracker::restore`]).
    async fn restore(&self) {
        match self.store.load_resume_state().await {
            Ok(devices) => {
                let n_devices = devices.len();
                let now = self.shared.now();
                let n_pending = self.shared.tracker().restore(now, devices);
                tracing::info!(
                    n_devices,
                    n_pending,
                    "dispatch state restored from the store"
                );
            }
            Err(error) => {
                bump(&self.shared.counters.store_errors);
                tracing::error!(%error, "could not restore dispatch state; starting empty");
            }
        }
        self.shared.restored.send_replace(true);
        self.shared.progressed();
    }

    async fn run(self, mut uplink: mpsc::Receiver<Uplink>) {
        self.restore().await;
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut batch = Vec::with_capacity(self.uplink_batch_max);
        let mut dispatches = Vec::new();
        let mut updates = Vec::new();
        let mut next_gauge = self.shared.now();
        loop {
            let now = self.shared.now();
            let backlog = self.dispatch_due(now, &mut dispatches, &mut updates).await;
            if now >= next_gauge {
                let n_online = self.shared.tracker().n_online(now);
                metrics::gauge!("voltex_devices_online").set(n_online as f64);
                next_gauge = UtcNanos(now.0.saturating_add(nanos(self.idle_wake)));
            }
            let wake = match backlog {
                Backlog::More => Duration::ZERO,
                Backlog::LinksFull => Duration::from_millis(1),
                Backlog::None => {
                    let next_due = self.shared.tracker().next_due();
                    let until = next_due.map_or(next_gauge, |due| due.min(next_gauge));
                    until_from(now, until).min(self.idle_wake)
                }
            };
            // Links may make a retry due earlier (hand-offs) from here on: they wake us
            // if it comes before this. A hand-off between `next_due` above and this
            // store saw CORE_BUSY and left a wake permit.
            self.shared
                .core_wake_at
                .store(now.0.saturating_add(nanos(wake)), Ordering::Release);
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                n = uplink.recv_many(&mut batch, self.uplink_batch_max) => {
                    if n == 0 {
                        tracing::warn!("every platform link has stopped");
                        break;
                    }
                    self.handle_uplink(&mut batch, &mut updates).await;
                }
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep(wake) => {}
            }
            self.shared.core_wake_at.store(CORE_BUSY, Ordering::Release);
        }
    }

    fn route(&self, transport: Option<TransportKind>) -> Option<&mpsc::Sender<Outbound>> {
        let kind = transport.unwrap_or(self.default_transport);
        self.routes
            .iter()
            .find(|(route, _)| *route == kind)
            .map(|(_, tx)| tx)
    }

    /// Hands due versions to the links.
    async fn dispatch_due(
        &self,
        now: UtcNanos,
        dispatches: &mut Vec<Dispatch>,
        updates: &mut Vec<DeliveryUpdate>,
    ) -> Backlog {
        let room = self
            .routes
            .iter()
            .map(|(_, tx)| tx.capacity())
            .min()
            .unwrap_or(0)
            .min(self.dispatch_batch_max);
        if room == 0 {
            return Backlog::LinksFull;
        }
        dispatches.clear();
        updates.clear();
        self.shared
            .tracker()
            .take_due(now, room, dispatches, updates);
        let counters = &self.shared.counters;
        let n_dispatched = dispatches.len();
        for dispatch in dispatches.drain(..) {
            let version = dispatch.signed.schedule.version;
            let Some(tx) = self.route(dispatch.transport) else {
                bump(&counters.unroutable);
                self.shared
                    .handed_off(&dispatch.device, version, dispatch.attempt);
                continue;
            };
            match tx.try_send(Outbound::Schedule(dispatch.signed, dispatch.attempt)) {
                Ok(()) => bump(&counters.schedules_queued),
                // The capacity was checked and only this loop sends: a closed link.
                Err(_) => {
                    bump(&counters.send_errors);
                    self.shared
                        .handed_off(&dispatch.device, version, dispatch.attempt);
                }
            }
        }
        // Attempts and deadline failures are progress too (waiters may watch them).
        let changed = !updates.is_empty();
        persist(&*self.store, counters, updates).await;
        if changed {
            self.shared.progressed();
        }
        if n_dispatched >= room {
            Backlog::More
        } else {
            Backlog::None
        }
    }

    /// Keeps a stored uplink report for the tracker, or counts and logs why it could not
    /// be stored (it gets no receipt: the agent re-sends it).
    fn keep_stored(
        &self,
        result: Result<Stored, StoreError>,
        kind: TransportKind,
        device: &DeviceId,
        now: UtcNanos,
        stored: &mut Vec<(TransportKind, DeviceId, Stored)>,
    ) {
        match result {
            Ok(stored_message) => stored.push((kind, device.clone(), stored_message)),
            Err(error) => {
                bump(&self.shared.counters.store_errors);
                metrics::counter!("voltex_dispatch_uplink_store_errors_total").increment(1);
                if let Some(held_back) = self.store_warnings.allow(now) {
                    tracing::warn!(
                        %device, %error, held_back,
                        "could not store an uplink message; no receipt \
                         (held_back: like warnings suppressed since the last one)"
                    );
                }
            }
        }
    }

    /// Stores a batch of uplink messages, applies them, persists the changes, sends
    /// receipts.
    async fn handle_uplink(&self, batch: &mut Vec<Uplink>, updates: &mut Vec<DeliveryUpdate>) {
        let now = self.shared.now();
        let counters = &self.shared.counters;
        let mut stored = Vec::with_capacity(batch.len());
        for (kind, device, message) in batch.drain(..) {
            let result = match message {
                Message::Ack(ack) => self
                    .store
                    .record_ack(&ack, kind, now)
                    .await
                    .map(|new| Stored::Ack { ack, new }),
                Message::Acks(acks) => {
                    // Each ack on its own: one that fails to store leaves a hole the
                    // receipt stops below, and the agent re-sends from there.
                    for ack in acks.iter_acks() {
                        let result = self
                            .store
                            .record_ack(&ack, kind, now)
                            .await
                            .map(|new| Stored::Ack { ack, new });
                        self.keep_stored(result, kind, &device, now, &mut stored);
                    }
                    continue;
                }
                Message::Telemetry(telemetry) => {
                    let seqs: Vec<u64> = telemetry.samples.iter().map(|s| s.outbox_seq).collect();
                    let soc_wh = telemetry
                        .samples
                        .iter()
                        .max_by_key(|s| s.at)
                        .map(|s| s.soc_wh);
                    self.store
                        .record_telemetry(&telemetry, now)
                        .await
                        .map(|_| Stored::Telemetry { seqs, soc_wh })
                }
                Message::Heartbeat(heartbeat) => self
                    .store
                    .record_heartbeat(&heartbeat, now)
                    .await
                    .map(|()| Stored::Heartbeat),
                // Links return uplink kinds only.
                Message::Schedule(_) | Message::Receipt(_) => continue,
            };
            self.keep_stored(result, kind, &device, now, &mut stored);
        }
        updates.clear();
        let mut receipts: HashMap<DeviceId, (TransportKind, u64)> = HashMap::new();
        let mut latencies = Vec::new();
        let mut new_statuses = Vec::new();
        {
            let mut tracker = self.shared.tracker();
            for (kind, device, stored_message) in stored {
                let receipted = match &stored_message {
                    Stored::Ack { ack, .. } => {
                        tracker.on_uplink(now, &device, kind, &[ack.outbox_seq], None)
                    }
                    Stored::Telemetry { seqs, soc_wh } => {
                        tracker.on_uplink(now, &device, kind, seqs, *soc_wh)
                    }
                    Stored::Heartbeat => tracker.on_uplink(now, &device, kind, &[], None),
                };
                match stored_message {
                    Stored::Ack { ack, new: true } => {
                        bump(&counters.acks_new);
                        new_statuses.push(DeliveryState::of_ack(ack.status).name());
                        let effect = tracker.on_ack(now, &ack, updates);
                        latencies.extend(effect.first_ack_latency);
                    }
                    Stored::Ack { new: false, .. } => bump(&counters.acks_duplicate),
                    Stored::Telemetry { .. } => bump(&counters.telemetry_batches),
                    Stored::Heartbeat => bump(&counters.heartbeats),
                }
                if let Some(receipted) = receipted {
                    if receipted.n_skipped > 0 {
                        counters
                            .receipt_seqs_given_up
                            .fetch_add(receipted.n_skipped, Ordering::Relaxed);
                        metrics::counter!("voltex_dispatch_receipt_seqs_given_up_total")
                            .increment(receipted.n_skipped);
                        tracing::warn!(%device, n_skipped = receipted.n_skipped, "outbox sequence numbers never arrived; receipting past them");
                    }
                    let through = receipted.through_seq;
                    let receipt = receipts.entry(device).or_insert((kind, through));
                    *receipt = (kind, receipt.1.max(through));
                }
            }
        }
        for status in new_statuses {
            metrics::counter!("voltex_dispatch_acks_total", "status" => status).increment(1);
        }
        for latency in latencies {
            metrics::histogram!("voltex_dispatch_issue_to_ack_seconds")
                .record(latency.as_secs_f64());
        }
        persist(&*self.store, counters, updates).await;
        if !updates.is_empty() {
            self.shared.progressed();
        }
        for (device, (kind, through_seq)) in receipts {
            let Some((_, tx)) = self.routes.iter().find(|(route, _)| *route == kind) else {
                continue;
            };
            let receipt = Receipt {
                device,
                through_seq,
            };
            match tx.try_send(Outbound::Receipt(receipt)) {
                Ok(()) => bump(&counters.receipts_queued),
                Err(_) => bump(&counters.receipts_skipped),
            }
        }
    }
}

/// Whether the core loop should come back at once.
enum Backlog {
    /// More versions are due than one batch took.
    More,
    /// A link queue is full.
    LinksFull,
    /// Nothing more is due now.
    None,
}

/// Completes once shutdown is requested (or the sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

fn until_from(now: UtcNanos, then: UtcNanos) -> Duration {
    Duration::from_nanos(u64::try_from(then.0.saturating_sub(now.0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_goes_out_once_per_interval_with_the_count_held_back() {
        let throttle = WarnThrottle::default();
        let at = |ms: i64| UtcNanos(1_000_000_000_000 + ms * 1_000_000);
        assert_eq!(throttle.allow(at(0)), Some(0));
        assert_eq!(throttle.allow(at(400)), None);
        assert_eq!(throttle.allow(at(999)), None);
        assert_eq!(throttle.allow(at(1_000)), Some(2));
        assert_eq!(throttle.allow(at(1_500)), None);
        assert_eq!(throttle.allow(at(5_000)), Some(1));
        assert_eq!(throttle.allow(at(5_001)), None);
    }
}
