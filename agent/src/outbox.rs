//! The outbox: acks and telemetry waiting for the platform's receipt.
//!
//! Every report gets the next sequence number when it is queued and stays until a
//! [`Receipt`] with `through_seq >= seq` arrives; sending does not remove anything.
//! After a reconnect everything unreceipted is sent again (the platform deduplicates by
//! `(device, outbox_seq)`), so a crash, a lost connection or a week offline loses no
//! report. The in-memory state here mirrors the store; every change is also returned to
//! the caller (see [`crate::store::WriteBatch`]) so the store stays identical.
//!
//! Bound: at most [`OutboxConfig::len_max`] entries. When full, the oldest *telemetry*
//! sample is dropped (counted in [`Outbox::dropped`]); acks are never dropped, so the
//! outbox may exceed the bound only by acks.
//!
//! # Invariants
//! - Sequence numbers are strictly increasing, never reused (also across restarts:
//!   the high-water mark is persisted), and entries are kept in sequence order.
//! - An entry is removed only by a receipt covering it, or by the telemetry overflow
//!   rule above.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use voltex_dispatch::message::{ACK_BATCH_MAX, HealthFlags, TELEMETRY_BATCH_MAX};
use voltex_dispatch::{AckBatch, AckEntry, DeviceId, Message, Receipt, Telemetry, TelemetryBatch};
use voltex_market::UtcNanos;

use crate::acceptance::AckDraft;

/// One telemetry sample before the outbox numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// Sample time, on the agent's clock.
    pub at: UtcNanos,
    /// Energy stored, in Wh.
    pub soc_wh: i64,
    /// Power now, in W (positive discharge).
    pub power_w: i64,
    /// Energy taken from the grid since commissioning, in Wh.
    pub charged_wh: u64,
    /// Energy delivered to the grid since commissioning, in Wh.
    pub discharged_wh: u64,
    /// Temperature in milli-degrees Celsius.
    pub temperature_mc: i32,
    /// Health flags ([`HealthFlags`] bits).
    pub health: u32,
}

/// What an outbox entry reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutboxItem {
    /// A schedule ack.
    Ack(AckDraft),
    /// A telemetry sample.
    Telemetry(Sample),
}

/// A numbered report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The outbox sequence number.
    pub seq: u64,
    /// The report.
    pub item: OutboxItem,
}

/// Bounds of the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxConfig {
    /// Most entries kept (a week of 10 s telemetry is 60,480).
    pub len_max: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { len_max: 120_000 }
    }
}

/// The outbox. See the module doc.
#[derive(Clone, Debug)]
pub struct Outbox {
    config: OutboxConfig,
    entries: VecDeque<OutboxEntry>,
    next_seq: u64,
    sent_through: u64,
    dropped: u64,
}

/// What [`Outbox::push`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The new entry.
    pub entry: OutboxEntry,
    /// A telemetry entry dropped to make room, if any.
    pub dropped_seq: Option<u64>,
}

impl Outbox {
    /// An outbox restored from stored entries; `next_seq` is the stored high-water mark
    /// (raised past the entries if it is behind them).
    pub fn restore(config: OutboxConfig, mut entries: Vec<OutboxEntry>, next_seq: u64) -> Outbox {
        entries.sort_by_key(|entry| entry.seq);
        entries.dedup_by_key(|entry| entry.seq);
        let next_seq = entries
            .last()
            .map_or(next_seq, |e| next_seq.max(e.seq + 1))
            .max(1);
        Outbox {
            config,
            entries: entries.into(),
            next_seq,
            sent_through: 0,
            dropped: 0,
        }
    }

    /// Queues a report with the next sequence number.
    pub fn push(&mut self, item: OutboxItem) -> Pushed {
        let mut dropped_seq = None;
        if self.entries.len() >= self.config.len_max
            && let Some(idx) = self
                .entries
                .iter()
                .position(|e| matches!(e.item, OutboxItem::Telemetry(_)))
        {
            dropped_seq = self.entries.remove(idx).map(|e| e.seq);
            self.dropped += 1;
        }
        let entry = OutboxEntry {
            seq: self.next_seq,
            item,
        };
        self.next_seq += 1;
        if self.entries.len() < crate::EXACT_GROWTH_BELOW {
            self.entries.reserve_exact(1);
        }
        self.entries.push_back(entry);
        Pushed { entry, dropped_seq }
    }

    /// Drops every entry with `seq <= through_seq`; returns how many. A fully drained
    /// outbox frees its buffer: an agent spends most of its life with nothing
    /// unreceipted, and should not keep the high-water mark of its last outage (nor
    /// should each of a simulated fleet's thousands of agents).
    pub fn receipt(&mut self, through_seq: u64) -> usize {
        let covered = self.entries.partition_point(|e| e.seq <= through_seq);
        self.entries.drain(..covered);
        if self.entries.is_empty() {
            self.entries = VecDeque::new();
        }
        covered
    }

