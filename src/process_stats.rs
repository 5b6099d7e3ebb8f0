//! This process's CPU time and memory, read from Linux `/proc` (`None` on other
//! systems or when the files do not parse): what `voltex up --resources-every-s`
//! reports against the idle target, what the server exports on `/metrics`
//! (`voltex_process_cpu_seconds`, `voltex_process_resident_memory_bytes`, every 15 s)
//! and what `voltex sim` prints as RSS.
//!
//! CPU time is `utime + stime` of `/proc/self/stat` (every thread of the process), in
//! the kernel's `USER_HZ` ticks, which Linux fixes at 100 per second for what it
//! reports to user space on the architectures Voltex runs on (x86_64, aarch64).
//! Memory is `VmRSS` (resident now) and `VmHWM` (the peak) of `/proc/self/status`.
//!
//! The parsers take the files' text, so they are tested on fixed samples; malformed
//! text gives `None`, never a panic.

/// Ticks per second of `/proc/<pid>/stat`'s CPU times (Linux `USER_HZ`).
const USER_HZ: f64 = 100.0;

/// One reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessSample {
    /// CPU time used so far, user + system, all threads (s).
    pub cpu_s: f64,
    /// Resident memory now (bytes).
    pub rss_bytes: u64,
    /// Peak resident memory so far (bytes).
    pub peak_rss_bytes: u64,
}

impl ProcessSample {
    /// Reads this process's figures.
    pub fn read() -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let (rss_bytes, peak_rss_bytes) = memory_from_status(&status)?;
        Some(ProcessSample {
            cpu_s: cpu_s_from_stat(&stat)?,
            rss_bytes,
            peak_rss_bytes,
        })
    }

    /// Cores used on average between `earlier` and this sample, `elapsed_s` apart.
    pub fn cores_since(&self, earlier: &ProcessSample, elapsed_s: f64) -> f64 {
        if elapsed_s <= 0.0 {
            return 0.0;
        }
        (self.cpu_s - earlier.cpu_s).max(0.0) / elapsed_s
    }
}

/// Resident memory of this process in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    memory_from_status(&status).map(|(rss, _)| rss)
}

/// `utime + stime` in seconds from the text of `/proc/<pid>/stat`. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses itself, so fields
/// are counted from the last `)`.
fn cpu_s_from_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and
    // 13th whitespace-separated fields here.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// (`VmRSS`, `VmHWM`) in bytes from the text of `/proc/<pid>/status`.
fn memory_from_status(status: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(key))?;
        let value: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        value.checked_mul(1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime_counted_after_the_name() {
        // A name with a space and a parenthesis; utime 250, stime 50 ticks.
        let stat = "4242 (voltex (up) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 \
                    20 0 12 0 100 1000000 500 18446744073709551615";
        assert_eq!(cpu_s_from_stat(stat), Some(3.0));
    }

    #[test]
    fn memory_is_vm_rss_and_vm_hwm_in_bytes() {
        let status = "Name:\tvoltex\nVmPeak:\t  900000 kB\nVmHWM:\t   300000 kB\nVmRSS:\t   \
                      200000 kB\nThreads:\t12\n";
        assert_eq!(
            memory_from_status(status),
            Some((200_000 * 1024, 300_000 * 1024))
        );
    }

    #[test]
    fn malformed_proc_text_is_none_not_a_panic() {
        for stat in [
            "",
            "4242 voltex S 1",
            "4242 (voltex) S 1 2 3",
            "4242 (voltex) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 50",
        ] {
            assert_eq!(cpu_s_from_stat(stat), None, "{stat:?}");
        }
        for status in [
            "",
            "VmRSS:\t12 kB\n",
            "VmRSS:\tmany kB\nVmHWM:\t1 kB\n",
            "VmRSS:\t18446744073709551615 kB\nVmHWM:\t1 kB\n",
        ] {
            assert_eq!(memory_from_status(status), None, "{status:?}");
        }
    }

    #[test]
    fn this_process_can_be_read_on_linux() {
        if cfg!(target_os = "linux") {
            let sample = ProcessSample::read().expect("/proc/self is readable");
            assert!(sample.rss_bytes > 0 && sample.peak_rss_bytes >= sample.rss_bytes);
            assert!(sample.cpu_s >= 0.0);
        }
    }

    #[test]
    fn cores_are_cpu_seconds_per_wall_second() {
        let at = |cpu_s| ProcessSample {
            cpu_s,
            rss_bytes: 1,
            peak_rss_bytes: 1,
        };
        assert_eq!(at(13.0).cores_since(&at(10.0), 10.0), 0.3);
        assert_eq!(at(13.0).cores_since(&at(10.0), 0.0), 0.0);
    }
}
