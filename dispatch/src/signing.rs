//! Schedule signatures: the platform signs every schedule with its ed25519 dispatch
//! key, and agents verify before accepting, so a compromised broker or a forged
//! publish cannot command a battery.
//!
//! The signed bytes are a domain-separation prefix followed by the postcard encoding
//! of the [`Schedule`] (deterministic for a given value), so a signature made for a
//! schedule cannot be replayed as anything else.
//!
//! # Batch signatures
//! A roll-out signs thousands of schedules at once, and one ed25519 signature costs
//! the platform about as much CPU as delivering the schedule (measured in
//! `voltex bench rollout`). [`ScheduleSigner::sign_batch`] therefore signs the root of
//! a Merkle tree (SHA-256) over the batch once and gives every schedule the path from
//! its leaf to that root. The `signature` field then holds the 64 signature bytes
//! followed by one 33-byte step per tree level: a side byte (0: the sibling hash is
//! on the right, 1: on the left) and the sibling hash. Leaves, inner nodes and the
//! signed root each carry their own domain prefix, so a leaf cannot pose as a node
//! and a batch signature cannot pose as a single one. An agent's cost is one ed25519
//! verification either way; the proof adds a hash per level (10 for a batch of
//! 1,024, 14 for 10,000).
//!
//! # Agents that share a verifier
//! Every schedule of a batch carries the same root and signature. A
//! [`ScheduleVerifier`] and its clones remember the last
//! [`VERIFIED_ROOTS_REMEMBERED`] roots whose signature verified, with that
//! signature, so agents hosted in one process with one verifier (the simulator,
//! `voltex up`'s and the benches' simulated fleets) check a batch's signature once,
//! not once per agent. This is a memo of a pure function: a hit needs the same key,
//! the same root (which the proof has just recomputed from this schedule) and
//! byte-identical signature bytes, and only a successful verification is
//! remembered. A Pi hosts one agent: each batch is new to it, and it verifies every
//! one. [`ScheduleVerifier::signature_checks`] counts the verifications run.
//!
//! # Invariants
//! - `verify(sign(s)) == Ok(())` and `verify(x) == Ok(())` for every `x` of
//!   `sign_batch(b)`; changing any field of a schedule, any bit of the signature or
//!   of a proof step, or moving a proof to another schedule makes verification fail
//!   (tests in `dispatch/tests/codec.rs`).
//! - A verifier remembers at most [`VERIFIED_ROOTS_REMEMBERED`] batch roots, each one
//!   whose signature it verified; a remembered root vouches only for the same
//!   signature bytes (`clones_of_a_verifier_check_a_batch_signature_once`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::message::{SIGNATURE_LEN, Schedule, SignedSchedule};

/// Prefix of every signed payload.
const DOMAIN: &[u8] = b"voltex/v1/schedule\0";
/// Prefix of a signed batch root.
const BATCH_DOMAIN: &[u8] = b"voltex/v1/schedule-batch\0";
/// Prefix of a leaf hash (one schedule in a batch).
const LEAF_DOMAIN: &[u8] = b"voltex/v1/schedule-leaf\0";
/// Prefix of an inner node hash.
const NODE_DOMAIN: &[u8] = b"voltex/v1/schedule-node\0";

/// Bytes of one batch proof step: the side byte and the sibling hash.
pub const PROOF_STEP_LEN: usize = 1 + 32;
/// Most steps in a batch proof (a batch holds at most 2^32 schedules).
pub const PROOF_STEPS_MAX: usize = 32;
/// Longest `signature` field: the signature and a full-depth batch proof.
pub const SIGNATURE_FIELD_LEN_MAX: usize = SIGNATURE_LEN + PROOF_STEPS_MAX * PROOF_STEP_LEN;

/// How many batch proof steps a `signature` field of `field_len` bytes holds, or
/// `None` if no well-formed field has that length (shorter than a signature, a step
/// cut short, or more than [`PROOF_STEPS_MAX`] steps).
pub fn proof_steps(field_len: usize) -> Option<usize> {
    let proof_len = field_len.checked_sub(SIGNATURE_LEN)?;
    let steps = proof_len / PROOF_STEP_LEN;
    (proof_len % PROOF_STEP_LEN == 0 && steps <= PROOF_STEPS_MAX).then_some(steps)
}

/// A signature that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature field is neither 64 bytes nor 64 bytes and whole proof steps.
    #[error(
        "signature must be 64 bytes, optionally followed by at most {PROOF_STEPS_MAX} \
         {PROOF_STEP_LEN}-byte batch proof steps; got {0} bytes"
    )]
    BadLength(usize),
    /// A batch proof step's side byte is neither 0 nor 1.
    #[error("batch proof step {step} has side byte {byte} (0 or 1 expected)")]
    BadProofSide {
        /// Index of the step, from the leaf.
        step: usize,
        /// The byte found.
        byte: u8,
    },
    /// The signature does not verify with the platform key.
    #[error("signature does not verify")]
    Mismatch,
    /// The schedule could not be encoded.
    #[error("schedule not encodable: {0}")]
    Encode(String),
    /// A key's bytes are not a valid key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

