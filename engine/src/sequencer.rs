//! [`Sequencer`]: the single-writer thread around an [`Engine`].
//!
//! Clients send commands through a bounded queue (`command_queue_len_max`; a full
//! queue blocks the sender: back-pressure, never unbounded memory). The writer thread
//! loops:
//! 1. block for one request, then drain up to `batch_len_max - 1` more without waiting;
//! 2. [`Engine::process_batch`]: journal, one commit (fsync), apply;
//! 3. hand the batch (commands, acks, events: [`Committed`]) to the sink;
//! 4. reply to each command with its [`Ack`] (seq and event range).
//!
//! Group commit comes for free: the busier the queue, the larger the batch that shares
//! one fsync. Replies go to a per-client channel ([`SequencerClient`]), tagged with the
//! token `submit` returned; one client's replies arrive in its submission order.
//!
//! After a journal failure the engine is poisoned: every command of the failed batch
//! and every later one is answered with an error, and [`Sequencer::shutdown`] returns
//! the error. Recover with [`Engine::open`] (or `open_in_memory`).
//!
//! # Invariants
//! - Only the writer thread touches the engine (single writer).
//! - A command's `Ok` reply is sent only after its batch's commit returned `Ok`, and
//!   after the sink has seen its events.
//! - Every submitted command gets exactly one reply while its client lives (an `Ok`, or
//!   an error if the engine failed or shut down first).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::command::{Ack, Committed, EngineCommand, EngineEvent, OversizeCommand};
use crate::engine::{Engine, EngineError};

/// Default bound of the command queue.
pub const COMMAND_QUEUE_LEN_MAX_DEFAULT: usize = 65_536;

/// How often a client waiting for a reply checks whether the writer has stopped.
const STOPPED_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Limits of the sequencer thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencerConfig {
    /// Bound of the command queue shared by all clients.
    pub command_queue_len_max: usize,
}

impl Default for SequencerConfig {
    fn default() -> SequencerConfig {
        SequencerConfig {
            command_queue_len_max: COMMAND_QUEUE_LEN_MAX_DEFAULT,
        }
    }
}

/// Receives each committed batch (its commands, their acks and events in event-seq
/// order) on the writer thread, before the batch is acknowledged. Keep it fast (push
/// to a bounded channel, say).
pub type EventSink = Box<dyn FnMut(Committed<'_>) + Send>;

/// Why a command got no ack.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SequencerError {
    /// The engine failed (journal error) on this batch or an earlier one.
    #[error("engine failed: {0}")]
    Engine(Arc<EngineError>),
    /// The sequencer has shut down (or its thread is gone).
    #[error("sequencer stopped")]
    Stopped,
    /// A bid curve or block family over its limits; refused before it was queued (the
    /// engine is unaffected).
    #[error("command too large: {size}")]
    CommandTooLarge {
        /// What is over its limit.
        size: OversizeCommand,
    },
    /// `call` was used while earlier submissions still await replies.
    #[error("replies pending: use recv_reply for pipelined submissions")]
    RepliesPending,
    /// The configuration is unusable.
    #[error("invalid sequencer config: {0}")]
    InvalidConfig(&'static str),
    /// The writer thread could not be started.
    #[error("cannot start the sequencer thread: {0}")]
    Spawn(Arc<std::io::Error>),
}

/// The answer to one submitted command.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The token [`SequencerClient::submit`] returned for it.
    pub token: u64,
    /// Its ack, or why there is none.
    pub result: Result<Ack, SequencerError>,
}

enum Request {
    Command {
        command: EngineCommand,
        token: u64,
        reply: Sender<Reply>,
    },
    Shutdown,
}

/// The running writer thread. Dropping it without [`Sequencer::shutdown`] leaves the
/// thread running until every client is dropped too.
#[derive(Debug)]
pub struct Sequencer {
    requests: Sender<Request>,
    stopped: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Engine, SequencerError>>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Command { token, .. } => write!(f, "Command({token})"),
            Request::Shutdown => write!(f, "Shutdown"),
        }
    }
}

