//! Acceptance table: one case per rejection reason (and per kind of bad batch proof),
//! plus supersede, idempotent duplicates and clock-skew warnings; and the same
//! through `AgentCore`.

mod common;

use common::*;
use voltex_agent::acceptance::{
    AckDraft, Decision, Held, ScheduleKey, SignatureCheck, Verdict, decide,
};
use voltex_agent::core::AgentCore;
use voltex_agent::store::{PersistedState, RecordStatus};
use voltex_dispatch::SignedSchedule;
use voltex_dispatch::message::{AckStatus, DeviceId, Fallback, Schedule, ScheduleRejection};
use voltex_market::UtcNanos;

struct Case {
    name: &'static str,
    held: Option<(SignedSchedule, bool)>,
    received: SignedSchedule,
    now: UtcNanos,
    verdict: Verdict,
}

fn reject(reason: ScheduleRejection) -> Verdict {
    Verdict::Reject(reason)
}

fn cases() -> Vec<Case> {
    let fresh = sign(hour_schedule(1, 1));
    let mut bad_signature = fresh.clone();
    bad_signature.signature[0] ^= 1;
    let mut other_device = hour_schedule(1, 1);
    other_device.device = DeviceId::new("bat-0002").expect("valid");
    let mut too_much_discharge = hour_schedule(1, 1);
    std::sync::Arc::make_mut(&mut too_much_discharge.periods)[1].target_w = 4_001;
    let mut too_much_charge = hour_schedule(1, 1);
    std::sync::Arc::make_mut(&mut too_much_charge.periods)[0].target_w = -5_001;
    let mut fallback_too_high = hour_schedule(1, 1);
    fallback_too_high.fallback = Fallback::Hold { target_w: 9_000 };
    let mut no_periods = hour_schedule(1, 1);
    no_periods.periods = Vec::new().into();
    let mut same_version_other_content = hour_schedule(1, 5);
    std::sync::Arc::make_mut(&mut same_version_other_content.periods)[0].target_w = -1_000;
    let held_v5 = (sign(hour_schedule(1, 5)), true);
    // A roll-out batch: this device's schedule and two others', one signature.
    let batch = signer()
        .sign_batch(
            ["bat-0001", "bat-0002", "bat-0003"]
                .into_iter()
                .map(|id| Schedule {
                    device: DeviceId::new(id).expect("valid"),
                    ..hour_schedule(1, 1)
                })
                .collect(),
        )
        .expect("signable");
    let batch_signed = batch[0].clone();
    let mut proof_of_another = batch_signed.clone();
    proof_of_another.signature = batch[1].signature.clone();
    let mut proof_side_corrupt = batch_signed.clone();
    proof_side_corrupt.signature[64] = 7;
    let mut proof_cut_mid_step = batch_signed.clone();
    proof_cut_mid_step.signature.pop();
    vec![
        Case {
            name: "batch_signed_schedule_is_accepted",
            held: None,
            received: batch_signed,
            now: at(-60),
            verdict: Verdict::Accept { supersedes: None },
        },
        Case {
            name: "batch_proof_of_another_schedule",
            held: None,
            received: proof_of_another,
            now: at(-60),
            verdict: reject(ScheduleRejection::InvalidSignature),
        },
        Case {
            name: "batch_proof_side_byte_corrupt",
            held: None,
            received: proof_side_corrupt,
            now: at(-60),
            verdict: reject(ScheduleRejection::InvalidSignature),
        },
        Case {
            name: "batch_proof_cut_mid_step",
            held: None,
            received: proof_cut_mid_step,
            now: at(-60),
            verdict: reject(ScheduleRejection::InvalidSignature),
        },
        Case {
            name: "fresh_schedule_is_accepted",
            held: None,
            received: fresh.clone(),
            now: at(-60),
            verdict: Verdict::Accept { supersedes: None },
        },
        Case {
            name: "invalid_signature",
            held: None,
            received: bad_signature,
            now: at(-60),
            verdict: reject(ScheduleRejection::InvalidSignature),
        },
        Case {
            name: "wrong_device",
            held: None,
            received: sign(other_device),
            now: at(-60),
            verdict: reject(ScheduleRejection::WrongDevice),
        },
        Case {
            name: "expired_at_valid_until",
            held: None,
            received: fresh.clone(),
            now: at(3_600),
            verdict: reject(ScheduleRejection::Expired),
        },
        Case {
            name: "late_after_last_period_plus_grace",
            held: None,
            received: fresh.clone(),
            now: at(2_700 + 61),
            verdict: reject(ScheduleRejection::Late),
        },
        Case {
            name: "not_late_within_grace",
            held: None,
            received: fresh.clone(),
            now: at(2_700 + 60),
            verdict: Verdict::Accept { supersedes: None },
        },
        Case {
            name: "older_version",
            held: Some(held_v5.clone()),
            received: sign(hour_schedule(1, 4)),
            now: at(-60),
            verdict: reject(ScheduleRejection::OlderVersion),
        },
        Case {
            name: "same_version_different_content_is_not_newer",
            held: Some(held_v5.clone()),
            received: sign(same_version_other_content),
            now: at(-60),
            verdict: reject(ScheduleRejection::OlderVersion),
        },
        Case {
            name: "discharge_above_limit",
            held: None,
            received: sign(too_much_discharge),
            now: at(-60),
            verdict: reject(ScheduleRejection::ExceedsDeviceLimits),
        },
        Case {
            name: "charge_above_limit",
            held: None,
            received: sign(too_much_charge),
            now: at(-60),
            verdict: reject(ScheduleRejection::ExceedsDeviceLimits),
        },
        Case {
            name: "fallback_above_limit",
            held: None,
            received: sign(fallback_too_high),
            now: at(-60),
            verdict: reject(ScheduleRejection::ExceedsDeviceLimits),
        },
        Case {
            name: "malformed_no_periods",
            held: None,
            received: sign(no_periods),
            now: at(-60),
            verdict: reject(ScheduleRejection::Malformed),
        },
        Case {
            name: "newer_version_supersedes",
            held: Some(held_v5.clone()),
            received: sign(hour_schedule(1, 6)),
            now: at(-60),
            verdict: Verdict::Accept {
                supersedes: Some(key(1, 5)),
            },
        },
        Case {
            name: "newer_version_of_another_schedule_id_supersedes",
            held: Some(held_v5.clone()),
            received: sign(hour_schedule(2, 6)),
            now: at(-60),
            verdict: Verdict::Accept {
                supersedes: Some(key(1, 5)),
            },
        },
        Case {
            name: "equal_schedule_is_an_idempotent_duplicate",
            held: Some(held_v5.clone()),
            received: held_v5.0.clone(),
            now: at(-60),
            verdict: Verdict::Duplicate,
        },
    ]
}

