//! The audit writer: group commit of audit-log records.
//!
//! Every mutating API call waits until its audit record is stored before it answers
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
//! in paired runs. The cost left is the second durable write per order; see
//! ARCHITECTURE.md.
//!
//! Guarantees: a caller hears `Ok` only after its record is committed; records of one
//! batch are committed together or not at all; the queue is bounded
//! ([`AUDIT_QUEUE_LEN_MAX`]), so a slow database slows callers down (back-pressure)
//! rather than growing memory.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::db::{Db, NewAuditEntry};

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
        }
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
