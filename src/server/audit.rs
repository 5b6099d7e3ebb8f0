//! Audit-log records: the writer (group commit) for calls that are not journaled, and
//! the projection of journaled order commands' records from the engine's journal.
//!
//! An order call (submit, cancel, modify) sends its command with its origin (actor,
//! role, correlation id; `voltex_engine::command::CommandOrigin`). Once the sequencer
//! has journaled it, the command and its origin are as durable as they will ever be,
//! so the call's audit record needs no write of its own: [`journaled_records`] derives
//! it from the command and its events (at the sequencer's sink, and again at each
//! journal replay), and the persister stores it with the events, keyed by the
//! command's seq (`audit_log.command_seq`, unique: a replay adds nothing twice). One
//! durable write per order, not two. The record's result is the engine's verdict in
//! the API's codes ([`book_command_refusal`]); its time is the command's `now`.
//! The derivation runs on the sequencer's thread, before the batch's acks: a handful
//! of small allocations per order command, next to the batch's journal fsync (about
//! 0.4 ms); the sequencer call's mean fell from 0.50–0.58 to 0.41–0.44 ms with this
//! change, as the audit commits stopped competing for the disk.
//!
//! Everything else (calls refused before the sequencer, curve and device calls, an
//! order whose origin does not fit a command) goes through the writer:
//! such a call waits until its audit record is stored before it answers
//! (the record is part of the call's outcome). One INSERT transaction per call made
//! audit the bottleneck of order entry on SQLite, whose single writer the persister
//! also needs; here concurrent callers share transactions instead: the writer takes
//! whatever is queued (up to [`AUDIT_BATCH_MAX`]), stores it in one transaction and
//! answers each caller with that transaction's outcome.
//!
//! One batch commits at a time, also on PostgreSQL. Letting up to four commit at once
//! there was measured (`voltex bench api --quick --rate 5000`, PostgreSQL, three runs
//! each): the audit wait fell from about 1.3 to 1.0 ms, but the journal's commit rose
//! from about 0.6 to 0.9 ms, both waiting on the same disk's flushes, and the p99 got
//! worse (6.7–7.6 ms, against 5.6–6.7 ms one at a time). What did pay was fewer round
//! trips per batch: one multi-row INSERT instead of BEGIN, one INSERT per record and
//! COMMIT (`Db::append_audit_batch`) took the audit wait from 1.09–1.22 to 0.54–0.64 ms
//! in paired runs. Journaling order calls' records with their commands then took the
//! audit wait off the order path altogether (see ARCHITECTURE.md for the numbers).
//!
//! Guarantees: a journaled order's record is in the journal before the call answers
//! and reaches `audit_log` with its command's events (at the latest at the next
//! start's replay), once; a writer caller hears `Ok` only after its record is
//! committed; records of one batch are committed together or not at all; the queue is
//! bounded ([`AUDIT_QUEUE_LEN_MAX`]), so a slow database slows callers down
//! (back-pressure) rather than growing memory.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use voltex_engine::command::{CommandKind, Committed};
use voltex_market::book::BookCommand;

use crate::db::{Db, NewAuditEntry};
use crate::server::problem::book_command_refusal;

/// Most records queued for the writer; callers wait for room beyond it.
pub const AUDIT_QUEUE_LEN_MAX: usize = 8_192;

/// Most records stored in one transaction.
pub const AUDIT_BATCH_MAX: usize = 512;

/// Why an audit record was not stored.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuditError {
    /// The batch's transaction failed.
    #[error("audit write failed: {0}")]
    Write(String),
    /// The writer has stopped (server shutting down).
    #[error("the audit writer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<(), AuditError>>;

/// Handle to the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    queue: mpsc::Sender<(NewAuditEntry, Reply)>,
}