fn signed_bytes(schedule: &Schedule) -> Result<Vec<u8>, SignatureError> {
    encoded_with_prefix(DOMAIN, schedule)
}

fn encoded_with_prefix(prefix: &[u8], schedule: &Schedule) -> Result<Vec<u8>, SignatureError> {
    postcard::to_extend(schedule, prefix.to_vec())
        .map_err(|error| SignatureError::Encode(error.to_string()))
}

type Hash = [u8; 32];

fn leaf_hash(schedule: &Schedule) -> Result<Hash, SignatureError> {
    Ok(Sha256::digest(encoded_with_prefix(LEAF_DOMAIN, schedule)?).into())
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(NODE_DOMAIN);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

fn batch_signed_bytes(root: &Hash) -> Vec<u8> {
    [BATCH_DOMAIN, root.as_slice()].concat()
}

/// The levels of a Merkle tree, leaves first and the root last. A level's odd last
/// node moves up unchanged (it has no sibling, so its proof has no step there).
fn tree_levels(leaves: Vec<Hash>) -> Vec<Vec<Hash>> {
    let mut levels = vec![leaves];
    while let Some(level) = levels.last().filter(|level| level.len() > 1) {
        let next: Vec<Hash> = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [alone] => *alone,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
        levels.push(next);
    }
    levels
}

/// The platform's dispatch signing key.
pub struct ScheduleSigner {
    key: SigningKey,
}

impl ScheduleSigner {
    /// A signer from a 32-byte secret seed (drawn by the caller from a secure RNG).
    pub fn from_seed(seed: &[u8; 32]) -> ScheduleSigner {
        ScheduleSigner {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The matching public key, to distribute to agents.
    pub fn verifier(&self) -> ScheduleVerifier {
        ScheduleVerifier::new(self.key.verifying_key())
    }

    /// Signs a schedule.
    ///
    /// # Errors
    /// [`SignatureError::Encode`] if the schedule cannot be serialised.
    pub fn sign(&self, schedule: Schedule) -> Result<SignedSchedule, SignatureError> {
        let signature = self.key.sign(&signed_bytes(&schedule)?);
        Ok(SignedSchedule {
            schedule,
            signature: signature.to_bytes().to_vec(),
        })
    }

    /// Signs a batch with one signature over a Merkle root (see the module doc); each
    /// result carries its own proof, in the input order. A batch of one is signed
    /// with [`ScheduleSigner::sign`].
    ///
    /// # Errors
    /// [`SignatureError::Encode`] if a schedule cannot be serialised, or the batch
    /// holds more than 2^32 schedules.
    pub fn sign_batch(
        &self,
        schedules: Vec<Schedule>,
    ) -> Result<Vec<SignedSchedule>, SignatureError> {
        if schedules.len() <= 1 {
            return schedules.into_iter().map(|s| self.sign(s)).collect();
        }
        if u32::try_from(schedules.len() - 1).is_err() {
            return Err(SignatureError::Encode(format!(
                "a batch holds at most 2^32 schedules, got {}",
                schedules.len()
            )));
        }
        let leaves = schedules
            .iter()
            .map(leaf_hash)
            .collect::<Result<Vec<_>, _>>()?;
        let levels = tree_levels(leaves);
        let root = levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .ok_or_else(|| SignatureError::Encode("empty batch tree".into()))?;
        let signature = self.key.sign(&batch_signed_bytes(&root)).to_bytes();
        let depth = levels.len() - 1;
        Ok(schedules
            .into_iter()
            .enumerate()
            .map(|(leaf, schedule)| {
                let mut field = Vec::with_capacity(SIGNATURE_LEN + depth * PROOF_STEP_LEN);
                field.extend_from_slice(&signature);
                let mut index = leaf;
                for level in &levels[..depth] {
                    let sibling_index = index ^ 1;
                    if let Some(sibling) = level.get(sibling_index) {
                        field.push(u8::from(sibling_index < index));
                        field.extend_from_slice(sibling);
                    }
                    index /= 2;
                }
                debug_assert!(field.len() <= SIGNATURE_FIELD_LEN_MAX);
                SignedSchedule {
                    schedule,
                    signature: field,
                }
            })
            .collect())
    }
}

/// How many verified batch roots a [`ScheduleVerifier`] and its clones remember (see
/// the module doc). A roll-out to 10,000 devices is 10 batches of 1,024, which reach
/// a simulated fleet's agents interleaved; 16 holds them all.
pub const VERIFIED_ROOTS_REMEMBERED: usize = 16;

/// The platform's public dispatch key, as held by agents.
///
/// Cheap to clone: the expanded key (about 200 bytes) and the memo of verified batch
/// roots are shared, and a simulator holds one clone per virtual battery. Two
/// verifiers are equal when their keys are.
#[derive(Clone)]
pub struct ScheduleVerifier {
    shared: Arc<VerifierShared>,
}

/// What a verifier's clones share.
struct VerifierShared {
    key: VerifyingKey,
    verified_roots: Mutex<VerifiedRoots>,
    /// ed25519 verifications run (remembered roots skip them).
    signature_checks: AtomicU64,
}

/// A ring of the last batch roots whose signature verified under the key.
struct VerifiedRoots {
    entries: [Option<VerifiedRoot>; VERIFIED_ROOTS_REMEMBERED],
    /// The slot the next root overwrites.
    next: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct VerifiedRoot {
    root: Hash,
    signature: [u8; SIGNATURE_LEN],
}

impl VerifiedRoots {
    fn contains(&self, wanted: &VerifiedRoot) -> bool {
        self.entries.iter().flatten().any(|entry| entry == wanted)
    }

    fn insert(&mut self, verified: VerifiedRoot) {
        if self.contains(&verified) {
            return;
        }
        self.entries[self.next] = Some(verified);
        self.next = (self.next + 1) % VERIFIED_ROOTS_REMEMBERED;
    }
}

impl PartialEq for ScheduleVerifier {
    fn eq(&self, other: &ScheduleVerifier) -> bool {
        self.shared.key == other.shared.key
    }
}

impl Eq for ScheduleVerifier {}

impl std::fmt::Debug for ScheduleVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleVerifier")
            .field("key", &self.shared.key)
            .field(
                "signature_checks",
                &self.shared.signature_checks.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl ScheduleVerifier {
    /// A verifier from the platform's 32-byte public key.
    ///
    /// # Errors
    /// [`SignatureError::InvalidKey`] if the bytes are not a valid ed25519 point.
    pub fn from_public_bytes(bytes: &[u8; 32]) -> Result<ScheduleVerifier, SignatureError> {
        VerifyingKey::from_bytes(bytes)
            .map(ScheduleVerifier::new)
            .map_err(|error| SignatureError::InvalidKey(error.to_string()))
    }

    fn new(key: VerifyingKey) -> ScheduleVerifier {
        ScheduleVerifier {
            shared: Arc::new(VerifierShared {
                key,
                verified_roots: Mutex::new(VerifiedRoots {
                    entries: [None; VERIFIED_ROOTS_REMEMBERED],
                    next: 0,
                }),
                signature_checks: AtomicU64::new(0),
            }),
        }
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.shared.key.to_bytes()
    }

    /// How many ed25519 verifications this verifier and its clones have run; a
    /// schedule whose batch root is remembered (see the module doc) needs none.
    pub fn signature_checks(&self) -> u64 {
        self.shared.signature_checks.load(Ordering::Relaxed)
    }

    /// The memo of verified roots. A panic cannot leave it half-written (each
    /// update is one slot store and an index), so a poisoned lock is still usable.
    fn verified_roots(&self) -> std::sync::MutexGuard<'_, VerifiedRoots> {
        self.shared
            .verified_roots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a signed schedule's signature, alone or with its batch proof. A batch
    /// root already verified with the same signature bytes by this verifier or a
    /// clone is not verified again (see the module doc).
    ///
    /// # Errors
    /// A malformed signature field ([`SignatureError::BadLength`],
    /// [`SignatureError::BadProofSide`]) or a signature that does not verify.
    pub fn verify(&self, signed: &SignedSchedule) -> Result<(), SignatureError> {
        let field = signed.signature.as_slice();
        let bad_length = || SignatureError::BadLength(field.len());
        proof_steps(field.len()).ok_or_else(bad_length)?;
        let (signature_bytes, proof) = field
            .split_first_chunk::<SIGNATURE_LEN>()
            .ok_or_else(bad_length)?;
        let signature = Signature::from_bytes(signature_bytes);
        let mut batch_root = None;
        let message = if proof.is_empty() {
            signed_bytes(&signed.schedule)?
        } else {
            let mut hash = leaf_hash(&signed.schedule)?;
            for (step, chunk) in proof.chunks_exact(PROOF_STEP_LEN).enumerate() {
                let (side, sibling) = chunk
                    .split_first()
                    .and_then(|(side, rest)| Some((*side, <&Hash>::try_from(rest).ok()?)))
                    .ok_or_else(bad_length)?;
                hash = match side {
                    0 => node_hash(&hash, sibling),
                    1 => node_hash(sibling, &hash),
                    byte => return Err(SignatureError::BadProofSide { step, byte }),
                };
            }
            let root = VerifiedRoot {
                root: hash,
                signature: *signature_bytes,
            };
            if self.verified_roots().contains(&root) {
                return Ok(());
            }
            batch_root = Some(root);
            batch_signed_bytes(&hash)
        };
        self.shared.signature_checks.fetch_add(1, Ordering::Relaxed);
        self.shared
            .key
            .verify_strict(&message, &signature)
            .map_err(|_| SignatureError::Mismatch)?;
        if let Some(root) = batch_root {
            self.verified_roots().insert(root);
        }
        Ok(())
    }
}
