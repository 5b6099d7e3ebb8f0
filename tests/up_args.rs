//! `voltex up`'s refusal of bad flags: each is a clear error naming the flag, before
//! anything starts (no server, broker or agent; nothing is written to the data dir).
//!
//! Runs the binary Cargo builds for this package (`CARGO_BIN_EXE_voltex`).

use std::process::Command;

/// Runs `voltex up` with `args` in a fresh data dir; returns (exit success, stderr,
/// whether the data dir was created).
fn up(args: &[&str]) -> (bool, String, bool) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data_dir = scratch.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_voltex"))
        .arg("up")
        .args(["--http-addr", "127.0.0.1:0", "--run-for-s", "1"])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(args)
        .output()
        .expect("voltex up runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        data_dir.exists(),
    )
}

#[test]
fn bad_flags_are_refused_by_name_before_anything_starts() {
    let cases: [(&[&str], &str); 10] = [
        (&["--max-position-mw", "0.05"], "--max-position-mw"),
        (&["--max-position-mw", "0"], "--max-position-mw"),
        (&["--max-position-mw=-1"], "--max-position-mw"),
        (&["--agents", "0"], "--agents"),
        (&["--hour-seconds", "0"], "--hour-seconds"),
        (
            &["--imbalance-penalty-eur-per-mwh=-5"],
            "--imbalance-penalty",
        ),
        // Half the spread off the 0.01 tick; a negative spread; a depth of part of a
        // lot; a depth without a spread.
        (
            &["--intraday-spread-eur-per-mwh", "0.01"],
            "--intraday-spread-eur-per-mwh",
        ),
        (
            &["--intraday-spread-eur-per-mwh=-2"],
            "--intraday-spread-eur-per-mwh",
        ),
        (
            &[
                "--intraday-spread-eur-per-mwh",
                "1",
                "--intraday-depth-mw",
                "0.05",
            ],
            "--intraday-spread-eur-per-mwh",
        ),
        (
            &["--intraday-depth-mw", "1"],
            "--intraday-spread-eur-per-mwh",
        ),
    ];
    for (args, flag) in cases {
        let (ok, stderr, started) = up(args);
        assert!(!ok, "{args:?} must fail");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(
            !started,
            "{args:?}: nothing may start (the data dir was created)"
        );
    }
}