    /// The connection was (re-)established: everything unreceipted is unsent again.
    pub fn reconnected(&mut self) {
        self.sent_through = 0;
    }

    /// Entries not yet sent on this connection, oldest first.
    pub fn unsent(&self) -> impl Iterator<Item = &OutboxEntry> {
        let start = self.entries.partition_point(|e| e.seq <= self.sent_through);
        self.entries.range(start..)
    }

    /// Marks everything up to `seq` as sent on this connection.
    pub fn mark_sent(&mut self, seq: u64) {
        self.sent_through = self.sent_through.max(seq);
    }

    /// The sequence number the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Entries waiting for a receipt.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits for a receipt.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &OutboxEntry> {
        self.entries.iter()
    }

    /// Telemetry samples dropped by the overflow rule since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Asserts the invariants of the module doc.
    ///
    /// # Panics
    /// If one is broken (a bug).
    pub fn check_invariants(&self) {
        for pair in self.entries.iter().zip(self.entries.iter().skip(1)) {
            assert!(pair.0.seq < pair.1.seq, "outbox out of order");
        }
        if let Some(last) = self.entries.back() {
            assert!(
                last.seq < self.next_seq,
                "outbox seq high-water behind entries"
            );
        }
    }
}

/// The wire messages for the next up-to-`max_messages` unsent entries: consecutive acks
/// grouped into [`Message::Acks`] of at most `ACK_BATCH_MAX` (a new schedule yields three
/// or four at once; one message instead of four is a quarter of the broker's work),
/// consecutive telemetry into [`TelemetryBatch`]es of at most `TELEMETRY_BATCH_MAX`.
/// Returns each message with the highest seq it carries, so the caller can
/// [`Outbox::mark_sent`] once it is on the wire.
pub fn next_messages(
    outbox: &Outbox,
    device: &DeviceId,
    max_messages: usize,
    out: &mut Vec<(Message, u64)>,
) {
    let mut batch: Vec<Telemetry> = Vec::new();
    let mut acks: Vec<AckEntry> = Vec::new();
    let mut last_seq = 0;
    // At most one of the two batches holds entries: a change of kind flushes the other,
    // so `last_seq` is always the last entry of the one being flushed.
    let flush_telemetry = |batch: &mut Vec<Telemetry>, last: u64, out: &mut Vec<_>| {
        if !batch.is_empty() {
            let message = Message::Telemetry(TelemetryBatch {
                device: device.clone(),
                samples: std::mem::take(batch),
            });
            out.push((message, last));
        }
    };
    let flush_acks = |acks: &mut Vec<AckEntry>, last: u64, out: &mut Vec<_>| {
        if !acks.is_empty() {
            let message = Message::Acks(AckBatch {
                device: device.clone(),
                acks: std::mem::take(acks),
            });
            out.push((message, last));
        }
    };
    for entry in outbox.unsent() {
        if out.len() >= max_messages {
            break;
        }
        match entry.item {
            OutboxItem::Ack(ack) => {
                flush_telemetry(&mut batch, last_seq, out);
                if out.len() >= max_messages {
                    break;
                }
                acks.push(AckEntry {
                    outbox_seq: entry.seq,
                    schedule_id: ack.key.schedule_id,
                    version: ack.key.version,
                    status: ack.status,
                    at: ack.at,
                });
                last_seq = entry.seq;
                if acks.len() >= ACK_BATCH_MAX {
                    flush_acks(&mut acks, last_seq, out);
                }
            }
            OutboxItem::Telemetry(sample) => {
                flush_acks(&mut acks, last_seq, out);
                if out.len() >= max_messages {
                    break;
                }
                batch.push(Telemetry {
                    outbox_seq: entry.seq,
                    at: sample.at,
                    soc_wh: sample.soc_wh,
                    power_w: sample.power_w,
                    charged_wh: sample.charged_wh,
                    discharged_wh: sample.discharged_wh,
                    temperature_mc: sample.temperature_mc,
                    health: HealthFlags(sample.health),
                });
                last_seq = entry.seq;
                if batch.len() >= TELEMETRY_BATCH_MAX {
                    flush_telemetry(&mut batch, last_seq, out);
                }
            }
        }
    }
    if out.len() < max_messages {
        flush_telemetry(&mut batch, last_seq, out);
        flush_acks(&mut acks, last_seq, out);
    }
}

/// Whether a receipt is for `device` (receipts for others are ignored).
pub fn receipt_applies(receipt: &Receipt, device: &DeviceId) -> bool {
    &receipt.device == device
}