impl Sequencer {
    /// Starts the writer thread, which owns `engine` from now on.
    ///
    /// # Errors
    /// A zero queue bound, or the thread cannot be spawned.
    pub fn spawn(
        engine: Engine,
        config: SequencerConfig,
        sink: EventSink,
    ) -> Result<Sequencer, SequencerError> {
        if config.command_queue_len_max == 0 {
            return Err(SequencerError::InvalidConfig(
                "command_queue_len_max must be positive",
            ));
        }
        let (requests, inbox) = crossbeam_channel::bounded(config.command_queue_len_max);
        let stopped = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            inbox,
            pending: Vec::new(),
            stopped: Arc::clone(&stopped),
        };
        let thread = std::thread::Builder::new()
            .name("voltex-sequencer".into())
            .spawn(move || run(engine, writer, sink))
            .map_err(|error| SequencerError::Spawn(Arc::new(error)))?;
        Ok(Sequencer {
            requests,
            stopped,
            thread: Some(thread),
        })
    }

    /// A new client with its own reply channel.
    pub fn client(&self) -> SequencerClient {
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded();
        SequencerClient {
            requests: self.requests.clone(),
            stopped: Arc::clone(&self.stopped),
            reply_tx,
            reply_rx,
            next_token: 0,
            n_outstanding: 0,
        }
    }

    /// Processes every command queued before this call, stops the thread and returns
    /// the engine.
    ///
    /// # Errors
    /// The engine's error if it failed; [`SequencerError::Stopped`] if the thread panicked.
    pub fn shutdown(mut self) -> Result<Engine, SequencerError> {
        // If the thread is gone the send fails; joining tells why.
        let _ = self.requests.send(Request::Shutdown);
        let thread = self.thread.take().ok_or(SequencerError::Stopped)?;
        thread.join().map_err(|_| SequencerError::Stopped)?
    }
}

/// One client's handle: submits commands and receives their replies. Not shared
/// between threads; make one client per thread with [`Sequencer::client`].
///
/// Replies wait in an unbounded channel until received; the number waiting is at most
/// the number of commands this client submitted and has not received replies for.
#[derive(Debug)]
pub struct SequencerClient {
    requests: Sender<Request>,
    stopped: Arc<AtomicBool>,
    reply_tx: Sender<Reply>,
    reply_rx: Receiver<Reply>,
    next_token: u64,
    n_outstanding: u64,
}

impl SequencerClient {
    /// Queues a command (blocking while the queue is full) and returns its token.
    ///
    /// # Errors
    /// [`SequencerError::Stopped`] if the sequencer is gone;
    /// [`SequencerError::CommandTooLarge`] (nothing queued) for a command that does not
    /// fit a journal entry ([`EngineCommand::check_size`]).
    pub fn submit(&mut self, command: EngineCommand) -> Result<u64, SequencerError> {
        if let Err(size) = command.check_size() {
            return Err(SequencerError::CommandTooLarge { size });
        }
        let token = self.next_token;
        let request = Request::Command {
            command,
            token,
            reply: self.reply_tx.clone(),
        };
        self.requests
            .send(request)
            .map_err(|_| SequencerError::Stopped)?;
        self.next_token += 1;
        self.n_outstanding += 1;
        Ok(token)
    }

    /// Waits for the next reply (replies come in submission order).
    ///
    /// # Errors
    /// [`SequencerError::Stopped`] if nothing is outstanding or the sequencer is gone.
    pub fn recv_reply(&mut self) -> Result<Reply, SequencerError> {
        if self.n_outstanding == 0 {
            return Err(SequencerError::Stopped);
        }
        // The client holds a reply sender itself, so the channel never disconnects; a
        // stopped writer is noticed by its flag, raised after it answered everything.
        loop {
            match self.reply_rx.recv_timeout(STOPPED_POLL_INTERVAL) {
                Ok(reply) => {
                    self.n_outstanding -= 1;
                    return Ok(reply);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    if self.stopped.load(Ordering::Acquire) && self.reply_rx.is_empty() {
                        return Err(SequencerError::Stopped);
                    }
                }
            }
        }
    }