fn run(case: &Case) -> Decision {
    let config = core_config().profile.acceptance.clone();
    let held = case.held.as_ref().map(|(signed, live)| Held {
        signed,
        live: *live,
    });
    decide(held, &case.received, case.now, &device(), &config)
}

#[test]
fn acceptance_table_gives_the_expected_verdict_and_acks() {
    for case in cases() {
        let decision = run(&case);
        assert_eq!(decision.verdict, case.verdict, "case {}", case.name);
        let key = ScheduleKey::of(&case.received);
        let expected_ack = match case.verdict {
            Verdict::Accept { .. } => Some(AckStatus::Accepted),
            Verdict::Reject(reason) => Some(AckStatus::Rejected(reason)),
            Verdict::Duplicate => None,
        };
        assert_eq!(
            decision.ack,
            expected_ack.map(|status| AckDraft {
                key,
                status,
                at: case.now
            }),
            "case {}",
            case.name
        );
        let expected_superseded = match (case.verdict, &case.held) {
            (
                Verdict::Accept {
                    supersedes: Some(old),
                },
                Some((_, true)),
            ) => Some(AckDraft {
                key: old,
                status: AckStatus::Superseded {
                    by_version: key.version,
                },
                at: case.now,
            }),
            _ => None,
        };
        assert_eq!(
            decision.superseded_ack, expected_superseded,
            "case {}",
            case.name
        );
        assert_eq!(decision.clock_skew_s, None, "case {}", case.name);
    }
}

#[test]
fn only_the_simulators_trusted_check_skips_the_signature() {
    let mut forged = sign(hour_schedule(1, 1));
    forged.signature[0] ^= 1;
    let mut unsigned = forged.clone();
    unsigned.signature.clear();
    let mut config = core_config().profile.acceptance.clone();
    assert!(matches!(config.signature, SignatureCheck::Verify(_)));
    for received in [&forged, &unsigned] {
        let decision = decide(None, received, at(-60), &device(), &config);
        assert_eq!(
            decision.verdict,
            reject(ScheduleRejection::InvalidSignature)
        );
    }
    config.signature = SignatureCheck::TrustedSimulation;
    for received in [&forged, &unsigned] {
        let decision = decide(None, received, at(-60), &device(), &config);
        assert_eq!(decision.verdict, Verdict::Accept { supersedes: None });
    }
    // Every other check still runs: a schedule for another device is refused.
    let mut other_device = hour_schedule(1, 1);
    other_device.device = DeviceId::new("bat-0002").expect("valid");
    let unsigned_other = SignedSchedule {
        schedule: other_device,
        signature: Vec::new(),
    };
    let decision = decide(None, &unsigned_other, at(-60), &device(), &config);
    assert_eq!(decision.verdict, reject(ScheduleRejection::WrongDevice));
}

