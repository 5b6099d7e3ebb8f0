//! Journal behaviour at its API boundary: round trips, torn tails, corruption, and
//! scanning arbitrary bytes without panicking.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use voltex_engine::journal::{
    DamageKind, FileJournal, Journal, JournalConfig, JournalError, MemJournal, MemStorage,
    MidJournalDamage, RECORD_HEADER_LEN, encode_record, scan,
};

fn payload(index: usize) -> Vec<u8> {
    // Varied lengths, including empty, with content that depends on the index.
    (0..index % 37)
        .map(|byte| (index * 31 + byte) as u8)
        .collect()
}

fn write_records(path: &Path, payloads: &[Vec<u8>], batch_len: usize) {
    let (mut journal, report) = FileJournal::open(path, JournalConfig::default()).unwrap();
    assert_eq!(report.damage, None);
    for batch in payloads.chunks(batch_len) {
        for record in batch {
            journal.append(record).unwrap();
        }
        assert_eq!(journal.n_pending(), batch.len());
        journal.commit().unwrap();
        assert_eq!(journal.n_pending(), 0);
    }
}

fn read_records(path: &Path) -> Vec<Vec<u8>> {
    let (mut journal, _) = FileJournal::open(path, JournalConfig::default()).unwrap();
    journal
        .read_all()
        .unwrap()
        .iter()
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn file_journal_round_trips_records_across_reopen_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let payloads: Vec<Vec<u8>> = (0..100).map(payload).collect();
    write_records(&path, &payloads[..60], 7);
    // Reopen and keep appending after the existing records.
    write_records(&path, &payloads[60..], 16);
    assert_eq!(read_records(&path), payloads);
    let (journal, report) = FileJournal::open(&path, JournalConfig::default()).unwrap();
    assert_eq!(report.n_records, 100);
    assert_eq!(report.damage, None);
    assert_eq!(journal.committed_len(), fs::metadata(&path).unwrap().len());
}

#[test]
fn uncommitted_appends_are_not_visible_or_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let (mut journal, _) = FileJournal::open(&path, JournalConfig::default()).unwrap();
    journal.append(b"kept").unwrap();
    journal.commit().unwrap();
    journal.append(b"never committed").unwrap();
    assert_eq!(journal.read_all().unwrap().len(), 1);
    drop(journal);
    assert_eq!(read_records(&path), vec![b"kept".to_vec()]);
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let payloads: Vec<Vec<u8>> = (1..6).map(|index| payload(index + 20)).collect();
    write_records(&full, &payloads, 2);
    let bytes = fs::read(&full).unwrap();
    let last_len = RECORD_HEADER_LEN + payloads.last().unwrap().len();
    let last_start = bytes.len() - last_len;
    for cut in last_start..bytes.len() {
        let path = dir.path().join(format!("cut-{cut}"));
        fs::write(&path, &bytes[..cut]).unwrap();
        let (mut journal, report) = FileJournal::open(&path, JournalConfig::default()).unwrap();
        assert_eq!(report.n_records, 4, "cut at {cut}");
        assert_eq!(report.committed_len, last_start as u64);
        if cut == last_start {
            assert_eq!(
                report.damage, None,
                "a cut exactly between records is clean"
            );
        } else {
            let damage = report.damage.expect("torn tail reported");
            assert_eq!(damage.offset, last_start as u64);
            assert_eq!(damage.kind, DamageKind::Torn);
            assert_eq!(damage.bytes_dropped, (cut - last_start) as u64);
        }
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            last_start as u64,
            "file truncated"
        );
        let records: Vec<Vec<u8>> = journal
            .read_all()
            .unwrap()
            .iter()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(records, payloads[..4]);
        // The journal is usable after repair: appends go after the last good record.
        journal.append(b"after repair").unwrap();
        journal.commit().unwrap();
        drop(journal);
        let reread = read_records(&path);
        assert_eq!(reread.len(), 5);
        assert_eq!(reread[4], b"after repair");
    }
}

#[test]
fn flipped_bit_in_the_last_record_is_a_bad_checksum_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let payloads: Vec<Vec<u8>> = (0..10).map(|index| payload(index + 10)).collect();
    write_records(&path, &payloads, 3);
    let mut bytes = fs::read(&path).unwrap();
    let last_start = bytes.len() - (RECORD_HEADER_LEN + payloads[9].len());
    let flip_at = bytes.len() - 2;
    bytes[flip_at] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    let (_, report) = FileJournal::open(&path, JournalConfig::default()).unwrap();
    let damage = report.damage.unwrap();
    assert_eq!(damage.kind, DamageKind::BadChecksum);
    assert_eq!(damage.offset, last_start as u64);
    assert_eq!(read_records(&path), payloads[..9]);
}

#[test]
fn flipped_bit_in_the_middle_is_detected_and_not_silently_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let payloads: Vec<Vec<u8>> = (0..10).map(|index| payload(index + 10)).collect();
    write_records(&path, &payloads, 4);
    let mut bytes = fs::read(&path).unwrap();
    let fifth_start: usize = payloads[..4]
        .iter()
        .map(|p| RECORD_HEADER_LEN + p.len())
        .sum();
    bytes[fifth_start + RECORD_HEADER_LEN + 3] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let refused = FileJournal::open(&path, JournalConfig::default());
    match refused {
        Err(JournalError::CorruptMiddle {
            offset,
            kind,
            next_valid_offset,
        }) => {
            assert_eq!(offset, fifth_start as u64);
            assert_eq!(kind, DamageKind::BadChecksum);
            assert_eq!(
                next_valid_offset,
                (fifth_start + RECORD_HEADER_LEN + payloads[4].len()) as u64
            );
        }
        other => panic!("expected CorruptMiddle, got {other:?}"),
    }
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "refusal leaves the file untouched"
    );

    // The operator can accept the loss explicitly.
    let config = JournalConfig {
        mid_journal_damage: MidJournalDamage::Truncate,
        ..Default::default()
    };
    let (mut journal, report) = FileJournal::open(&path, config).unwrap();
    assert_eq!(report.n_records, 4);
    assert_eq!(report.damage.map(|d| d.kind), Some(DamageKind::BadChecksum));
    assert_eq!(journal.read_all().unwrap().len(), 4);
}

