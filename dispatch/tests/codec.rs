//! Codec and signature tests: round trips (proptest), decoding arbitrary and mutated
//! bytes never panics, and one test per kind of bad frame and bad schedule.

use proptest::prelude::*;
use voltex_dispatch::codec::{
    DecodeError, EncodeError, MESSAGE_LEN_MAX, decode, encode_binary, encode_json,
};
use voltex_dispatch::message::*;
use voltex_dispatch::signing::{
    PROOF_STEP_LEN, PROOF_STEPS_MAX, SIGNATURE_FIELD_LEN_MAX, ScheduleSigner, ScheduleVerifier,
    SignatureError, VERIFIED_ROOTS_REMEMBERED, proof_steps,
};
use voltex_market::UtcNanos;

const HOUR_NS: i64 = 3_600_000_000_000;

fn device() -> DeviceId {
    DeviceId::new("bat-0001").unwrap()
}

fn schedule() -> Schedule {
    Schedule {
        device: device(),
        schedule_id: ScheduleId(0xfeed),
        version: 3,
        issued_at: UtcNanos(0),
        valid_from: UtcNanos(HOUR_NS),
        valid_until: UtcNanos(2 * HOUR_NS),
        randomize_start_s: 30,
        periods: vec![
            SchedulePeriod {
                offset_s: 0,
                target_w: -5_000,
                ramp_s: 0,
            },
            SchedulePeriod {
                offset_s: 900,
                target_w: 5_000,
                ramp_s: 60,
            },
        ]
        .into(),
        fallback: Fallback::Idle,
    }
}

fn arb_device() -> impl Strategy<Value = DeviceId> {
    "[A-Za-z0-9._-]{1,64}".prop_map(|id| DeviceId::new(id).unwrap())
}

fn arb_schedule() -> impl Strategy<Value = Schedule> {
    (
        arb_device(),
        any::<u128>(),
        any::<u64>(),
        -1_000_000i64..1_000_000,
        1u32..48,
        proptest::collection::vec(
            (
                1u32..900,
                -TARGET_W_ABS_MAX..=TARGET_W_ABS_MAX,
                0u32..=RAMP_S_MAX,
            ),
            1..40,
        ),
        0u32..=RAMP_S_MAX,
        prop_oneof![
            Just(Fallback::Idle),
            (-TARGET_W_ABS_MAX..=TARGET_W_ABS_MAX).prop_map(|target_w| Fallback::Hold { target_w }),
            proptest::collection::vec(-10_000i64..10_000, 24).prop_map(|targets_w| {
                Fallback::DailyProfile {
                    slot_s: 3_600,
                    targets_w,
                }
            }),
        ],
    )
        .prop_map(
            |(device, id, version, start_s, hours, steps, randomize, fallback)| {
                let mut offset = 0u32;
                let mut periods = Vec::new();
                for (n, (step, target_w, ramp_s)) in steps.into_iter().enumerate() {
                    if n > 0 {
                        offset += step;
                    }
                    if i64::from(offset) >= i64::from(hours) * 3_600 {
                        break;
                    }
                    periods.push(SchedulePeriod {
                        offset_s: offset,
                        target_w,
                        ramp_s,
                    });
                }
                let valid_from = UtcNanos(start_s * 1_000_000_000);
                Schedule {
                    device,
                    schedule_id: ScheduleId(id),
                    version,
                    issued_at: UtcNanos(valid_from.0 - 1),
                    valid_from,
                    valid_until: UtcNanos(valid_from.0 + i64::from(hours) * HOUR_NS),
                    randomize_start_s: randomize,
                    periods: periods.into(),
                    fallback,
                }
            },
        )
}