    /// Submits one command and waits for its ack.
    ///
    /// # Errors
    /// [`SequencerError::RepliesPending`] if earlier submissions await replies; else as
    /// [`SequencerClient::submit`] and the command's own error.
    pub fn call(&mut self, command: EngineCommand) -> Result<Ack, SequencerError> {
        if self.n_outstanding > 0 {
            return Err(SequencerError::RepliesPending);
        }
        let token = self.submit(command)?;
        let reply = self.recv_reply()?;
        debug_assert_eq!(reply.token, token, "one outstanding command, one reply");
        reply.result
    }

    /// Commands submitted whose replies have not been received.
    pub fn n_outstanding(&self) -> u64 {
        self.n_outstanding
    }
}

/// The writer thread's request state. On drop — a normal exit, or unwinding from a
/// panic (an invariant broke) — every request it holds or that is still queued is
/// answered with [`SequencerError::Stopped`], and only then is `stopped` raised, so a
/// client waiting for a reply never waits forever.
struct Writer {
    inbox: Receiver<Request>,
    pending: Vec<(u64, Sender<Reply>)>,
    stopped: Arc<AtomicBool>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        for (token, reply) in self.pending.drain(..) {
            let _ = reply.send(Reply {
                token,
                result: Err(SequencerError::Stopped),
            });
        }
        let inbox = std::mem::replace(&mut self.inbox, crossbeam_channel::never());
        while let Ok(request) = inbox.try_recv() {
            if let Request::Command { token, reply, .. } = request {
                let _ = reply.send(Reply {
                    token,
                    result: Err(SequencerError::Stopped),
                });
            }
        }
        drop(inbox);
        self.stopped.store(true, Ordering::Release);
    }
}

/// The writer loop. Returns the engine on shutdown or when every client is gone.
fn run(
    mut engine: Engine,
    mut writer: Writer,
    mut sink: EventSink,
) -> Result<Engine, SequencerError> {
    let batch_len_max = engine.config().batch_len_max;
    let mut commands: Vec<EngineCommand> = Vec::with_capacity(batch_len_max);
    let mut events: Vec<EngineEvent> = Vec::new();
    let mut acks: Vec<Ack> = Vec::with_capacity(batch_len_max);
    let mut failure: Option<SequencerError> = None;
    loop {
        let Ok(first) = writer.inbox.recv() else {
            break; // every sender is gone
        };
        let mut shutdown = false;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Command {
                    command,
                    token,
                    reply,
                } => {
                    commands.push(command);
                    writer.pending.push((token, reply));
                }
                Request::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if commands.len() < batch_len_max {
                match writer.inbox.try_recv() {
                    Ok(request) => next = Some(request),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                }
            }
        }
        if let Some(error) = &failure {
            for (token, reply) in writer.pending.drain(..) {
                let _ = reply.send(Reply {
                    token,
                    result: Err(error.clone()),
                });
            }
            commands.clear();
        } else if !commands.is_empty() {
            events.clear();
            acks.clear();
            let processed = engine.process_batch(&commands, &mut events, &mut acks);
            // Only acked commands were applied (acks stop at a failed group).
            sink(Committed {
                commands: &commands[..acks.len()],
                acks: &acks,
                events: &events,
            });
            commands.clear();
            // Acks pushed before an error are durable (their group committed).
            let mut acked = acks.iter();
            let error = processed
                .err()
                .map(|error| SequencerError::Engine(Arc::new(error)));
            for (token, reply) in writer.pending.drain(..) {
                let result = match (acked.next(), &error) {
                    (Some(ack), _) => Ok(*ack),
                    (None, Some(error)) => Err(error.clone()),
                    (None, None) => unreachable!("one ack per command when the batch succeeds"),
                };
                // A client that went away does not need its reply.
                let _ = reply.send(Reply { token, result });
            }
            failure = error;
        }
        if shutdown {
            break;
        }
    }
    drop(writer);
    match failure {
        Some(error) => Err(error),
        None => Ok(engine),
    }
}