#[test]
fn superseding_a_finished_schedule_sends_no_superseded_ack() {
    let config = core_config().profile.acceptance.clone();
    let old = sign(hour_schedule(1, 1));
    let new = sign(hour_schedule(1, 2));
    let decision = decide(
        Some(Held {
            signed: &old,
            live: false,
        }),
        &new,
        at(-60),
        &device(),
        &config,
    );
    assert_eq!(
        decision.verdict,
        Verdict::Accept {
            supersedes: Some(key(1, 1))
        }
    );
    assert_eq!(decision.superseded_ack, None);
    assert_eq!(decision.acks().count(), 1);
}

#[test]
fn schedule_issued_ahead_of_agent_clock_is_accepted_with_a_skew_warning() {
    let config = core_config().profile.acceptance.clone();
    let mut schedule = hour_schedule(1, 1);
    schedule.issued_at = at(60);
    let decision = decide(None, &sign(schedule.clone()), at(0), &device(), &config);
    assert_eq!(decision.verdict, Verdict::Accept { supersedes: None });
    assert_eq!(decision.clock_skew_s, Some(60));
    schedule.issued_at = at(5);
    let decision = decide(None, &sign(schedule), at(0), &device(), &config);
    assert_eq!(decision.clock_skew_s, None, "within tolerance");
}

#[test]
fn core_supersedes_live_schedule_and_acks_in_order() {
    let mut core = AgentCore::restore(core_config(), PersistedState::default());
    core.receive(sign(hour_schedule(1, 1)), at(-120));
    core.decide_pending(at(-120));
    core.receive(sign(hour_schedule(1, 2)), at(-60));
    let decided = core.decide_pending(at(-60));
    assert_eq!(decided.accepted, vec![key(1, 2)]);
    let acks: Vec<(ScheduleKey, AckStatus)> = core
        .outbox()
        .entries()
        .filter_map(|e| match e.item {
            voltex_agent::outbox::OutboxItem::Ack(a) => Some((a.key, a.status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks,
        vec![
            (key(1, 1), AckStatus::Received),
            (key(1, 1), AckStatus::Accepted),
            (key(1, 2), AckStatus::Received),
            (key(1, 2), AckStatus::Accepted),
            (key(1, 1), AckStatus::Superseded { by_version: 2 }),
        ]
    );
    let status = |k| {
        core.records()
            .iter()
            .find(|r| r.key() == k)
            .map(|r| r.status)
    };
    assert_eq!(
        status(key(1, 1)),
        Some(RecordStatus::Superseded { by_version: 2 })
    );
    assert_eq!(status(key(1, 2)), Some(RecordStatus::Accepted));
    assert_eq!(core.live_schedule(), Some(key(1, 2)));
    core.check_invariants();
}

#[test]
fn core_receiving_the_same_schedule_twice_adds_no_state_and_no_ack() {
    let mut core = AgentCore::restore(core_config(), PersistedState::default());
    let signed = sign(hour_schedule(1, 1));
    let first = core.receive(signed.clone(), at(-60));
    assert!(!first.duplicate);
    core.decide_pending(at(-60));
    let outbox_len = core.outbox().len();
    let records = core.records().to_vec();
    let again = core.receive(signed, at(-30));
    assert!(again.duplicate);
    assert!(again.batch.is_empty());
    let decided = core.decide_pending(at(-30));
    assert!(decided.batch.is_empty());
    assert_eq!(core.outbox().len(), outbox_len);
    assert_eq!(core.records(), &records[..]);
    core.check_invariants();
}

#[test]
fn core_rejected_schedule_redelivered_is_a_duplicate_too() {
    let mut core = AgentCore::restore(core_config(), PersistedState::default());
    let mut bad = sign(hour_schedule(1, 1));
    bad.signature[3] ^= 0x40;
    core.receive(bad.clone(), at(-60));
    let decided = core.decide_pending(at(-60));
    assert_eq!(decided.rejected, vec![key(1, 1)]);
    assert!(core.receive(bad, at(-50)).duplicate);
    assert_eq!(core.outbox().len(), 2, "Received + Rejected, once");
}

#[test]
fn core_forged_copy_received_first_does_not_shadow_the_real_schedule() {
    let mut core = AgentCore::restore(core_config(), PersistedState::default());
    let genuine = sign(hour_schedule(1, 1));
    let mut forged = genuine.clone();
    std::sync::Arc::make_mut(&mut forged.schedule.periods)[0].target_w = 4_000; // altered by the broker; signature kept
    core.receive(forged, at(-60));
    assert_eq!(core.decide_pending(at(-60)).rejected, vec![key(1, 1)]);
    let received = core.receive(genuine, at(-50));
    assert!(!received.duplicate);
    assert_eq!(received.batch.records_delete, vec![key(1, 1)]);
    assert_eq!(core.decide_pending(at(-50)).accepted, vec![key(1, 1)]);
    assert_eq!(core.live_schedule(), Some(key(1, 1)));
    core.check_invariants();
}