fn arb_status() -> impl Strategy<Value = AckStatus> {
    prop_oneof![
        Just(AckStatus::Received),
        Just(AckStatus::Accepted),
        Just(AckStatus::Started),
        Just(AckStatus::Completed),
        any::<u64>().prop_map(|by_version| AckStatus::Superseded { by_version }),
        Just(AckStatus::Rejected(ScheduleRejection::InvalidSignature)),
        Just(AckStatus::Rejected(ScheduleRejection::OlderVersion)),
        Just(AckStatus::Failed(FailureReason::DriverFault)),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let signer = ScheduleSigner::from_seed(&[9; 32]);
    prop_oneof![
        arb_schedule().prop_map(move |s| Message::Schedule(signer.sign(s).unwrap())),
        (arb_batch(2..9), any::<usize>()).prop_map(|(batch, pick)| {
            let batch_signer = ScheduleSigner::from_seed(&[9; 32]);
            let mut signed = batch_signer.sign_batch(batch).unwrap();
            let pick = pick % signed.len();
            Message::Schedule(signed.swap_remove(pick))
        }),
        (arb_device(), any::<u64>()).prop_map(|(device, through_seq)| Message::Receipt(Receipt {
            device,
            through_seq
        })),
        (
            arb_device(),
            any::<u64>(),
            any::<u128>(),
            any::<u64>(),
            arb_status(),
            any::<i64>()
        )
            .prop_map(
                |(device, outbox_seq, id, version, status, at)| Message::Ack(Ack {
                    device,
                    outbox_seq,
                    schedule_id: ScheduleId(id),
                    version,
                    status,
                    at: UtcNanos(at),
                })
            ),
        (
            arb_device(),
            proptest::collection::vec(
                (any::<u64>(), any::<i64>(), any::<i64>(), any::<u32>()),
                1..20
            )
        )
            .prop_map(|(device, samples)| Message::Telemetry(TelemetryBatch {
                device,
                samples: samples
                    .into_iter()
                    .map(|(seq, at, soc, health)| Telemetry {
                        outbox_seq: seq,
                        at: UtcNanos(at),
                        soc_wh: soc,
                        power_w: -soc / 2,
                        charged_wh: seq / 3,
                        discharged_wh: seq / 5,
                        temperature_mc: 25_000,
                        health: HealthFlags(health),
                    })
                    .collect(),
            })),
        (
            arb_device(),
            any::<i64>(),
            any::<u64>(),
            any::<Option<(u128, u64)>>(),
            any::<u32>()
        )
            .prop_map(
                |(device, at, uptime_s, active, outbox_len)| Message::Heartbeat(Heartbeat {
                    device,
                    at: UtcNanos(at),
                    uptime_s,
                    active: active.map(|(id, v)| (ScheduleId(id), v)),
                    outbox_len,
                })
            ),
        (
            arb_device(),
            proptest::collection::vec(
                (
                    any::<u64>(),
                    any::<u128>(),
                    any::<u64>(),
                    arb_status(),
                    any::<i64>()
                ),
                1..=ACK_BATCH_MAX
            )
        )
            .prop_map(|(device, acks)| Message::Acks(AckBatch {
                device,
                acks: acks
                    .into_iter()
                    .map(|(outbox_seq, id, version, status, at)| AckEntry {
                        outbox_seq,
                        schedule_id: ScheduleId(id),
                        version,
                        status,
                        at: UtcNanos(at),
                    })
                    .collect(),
            })),
    ]
}

/// A roll-out batch: `len` schedules for distinct devices (and so distinct leaves).
fn arb_batch(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Schedule>> {
    (arb_schedule(), len).prop_map(|(base, len)| {
        (0..len)
            .map(|i| Schedule {
                device: DeviceId::new(format!("bat-{i:05}")).unwrap(),
                ..base.clone()
            })
            .collect()
    })
}

/// Proof steps a batch of `n` needs at most: the tree's depth, ceil(log2 n).
fn depth_of(n: usize) -> usize {
    n.next_power_of_two().trailing_zeros() as usize
}

proptest! {
    #[test]
    fn binary_and_json_round_trip(message in arb_message()) {
        let binary = encode_binary(&message).unwrap();
        prop_assert_eq!(decode(&binary).unwrap(), message.clone());
        let json = encode_json(&message).unwrap();
        prop_assert_eq!(decode(&json).unwrap(), message);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let mut framed = vec![b'V', 1];
        framed.extend_from_slice(&bytes);
        let _ = decode(&framed);
    }

    #[test]
    fn decoding_mutated_frames_never_panics(message in arb_message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        for mut frame in [encode_binary(&message).unwrap(), encode_json(&message).unwrap()] {
            for (at, byte) in &flips {
                let at = at % frame.len();
                frame[at] ^= byte | 1;
            }
            let _ = decode(&frame);
            let _ = decode(&frame[..cut % (frame.len() + 1)]);
        }
    }

    #[test]
    fn any_change_to_a_signed_schedule_breaks_the_signature(s in arb_schedule(), delta in 1u64..1000) {
        let signer = ScheduleSigner::from_seed(&[3; 32]);
        let mut signed = signer.sign(s).unwrap();
        prop_assert!(signer.verifier().verify(&signed).is_ok());
        signed.schedule.version = signed.schedule.version.wrapping_add(delta);
        prop_assert_eq!(signer.verifier().verify(&signed), Err(SignatureError::Mismatch));
    }

    #[test]
    fn every_schedule_of_a_batch_verifies_and_no_proof_fits_another(
        batch in arb_batch(1..70),
        other in any::<usize>(),
        flip_at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let signer = ScheduleSigner::from_seed(&[5; 32]);
        let verifier = signer.verifier();
        let n = batch.len();
        let signed = signer.sign_batch(batch.clone()).unwrap();
        prop_assert_eq!(signed.len(), n);
        for (i, one) in signed.iter().enumerate() {
            prop_assert_eq!(&one.schedule, &batch[i], "order kept");
            prop_assert!(verifier.verify(one).is_ok(), "schedule {} of {}", i, n);
            prop_assert!(Message::Schedule(one.clone()).validate().is_ok());
            let steps = (one.signature.len() - 64) / PROOF_STEP_LEN;
            prop_assert_eq!((one.signature.len() - 64) % PROOF_STEP_LEN, 0);
            prop_assert!(steps <= depth_of(n), "{} steps for a batch of {}", steps, n);
            if n > 1 {
                prop_assert!(steps >= 1, "a schedule of a batch needs its proof");
            }
        }
        let j = other % n;
        let i = (j + 1) % n;
        if i != j {
            // Schedule i presented with schedule j's signature and proof.
            let moved = SignedSchedule { schedule: batch[i].clone(), signature: signed[j].signature.clone() };
            prop_assert_eq!(verifier.verify(&moved), Err(SignatureError::Mismatch));
        }
        let mut changed = signed[j].clone();
        changed.schedule.version = changed.schedule.version.wrapping_add(1);
        prop_assert_eq!(verifier.verify(&changed), Err(SignatureError::Mismatch));
        let mut flipped = signed[j].clone();
        let at = flip_at % flipped.signature.len();
        flipped.signature[at] ^= flip;
        let refused = verifier.verify(&flipped);
        prop_assert!(
            matches!(refused, Err(SignatureError::Mismatch | SignatureError::BadProofSide { .. })),
            "byte {} of {} flipped: {:?}", at, flipped.signature.len(), refused
        );
    }
}

#[test]
fn a_batch_of_one_is_a_plain_signature() {
    let signer = ScheduleSigner::from_seed(&[5; 32]);
    let batch = signer.sign_batch(vec![schedule()]).unwrap();
    assert_eq!(batch, vec![signer.sign(schedule()).unwrap()]);
    assert!(signer.sign_batch(Vec::new()).unwrap().is_empty());
}

#[test]
fn malformed_batch_proofs_get_typed_errors() {
    let signer = ScheduleSigner::from_seed(&[5; 32]);
    let verifier = signer.verifier();
    let batch: Vec<Schedule> = (0..5)
        .map(|i| Schedule {
            version: i + 1,
            ..schedule()
        })
        .collect();
    let signed = signer.sign_batch(batch.clone()).unwrap();
    let proven = signed[4].clone();
    // Five leaves: the fifth moves up alone twice and meets the others' root once.
    assert_eq!(proven.signature.len(), 64 + PROOF_STEP_LEN);
    assert_eq!(proven.signature[64], 1, "its sibling is on the left");

    // The batch signature without the proof covers a root, not the schedule.
    let mut bare = proven.clone();
    bare.signature.truncate(64);
    assert_eq!(verifier.verify(&bare), Err(SignatureError::Mismatch));

    // The field's well-formed lengths.
    assert_eq!(proof_steps(63), None);
    assert_eq!(proof_steps(64), Some(0));
    assert_eq!(proof_steps(64 + PROOF_STEP_LEN), Some(1));
    assert_eq!(proof_steps(SIGNATURE_FIELD_LEN_MAX), Some(PROOF_STEPS_MAX));
    assert_eq!(proof_steps(SIGNATURE_FIELD_LEN_MAX + PROOF_STEP_LEN), None);

    // A proof cut mid-step, or longer than 32 steps: typed errors, on decode too.
    for len in [
        64 + 1,
        64 + PROOF_STEP_LEN + 7,
        64 + (PROOF_STEPS_MAX + 1) * PROOF_STEP_LEN,
    ] {
        let mut odd = proven.clone();
        odd.signature.resize(len, 0);
        assert_eq!(
            verifier.verify(&odd),
            Err(SignatureError::BadLength(len)),
            "{len} bytes"
        );
        assert!(
            Message::Schedule(odd.clone()).validate().is_err(),
            "{len} bytes"
        );
        let mut frame = vec![b'V', 1];
        frame.extend(postcard::to_allocvec(&Message::Schedule(odd)).unwrap());
        assert!(
            matches!(decode(&frame), Err(DecodeError::Invalid(_))),
            "{len} bytes"
        );
    }

    // A side byte other than 0 or 1.
    let mut sided = proven.clone();
    sided.signature[64] = 2;
    assert_eq!(
        verifier.verify(&sided),
        Err(SignatureError::BadProofSide { step: 0, byte: 2 })
    );

    // The other side: the sibling hashed on the wrong side.
    let mut swapped = proven.clone();
    swapped.signature[64] = 0;
    assert_eq!(verifier.verify(&swapped), Err(SignatureError::Mismatch));

    // A plain signature with a made-up step appended.
    let mut padded = signer.sign(schedule()).unwrap();
    padded.signature.extend_from_slice(&[0; PROOF_STEP_LEN]);
    assert_eq!(verifier.verify(&padded), Err(SignatureError::Mismatch));

    // The same schedule signed in another batch: its proof does not fit this
    // batch's signature, nor this batch's proof that signature.
    let other_batch = signer
        .sign_batch(vec![batch[4].clone(), schedule()])
        .unwrap();
    let mut mixed = other_batch[0].clone();
    mixed.signature.truncate(64);
    mixed.signature.extend_from_slice(&proven.signature[64..]);
    assert_eq!(verifier.verify(&mixed), Err(SignatureError::Mismatch));

    // Another key's batch.
    let forged = ScheduleSigner::from_seed(&[6; 32])
        .sign_batch(batch)
        .unwrap();
    assert_eq!(verifier.verify(&forged[0]), Err(SignatureError::Mismatch));
}

#[test]
fn bad_frames_get_typed_errors() {
    let good = encode_binary(&Message::Schedule(
        ScheduleSigner::from_seed(&[1; 32])
            .sign(schedule())
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        decode(&vec![b'V'; MESSAGE_LEN_MAX + 1]),
        Err(DecodeError::TooLong {
            len: MESSAGE_LEN_MAX + 1
        })
    );
    assert_eq!(decode(b"X123"), Err(DecodeError::UnknownFrame(b'X')));
    let mut wrong_version = good.clone();
    wrong_version[1] = 2;
    assert_eq!(
        decode(&wrong_version),
        Err(DecodeError::UnsupportedVersion(2))
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing), Err(DecodeError::TrailingBytes(1)));
    assert!(matches!(
        decode(&good[..good.len() - 3]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(decode(b"V"), Err(DecodeError::Malformed(_))));
    assert!(matches!(
        decode(b"{\"v\":1,\"msg\":{\"Nope\":{}}}"),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode(b"{\"v\":1,\"msg\":{\"Receipt\":{\"device\":\"a b\",\"through_seq\":1}}}"),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(
        decode(b"{\"v\":7,\"msg\":{\"Receipt\":{\"device\":\"a\",\"through_seq\":1}}}"),
        Err(DecodeError::UnsupportedVersion(7))
    );
    assert!(matches!(
        decode(b"{\"v\":1,\"msg\":{\"Receipt\":{\"device\":\"a\",\"through_seq\":1}},\"x\":1}"),
        Err(DecodeError::Malformed(_))
    ));
}

fn ack_entry(outbox_seq: u64) -> AckEntry {
    AckEntry {
        outbox_seq,
        schedule_id: ScheduleId(7),
        version: 2,
        status: AckStatus::Received,
        at: UtcNanos(0),
    }
}

#[test]
fn an_ack_batch_outside_its_bounds_is_refused_both_ways() {
    let empty = Message::Acks(AckBatch {
        device: device(),
        acks: Vec::new(),
    });
    let too_many = Message::Acks(AckBatch {
        device: device(),
        acks: (0..=ACK_BATCH_MAX as u64).map(ack_entry).collect(),
    });
    for bad in [&empty, &too_many] {
        assert!(matches!(
            encode_binary(bad),
            Err(EncodeError::Invalid(ProtocolError::Invalid {
                field: "acks",
                ..
            }))
        ));
    }
    // A peer that skips the check: the decoder refuses what it sends.
    let frame = br#"{"v":1,"msg":{"Acks":{"device":"bat-1","acks":[]}}}"#;
    assert!(matches!(
        decode(frame),
        Err(DecodeError::Invalid(ProtocolError::Invalid {
            field: "acks",
            ..
        }))
    ));
    // A full batch is within MESSAGE_LEN_MAX in both encodings, and every entry reads
    // back as a whole ack of the batch's device.
    let full = Message::Acks(AckBatch {
        device: DeviceId::new("d".repeat(DEVICE_ID_LEN_MAX)).unwrap(),
        acks: (0..ACK_BATCH_MAX as u64)
            .map(|seq| AckEntry {
                outbox_seq: u64::MAX - seq,
                schedule_id: ScheduleId(u128::MAX),
                version: u64::MAX,
                status: AckStatus::Superseded {
                    by_version: u64::MAX,
                },
                at: UtcNanos(i64::MIN),
            })
            .collect(),
    });
    assert_eq!(decode(&encode_binary(&full).unwrap()).unwrap(), full);
    assert_eq!(decode(&encode_json(&full).unwrap()).unwrap(), full);
    let acks: Vec<Ack> = full.acks().collect();
    assert_eq!(acks.len(), ACK_BATCH_MAX);
    assert!(acks.iter().all(|ack| &ack.device == full.device()));
    assert_eq!(acks[1].outbox_seq, u64::MAX - 1);
}

#[test]
fn every_schedule_rule_is_enforced() {
    type Breaker = fn(&mut Schedule);
    let cases: &[(&str, Breaker)] = &[
        ("window reversed", |s| s.valid_until = s.valid_from),
        ("window too long", |s| {
            s.valid_until = UtcNanos(s.valid_from.0 + (VALIDITY_S_MAX + 1) * 1_000_000_000)
        }),
        ("randomise too long", |s| {
            s.randomize_start_s = RAMP_S_MAX + 1
        }),
        ("no periods", |s| s.periods = Vec::new().into()),
        ("too many periods", |s| {
            s.valid_until = UtcNanos(s.valid_from.0 + 30 * 24 * HOUR_NS);
            s.periods = (0..=PERIODS_MAX as u32)
                .map(|n| SchedulePeriod {
                    offset_s: n * 60,
                    target_w: 0,
                    ramp_s: 0,
                })
                .collect();
        }),
        ("first offset not zero", |s| {
            std::sync::Arc::make_mut(&mut s.periods)[0].offset_s = 5
        }),
        ("offsets not increasing", |s| {
            std::sync::Arc::make_mut(&mut s.periods)[1].offset_s = 0
        }),
        ("period after the window", |s| {
            std::sync::Arc::make_mut(&mut s.periods)[1].offset_s = 3_600
        }),
        ("ramp too long", |s| {
            std::sync::Arc::make_mut(&mut s.periods)[1].ramp_s = RAMP_S_MAX + 1
        }),
        ("target too large", |s| {
            std::sync::Arc::make_mut(&mut s.periods)[0].target_w = TARGET_W_ABS_MAX + 1
        }),
        ("fallback hold too large", |s| {
            s.fallback = Fallback::Hold {
                target_w: -TARGET_W_ABS_MAX - 1,
            }
        }),
        ("fallback slot not dividing a day", |s| {
            s.fallback = Fallback::DailyProfile {
                slot_s: 7_000,
                targets_w: vec![0; 12],
            }
        }),
        ("fallback profile wrong length", |s| {
            s.fallback = Fallback::DailyProfile {
                slot_s: 3_600,
                targets_w: vec![0; 23],
            }
        }),
    ];
    let signer = ScheduleSigner::from_seed(&[1; 32]);
    for (name, breaker) in cases {
        let mut broken = schedule();
        breaker(&mut broken);
        assert!(broken.validate().is_err(), "{name} should be invalid");
        let message = Message::Schedule(signer.sign(broken).unwrap());
        assert!(
            encode_binary(&message).is_err(),
            "{name} must never be encoded"
        );
    }
    let mut short_signature = signer.sign(schedule()).unwrap();
    short_signature.signature.truncate(10);
    assert!(
        Message::Schedule(short_signature.clone())
            .validate()
            .is_err()
    );
    assert_eq!(
        signer.verifier().verify(&short_signature),
        Err(SignatureError::BadLength(10))
    );
}

#[test]
fn signature_from_another_key_is_refused() {
    let platform = ScheduleSigner::from_seed(&[1; 32]);
    let attacker = ScheduleSigner::from_seed(&[2; 32]);
    let forged = attacker.sign(schedule()).unwrap();
    assert_eq!(
        platform.verifier().verify(&forged),
        Err(SignatureError::Mismatch)
    );
    let mut flipped = platform.sign(schedule()).unwrap();
    flipped.signature[10] ^= 1;
    assert_eq!(
        platform.verifier().verify(&flipped),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn invalid_device_ids_are_refused() {
    for bad in [
        "",
        "has space",
        "slash/inside",
        "plus+",
        "hash#",
        &"x".repeat(65),
    ] {
        assert!(DeviceId::new(bad).is_err(), "{bad:?}");
    }
    assert!(DeviceId::new("bat_01.eu-west").is_ok());
}

#[test]
fn period_lookup_and_fallback_profile() {
    let s = schedule();
    assert_eq!(s.period_index_at(-1), None);
    assert_eq!(s.period_index_at(0), Some(0));
    assert_eq!(s.period_index_at(899), Some(0));
    assert_eq!(s.period_index_at(900), Some(1));
    let profile = Fallback::DailyProfile {
        slot_s: 3_600,
        targets_w: (0..24).map(|h| h * 100).collect(),
    };
    assert_eq!(profile.target_w_at(UtcNanos(5 * HOUR_NS + 1)), 500);
    assert_eq!(profile.target_w_at(UtcNanos(-HOUR_NS)), 2_300);
}

#[test]
fn clones_of_a_verifier_check_a_batch_signature_once() {
    let signer = ScheduleSigner::from_seed(&[5; 32]);
    let verifier = signer.verifier();
    let agents = [verifier.clone(), verifier.clone()];
    let batch_of = |first_version: u64, len: u64| -> Vec<Schedule> {
        (first_version..first_version + len)
            .map(|version| Schedule {
                version,
                ..schedule()
            })
            .collect()
    };
    let signed = signer.sign_batch(batch_of(1, 8)).unwrap();
    for (i, one) in signed.iter().enumerate() {
        assert_eq!(agents[i % 2].verify(one), Ok(()), "schedule {i}");
    }
    assert_eq!(
        verifier.signature_checks(),
        1,
        "the clones verified the batch's signature once"
    );

    // A remembered root vouches only for the same signature bytes, and a changed
    // schedule has another root: both are verified, and refused.
    let mut flipped = signed[3].clone();
    flipped.signature[10] ^= 0x40;
    assert_eq!(agents[0].verify(&flipped), Err(SignatureError::Mismatch));
    let mut changed = signed[3].clone();
    changed.schedule.version += 100;
    assert_eq!(agents[1].verify(&changed), Err(SignatureError::Mismatch));
    assert_eq!(verifier.signature_checks(), 3);

    // A failed verification is not remembered: another key's batch fails each time.
    let forged = ScheduleSigner::from_seed(&[6; 32])
        .sign_batch(batch_of(1, 8))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(verifier.verify(&forged[0]), Err(SignatureError::Mismatch));
    }
    assert_eq!(verifier.signature_checks(), 5);

    // A plain signature is verified every time.
    let plain = signer.sign(schedule()).unwrap();
    for _ in 0..2 {
        assert_eq!(verifier.verify(&plain), Ok(()));
    }
    assert_eq!(verifier.signature_checks(), 7);

    // A verifier made from the key's bytes is not a clone: it has its own memo.
    let own = ScheduleVerifier::from_public_bytes(&verifier.public_bytes()).unwrap();
    assert_eq!(own, verifier, "equal keys, equal verifiers");
    assert_eq!(own.verify(&signed[0]), Ok(()));
    assert_eq!(own.signature_checks(), 1);
    assert_eq!(verifier.signature_checks(), 7);
}

#[test]
fn a_verifier_remembers_a_bounded_number_of_batch_roots() {
    let signer = ScheduleSigner::from_seed(&[5; 32]);
    let verifier = signer.verifier();
    let batches: Vec<Vec<SignedSchedule>> = (0..=VERIFIED_ROOTS_REMEMBERED as u64)
        .map(|b| {
            let pair = (0..2)
                .map(|i| Schedule {
                    version: 1 + 2 * b + i,
                    ..schedule()
                })
                .collect();
            signer.sign_batch(pair).unwrap()
        })
        .collect();
    for batch in &batches {
        assert_eq!(verifier.verify(&batch[0]), Ok(()));
    }
    let checks = VERIFIED_ROOTS_REMEMBERED as u64 + 1;
    assert_eq!(verifier.signature_checks(), checks);
    // The newest roots are remembered; the oldest was overwritten and is verified
    // again.
    assert_eq!(
        verifier.verify(&batches[VERIFIED_ROOTS_REMEMBERED][1]),
        Ok(())
    );
    assert_eq!(verifier.verify(&batches[1][1]), Ok(()));
    assert_eq!(verifier.signature_checks(), checks);
    assert_eq!(verifier.verify(&batches[0][1]), Ok(()));
    assert_eq!(verifier.signature_checks(), checks + 1);
}
