//! Outbox: entries leave only on a receipt, everything unreceipted is re-sent after a
//! reconnect, telemetry (never acks) is dropped on overflow, sequence numbers are never
//! reused (also across a restart).

mod common;

use common::*;
use voltex_agent::acceptance::AckDraft;
use voltex_agent::core::AgentCore;
use voltex_agent::outbox::{Outbox, OutboxConfig, OutboxItem, Sample, next_messages};
use voltex_agent::store::memory::MemoryStore;
use voltex_dispatch::message::{ACK_BATCH_MAX, AckStatus, DeviceId};
use voltex_dispatch::{Message, Receipt};

fn sample(s: i64) -> Sample {
    Sample {
        at: at(s),
        soc_wh: 5_000,
        power_w: 0,
        charged_wh: 0,
        discharged_wh: 0,
        temperature_mc: 25_000,
        health: 0,
    }
}

fn ack(s: i64) -> OutboxItem {
    OutboxItem::Ack(AckDraft {
        key: key(1, 1),
        status: AckStatus::Received,
        at: at(s),
    })
}

fn sent_seqs(outbox: &Outbox, device: &DeviceId) -> Vec<u64> {
    let mut out = Vec::new();
    next_messages(outbox, device, 1_000, &mut out);
    out.iter()
        .flat_map(|(message, _)| match message {
            Message::Telemetry(batch) => batch.samples.iter().map(|t| t.outbox_seq).collect(),
            _ => message.acks().map(|a| a.outbox_seq).collect::<Vec<_>>(),
        })
        .collect()
}

#[test]
fn entries_leave_only_on_a_receipt_not_on_sending() {
    let device = device();
    let mut outbox = Outbox::restore(OutboxConfig::default(), Vec::new(), 1);
    for s in 0..5 {
        outbox.push(OutboxItem::Telemetry(sample(s)));
    }
    outbox.push(ack(5));
    assert_eq!(sent_seqs(&outbox, &device), vec![1, 2, 3, 4, 5, 6]);
    outbox.mark_sent(6);
    assert_eq!(outbox.len(), 6, "sending removes nothing");
    assert!(
        sent_seqs(&outbox, &device).is_empty(),
        "sent once per connection"
    );
    assert_eq!(outbox.receipt(3), 3);
    assert_eq!(outbox.len(), 3);
    assert_eq!(outbox.receipt(2), 0, "an older receipt changes nothing");
    outbox.reconnected();
    assert_eq!(
        sent_seqs(&outbox, &device),
        vec![4, 5, 6],
        "re-sent after reconnect"
    );
    assert_eq!(outbox.receipt(6), 3);
    assert!(outbox.is_empty());
    outbox.check_invariants();
}

fn shape(out: &[(Message, u64)]) -> Vec<(String, u64)> {
    out.iter()
        .map(|(m, last)| match m {
            Message::Telemetry(b) => (format!("telemetry x{}", b.samples.len()), *last),
            Message::Acks(b) => (format!("acks x{}", b.acks.len()), *last),
            _ => ("other".to_string(), *last),
        })
        .collect()
}

#[test]
fn telemetry_and_acks_are_batched_by_kind_in_sequence_order() {
    let device = device();
    let mut outbox = Outbox::restore(OutboxConfig::default(), Vec::new(), 1);
    outbox.push(OutboxItem::Telemetry(sample(0)));
    outbox.push(OutboxItem::Telemetry(sample(10)));
    outbox.push(ack(11));
    outbox.push(OutboxItem::Telemetry(sample(20)));
    outbox.push(ack(21));
    outbox.push(ack(22));
    outbox.push(ack(23));
    let mut out = Vec::new();
    next_messages(&outbox, &device, 10, &mut out);
    assert_eq!(
        shape(&out),
        vec![
            ("telemetry x2".to_string(), 2),
            ("acks x1".to_string(), 3),
            ("telemetry x1".to_string(), 4),
            ("acks x3".to_string(), 7),
        ]
    );
    for (message, _) in &out {
        message
            .validate()
            .expect("every batch is within its bounds");
    }
    // The message limit counts messages, not entries: two give the first two.
    out.clear();
    next_messages(&outbox, &device, 2, &mut out);
    assert_eq!(
        shape(&out),
        vec![("telemetry x2".to_string(), 2), ("acks x1".to_string(), 3)]
    );
}

#[test]
fn a_long_run_of_acks_is_split_at_the_batch_bound() {
    let device = device();
    let mut outbox = Outbox::restore(OutboxConfig::default(), Vec::new(), 1);
    let n_acks = 2 * ACK_BATCH_MAX + 1;
    for s in 0..n_acks {
        outbox.push(ack(s as i64));
    }
    let mut out = Vec::new();
    next_messages(&outbox, &device, 10, &mut out);
    let max = ACK_BATCH_MAX as u64;
    assert_eq!(
        shape(&out),
        vec![
            (format!("acks x{ACK_BATCH_MAX}"), max),
            (format!("acks x{ACK_BATCH_MAX}"), 2 * max),
            ("acks x1".to_string(), 2 * max + 1),
        ]
    );
    assert_eq!(
        sent_seqs(&outbox, &device),
        (1..=n_acks as u64).collect::<Vec<_>>()
    );
}

#[test]
fn overflow_drops_oldest_telemetry_never_acks() {
    let mut outbox = Outbox::restore(OutboxConfig { len_max: 3 }, Vec::new(), 1);
    outbox.push(ack(0));
    outbox.push(OutboxItem::Telemetry(sample(1)));
    outbox.push(OutboxItem::Telemetry(sample(2)));
    let pushed = outbox.push(ack(3));
    assert_eq!(pushed.dropped_seq, Some(2));
    let pushed = outbox.push(ack(4));
    assert_eq!(pushed.dropped_seq, Some(3));
    let pushed = outbox.push(ack(5));
    assert_eq!(pushed.dropped_seq, None, "only acks left: none dropped");
    let seqs: Vec<u64> = outbox.entries().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 4, 5, 6]);
    assert_eq!(outbox.dropped(), 2);
}

#[test]
fn receipt_for_another_device_is_ignored_and_seqs_survive_restart() {
    let mut store = MemoryStore::new();
    let mut core = AgentCore::restore(core_config(), store.state());
    for s in 0..3 {
        let batch = core.push_telemetry(sample(s));
        store.apply(&batch);
    }
    let foreign = Receipt {
        device: DeviceId::new("bat-9999").expect("valid"),
        through_seq: 10,
    };
    assert!(core.on_receipt(&foreign).is_empty());
    let batch = core.on_receipt(&Receipt {
        device: device(),
        through_seq: 3,
    });
    store.apply(&batch);
    assert!(core.outbox().is_empty());
    // Restart with an empty outbox: numbering continues after 3, never reuses it.
    let mut core = AgentCore::restore(core_config(), store.state());
    let batch = core.push_telemetry(sample(4));
    assert_eq!(batch.outbox_push[0].seq, 4);
}