#[test]
fn oversize_append_is_refused_and_oversize_length_on_disk_is_damage() {
    let config = JournalConfig {
        record_len_max: 16,
        ..Default::default()
    };
    let storage = MemStorage::new();
    let (mut journal, _) = MemJournal::open(storage.clone(), config).unwrap();
    assert!(matches!(
        journal.append(&[0u8; 17]),
        Err(JournalError::RecordTooLong { len: 17, max: 16 })
    ));
    journal.append(&[7u8; 16]).unwrap();
    journal.commit().unwrap();
    drop(journal);
    let mut bytes = storage.bytes();
    let good = bytes.len();
    encode_record(&[1u8; 40], &mut bytes);
    storage.set_bytes(bytes);
    let (mut journal, report) = MemJournal::open(storage.clone(), config).unwrap();
    assert_eq!(
        report.damage.map(|d| (d.offset, d.kind)),
        Some((good as u64, DamageKind::OversizeLength))
    );
    assert_eq!(storage.len(), good);
    assert_eq!(journal.read_all().unwrap().len(), 1);
}

#[test]
fn zero_config_limit_is_refused() {
    let config = JournalConfig {
        record_len_max: 0,
        ..Default::default()
    };
    assert!(matches!(
        MemJournal::open(MemStorage::new(), config),
        Err(JournalError::InvalidConfig(_))
    ));
}

fn framed(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for payload in payloads {
        encode_record(payload, &mut bytes);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Decoding outside bytes never panics, and what it returns is self-consistent.
    #[test]
    fn scan_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        record_len_max in 1u32..128,
    ) {
        let scanned = scan(&bytes, record_len_max);
        prop_assert!(scanned.good_len <= bytes.len());
        prop_assert_eq!(scanned.damage.is_some(), scanned.good_len < bytes.len());
        let mut expected_start = 0;
        for payload in &scanned.payloads {
            prop_assert_eq!(payload.start, expected_start + RECORD_HEADER_LEN);
            prop_assert!(payload.len() <= record_len_max as usize);
            expected_start = payload.end;
        }
        prop_assert_eq!(expected_start, scanned.good_len);
        // Opening the same bytes in memory never panics either.
        let storage = MemStorage::new();
        storage.set_bytes(bytes.clone());
        let config = JournalConfig { record_len_max, ..Default::default() };
        if let Ok((mut journal, report)) = MemJournal::open(storage, config) {
            prop_assert_eq!(report.n_records as usize, scanned.payloads.len());
            prop_assert_eq!(journal.read_all().unwrap().len(), scanned.payloads.len());
        }
    }

    /// Any truncation of a valid journal recovers exactly the whole records before the cut.
    #[test]
    fn truncated_journal_recovers_exactly_the_whole_records(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12),
        cut_fraction in 0.0f64..=1.0,
    ) {
        let (bytes, ends) = framed(&payloads);
        let cut = ((bytes.len() as f64) * cut_fraction) as usize;
        let n_whole = ends.iter().filter(|&&end| end <= cut).count();
        let storage = MemStorage::new();
        storage.set_bytes(bytes[..cut].to_vec());
        let (mut journal, report) =
            MemJournal::open(storage.clone(), JournalConfig::default()).unwrap();
        prop_assert_eq!(report.n_records as usize, n_whole);
        let kept = if n_whole == 0 { 0 } else { ends[n_whole - 1] };
        prop_assert_eq!(storage.len(), kept);
        prop_assert_eq!(report.damage.is_some(), cut != kept);
        if let Some(damage) = report.damage {
            prop_assert_eq!(damage.kind, DamageKind::Torn);
        }
        let records = journal.read_all().unwrap();
        let records: Vec<Vec<u8>> = records.iter().map(<[u8]>::to_vec).collect();
        prop_assert_eq!(&records[..], &payloads[..n_whole]);
    }

    /// Random garbage appended after valid records never costs a valid record, never
    /// panics, and either truncates the garbage or refuses because it looks valid.
    #[test]
    fn garbage_tail_never_costs_a_committed_record(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
        garbage in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let (mut bytes, _) = framed(&payloads);
        bytes.extend_from_slice(&garbage);
        let storage = MemStorage::new();
        storage.set_bytes(bytes);
        match MemJournal::open(storage, JournalConfig::default()) {
            Ok((mut journal, _)) => {
                let records = journal.read_all().unwrap();
                prop_assert!(records.len() >= payloads.len());
                let kept: Vec<Vec<u8>> =
                    records.iter().take(payloads.len()).map(<[u8]>::to_vec).collect();
                prop_assert_eq!(kept, payloads);
            }
            Err(JournalError::CorruptMiddle { offset, .. }) => {
                prop_assert!(offset >= framed(&payloads).0.len() as u64);
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

#[test]
fn second_writer_on_the_same_file_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let (first, _) = FileJournal::open(&path, JournalConfig::default()).unwrap();
    assert!(matches!(
        FileJournal::open(&path, JournalConfig::default()),
        Err(JournalError::Locked { .. })
    ));
    drop(first);
    assert!(FileJournal::open(&path, JournalConfig::default()).is_ok());
}