impl AuditWriter {
    /// Starts the writer over `db`. The task ends when every handle is dropped, after
    /// storing what is queued.
    pub fn spawn(db: Db) -> (AuditWriter, JoinHandle<()>) {
        let (queue, mut rx) = mpsc::channel::<(NewAuditEntry, Reply)>(AUDIT_QUEUE_LEN_MAX);
        let task = tokio::spawn(async move {
            let mut entries = Vec::with_capacity(AUDIT_BATCH_MAX);
            let mut replies = Vec::with_capacity(AUDIT_BATCH_MAX);
            while let Some((entry, reply)) = rx.recv().await {
                entries.push(entry);
                replies.push(reply);
                while entries.len() < AUDIT_BATCH_MAX {
                    match rx.try_recv() {
                        Ok((entry, reply)) => {
                            entries.push(entry);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                let outcome = db
                    .append_audit_batch(&entries)
                    .await
                    .map_err(|error| AuditError::Write(error.to_string()));
                metrics::histogram!("voltex_audit_batch_records").record(entries.len() as f64);
                for reply in replies.drain(..) {
                    // A caller that went away (client disconnected) needs no answer.
                    let _ = reply.send(outcome.clone());
                }
                entries.clear();
            }
        });
        (AuditWriter { queue }, task)
    }

    /// Queues `entry` and waits until its batch is committed.
    ///
    /// # Errors
    /// [`AuditError::Write`] if the batch's transaction failed, [`AuditError::Stopped`]
    /// if the writer is gone.
    ///
    /// The wait (queue and commit) is recorded in `voltex_audit_append_seconds`.
    pub async fn append(&self, entry: NewAuditEntry) -> Result<(), AuditError> {
        let started = super::clock::monotonic();
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((entry, reply))
            .await
            .map_err(|_| AuditError::Stopped)?;
        let stored = answer.await.map_err(|_| AuditError::Stopped)?;
        metrics::histogram!("voltex_audit_append_seconds").record(started.elapsed().as_secs_f64());
        stored
    }
}

/// Appends to `out` the audit record of each command in `committed` that carries an
/// origin (the API gives one to order commands only; a command of another kind with
/// an origin is recorded with the engine's refusal code or `ok`).
pub fn journaled_records(committed: Committed<'_>, out: &mut Vec<NewAuditEntry>) {
    for (command, ack, events) in committed.per_command() {
        let Some(origin) = &command.origin else {
            continue;
        };
        let (action, target) = match &command.kind {
            CommandKind::Book { command, product } => match command {
                BookCommand::Submit(order) => ("order.submit", format!("order:{}", order.id.0)),
                BookCommand::Cancel { id, .. } => ("order.cancel", format!("order:{}", id.0)),
                BookCommand::Modify { id, .. } => ("order.modify", format!("order:{}", id.0)),
                BookCommand::Halt => ("book.halt", format!("product:{}", product.0)),
                BookCommand::Resume => ("book.resume", format!("product:{}", product.0)),
                BookCommand::Close => ("book.close", format!("product:{}", product.0)),
            },
            CommandKind::AddProduct { product, .. } | CommandKind::ListProduct { product, .. } => {
                ("product.add", format!("product:{}", product.0))
            }
            CommandKind::AdvanceTime => ("time.advance", "engine".to_string()),
            CommandKind::SubmitCurve { product, .. } => {
                ("curve.submit", format!("product:{}", product.0))
            }
            CommandKind::WithdrawCurve { product, .. } => {
                ("curve.withdraw", format!("product:{}", product.0))
            }
            CommandKind::SubmitFamily {
                account, family, ..
            } => (
                "family.submit",
                format!("family:{}/{}", account.0, family.0),
            ),
            CommandKind::WithdrawFamily { account, family } => (
                "family.withdraw",
                format!("family:{}/{}", account.0, family.0),
            ),
        };
        let result = events
            .iter()
            .find_map(book_command_refusal)
            .map_or("ok", |(code, _)| code);
        out.push(NewAuditEntry {
            at_ns: command.now.0,
            actor: origin.actor().to_string(),
            role: origin.role().to_string(),
            action: action.to_string(),
            target,
            correlation_id: origin.correlation_id().to_string(),
            result: result.to_string(),
            detail: None,
            command_seq: Some(ack.seq),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> NewAuditEntry {
        NewAuditEntry {
            at_ns: 1_767_607_200_000_000_000 + n as i64,
            actor: format!("trader-{}", n % 7),
            role: "trader".into(),
            action: "order.submit".into(),
            target: format!("order/{n}"),
            correlation_id: format!("c-{n}"),
            result: "ok".into(),
            detail: None,
            command_seq: None,
        }
    }

    #[test]
    fn journaled_records_carry_the_origin_and_the_engines_verdict_of_each_command() {
        use voltex_engine::command::{Ack, CommandOrigin, EngineCommand, EngineEvent, EventKind};
        use voltex_market::book::{BookEvent, RejectReason};
        use voltex_market::{AccountId, OrderId, ProductId, UtcNanos};

        let cancel = |id: u64| {
            EngineCommand::book(
                UtcNanos(1_000 + id as i64),
                ProductId(5),
                BookCommand::Cancel {
                    id: OrderId(id),
                    account: AccountId(1),
                },
            )
        };
        let origin = CommandOrigin::new("bob".into(), "trader".into(), "c-9".into()).unwrap();
        let commands = [
            cancel(7).with_origin(origin.clone()),
            cancel(8), // no origin: audited elsewhere, not here
            cancel(9).with_origin(origin),
        ];
        let event = |event_seq: u64, command_seq: u64, kind: EventKind| EngineEvent {
            event_seq,
            command_seq,
            now: UtcNanos(1_000),
            product: ProductId(5),
            kind,
        };
        let refused = |id: u64| {
            EventKind::Book(BookEvent::Rejected {
                id: OrderId(id),
                reason: RejectReason::UnknownOrder,
            })
        };
        let events = [
            event(
                20,
                10,
                EventKind::Book(BookEvent::Cancelled {
                    id: OrderId(7),
                    qty: voltex_market::Qty(3),
                    reason: voltex_market::book::CancelReason::Requested,
                }),
            ),
            event(21, 11, refused(8)),
            event(22, 12, refused(9)),
        ];
        let acks = [10, 11, 12].map(|seq| Ack {
            seq,
            first_event_seq: seq + 10,
            end_event_seq: seq + 11,
        });
        let mut records = Vec::new();
        journaled_records(
            Committed {
                commands: &commands,
                acks: &acks,
                events: &events,
            },
            &mut records,
        );
        let summary: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.command_seq,
                    r.action.as_str(),
                    r.target.as_str(),
                    r.result.as_str(),
                    r.actor.as_str(),
                    r.correlation_id.as_str(),
                    r.at_ns,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    Some(10),
                    "order.cancel",
                    "order:7",
                    "ok",
                    "bob",
                    "c-9",
                    1_007
                ),
                (
                    Some(12),
                    "order.cancel",
                    "order:9",
                    "unknown_order",
                    "bob",
                    "c-9",
                    1_009
                ),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_transactions_and_every_record_is_stored_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("audit.db").display()
        );
        let db = Db::connect(&url).await.expect("SQLite opens");
        let (writer, task) = AuditWriter::spawn(db.clone());
        let callers: Vec<_> = (0..600)
            .map(|n| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.append(entry(n)).await })
            })
            .collect();
        for caller in callers {
            caller
                .await
                .expect("the caller task")
                .expect("its record is stored");
        }
        drop(writer);
        task.await
            .expect("the writer ends when its handles are gone");
        let mut seen = std::collections::BTreeSet::new();
        let mut before = None;
        loop {
            let page = db.list_audit(before, 100).await.expect("a page");
            let Some(last) = page.last() else { break };
            before = Some(last.audit_id);
            for row in &page {
                assert!(seen.insert(row.correlation_id.clone()), "{row:?} twice");
            }
        }
        assert_eq!(seen.len(), 600);
        assert!(seen.contains("c-0") && seen.contains("c-599"));
    }

    #[tokio::test]
    async fn a_failed_batch_is_reported_to_its_callers_and_the_writer_stops_cleanly() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("audit.db").display()
        );
        let db = Db::connect(&url).await.expect("SQLite opens");
        let (writer, task) = AuditWriter::spawn(db.clone());
        writer.append(entry(1)).await.expect("stored");
        // The database goes away under the writer: the caller hears it, not `Ok`.
        db.close().await;
        let error = writer.append(entry(2)).await.expect_err("no database");
        assert!(matches!(error, AuditError::Write(_)), "{error:?}");
        drop(writer);
        task.await.expect("the writer ends");
    }
}
