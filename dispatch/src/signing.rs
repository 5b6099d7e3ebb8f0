//! Schedule signatures: the platform signs every schedule with its ed25519 dispatch
//! key, and agents verify before accepting, so a compromised broker or a forged
//! publish cannot command a battery.
//!
//! The signed bytes are a domain-separation prefix followed by the postcard encoding
//! of the [`Schedule`] (deterministic for a given value), so a signature made for a
//! schedule cannot be replayed as anything else.
//!
//! # Invariants
//! - `verify(sign(s)) == Ok(())`; changing any field of `s` or any bit of the
//!   signature makes verification fail (tests in `tests/signing.rs`).

use std::sync::Arc;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::message::{Schedule, SignedSchedule};

/// Prefix of every signed payload.
const DOMAIN: &[u8] = b"voltex/v1/schedule\0";

/// A signature that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature is not 64 bytes.
    #[error("signature must be 64 bytes, got {0}")]
    BadLength(usize),
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
    postcard::to_extend(schedule, DOMAIN.to_vec())
        .map_err(|error| SignatureError::Encode(error.to_string()))
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
        ScheduleVerifier {
            key: Arc::new(self.key.verifying_key()),
        }
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
}

/// The platform's public dispatch key, as held by agents.
///
/// Cheap to clone (the expanded key, about 200 bytes, is shared): a simulator holds
/// one per virtual battery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleVerifier {
    key: Arc<VerifyingKey>,
}

impl ScheduleVerifier {
    /// A verifier from the platform's 32-byte public key.
    ///
    /// # Errors
    /// [`SignatureError::InvalidKey`] if the bytes are not a valid ed25519 point.
    pub fn from_public_bytes(bytes: &[u8; 32]) -> Result<ScheduleVerifier, SignatureError> {
        VerifyingKey::from_bytes(bytes)
            .map(|key| ScheduleVerifier { key: Arc::new(key) })
            .map_err(|error| SignatureError::InvalidKey(error.to_string()))
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Checks a signed schedule's signature.
    ///
    /// # Errors
    /// Wrong length or a signature that does not verify.
    pub fn verify(&self, signed: &SignedSchedule) -> Result<(), SignatureError> {
        let bytes: [u8; 64] = signed
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::BadLength(signed.signature.len()))?;
        let signature = Signature::from_bytes(&bytes);
        self.key
            .verify_strict(&signed_bytes(&signed.schedule)?, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}
