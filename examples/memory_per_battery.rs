//! Memory per virtual battery, measured: runs a scenario twice in one process, with
//! every group's count as written (N batteries) and doubled (2N), and prints the live
//! heap at the end of every simulated day of each run (a counting global allocator),
//! each day's peak (day 1's includes building the world), the run's peak, and the
//! marginal cost per battery: `(heap(2N) - heap(N)) / N`. The
//! difference cancels what does not grow with the fleet (prices, per-interval rows,
//! the queue's buckets), so it is the steady-state cost of one more battery.
//!
//! Also prints the process's resident set at the end of every day, above its value
//! before the run (what the operating system charges, allocator slack included), for
//! N and 2N and as a marginal cost per battery. Each of those two runs is a fresh child
//! process (this program again, with `--rss-child SCALE`): in one process the second
//! run would reuse pages the first left resident, and look cheaper than it is. The
//! allocator is the `voltex` binary's (jemalloc, wrapped here to count) with its start-up
//! options and the setting `voltex sim` makes, so these are the figures of a `voltex sim`
//! run.
//!
//! `cargo run --release --example memory_per_battery -- scenarios/np-year-10k.toml [DAYS]`
//!
//! A measurement tool, not part of the simulator: the library does no file I/O.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

use voltex::allocator::{ALLOCATOR, return_freed_pages_at_once, slab_bytes};
use voltex::process_stats::rss_bytes;
use voltex_market::series::{PriceSeries, SeriesLayout};
use voltex_sim::run::{Progress, simulate};
use voltex_sim::scenario::Scenario;

/// The binary's allocator, counting the bytes live and the peak.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Live allocations by requested size, in 8-byte classes up to 2 KiB (the last class
/// counts everything larger): which allocations make up the per-battery cost.
const SIZE_CLASSES: usize = 257;
static LIVE_BY_CLASS: [AtomicUsize; SIZE_CLASSES] = [const { AtomicUsize::new(0) }; SIZE_CLASSES];

/// The live allocations by class when the live heap last rose [`SNAPSHOT_STEP_BYTES`]
/// above the previous snapshot: the make-up of the peak (to within a step; threads that
/// allocate at once can blur it).
static AT_PEAK_BY_CLASS: [AtomicUsize; SIZE_CLASSES] =
    [const { AtomicUsize::new(0) }; SIZE_CLASSES];
static SNAPSHOT_LIVE_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);
const SNAPSHOT_STEP_BYTES: usize = 256 * 1024;

/// Copies the class counts if `live` is a step above the last snapshot (no allocation:
/// called from inside the allocator).
fn snapshot_if_higher(live: usize) {
    let last = SNAPSHOT_LIVE_BYTES.load(Ordering::Relaxed);
    if live > last.saturating_add(SNAPSHOT_STEP_BYTES)
        && SNAPSHOT_LIVE_BYTES
            .compare_exchange(last, live, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        for (at_peak, live) in AT_PEAK_BY_CLASS.iter().zip(&LIVE_BY_CLASS) {
            at_peak.store(live.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

fn class_of(size: usize) -> usize {
    size.div_ceil(8).min(SIZE_CLASSES - 1)
}

/// Bytes live in allocations larger than the classes above (buffers: the per-device
/// columns, the event queue's slab and buckets), which the class counts show only as
/// a count.
static LIVE_LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);
const LARGE_ABOVE_BYTES: usize = (SIZE_CLASSES - 1) * 8;

fn add_large(size: usize) {
    if size > LARGE_ABOVE_BYTES {
        LIVE_LARGE_BYTES.fetch_add(size, Ordering::Relaxed);
    }
}

fn sub_large(size: usize) {
    if size > LARGE_ABOVE_BYTES {
        LIVE_LARGE_BYTES.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to `ALLOCATOR` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { ALLOCATOR.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
            LIVE_BY_CLASS[class_of(layout.size())].fetch_add(1, Ordering::Relaxed);
            add_large(layout.size());
            snapshot_if_higher(live);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { ALLOCATOR.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_BY_CLASS[class_of(layout.size())].fetch_sub(1, Ordering::Relaxed);
        sub_large(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { ALLOCATOR.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
            LIVE_BY_CLASS[class_of(layout.size())].fetch_sub(1, Ordering::Relaxed);
            LIVE_BY_CLASS[class_of(new_size)].fetch_add(1, Ordering::Relaxed);
            sub_large(layout.size());
            add_large(new_size);
            snapshot_if_higher(live);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
voltex::install_malloc_conf!();

/// Live heap at the end of each day, and the peak during the run, in bytes above the
/// live heap before the world was built.
struct RunMemory {
    n_devices: usize,
    /// Live allocations per size class at the end of the last day, above the start.
    last_day_classes: Vec<isize>,
    /// The same at the run's peak (see [`AT_PEAK_BY_CLASS`]).
    peak_classes: Vec<isize>,
    daily_live: Vec<usize>,
    /// Peak live heap during each day (day 1's includes building the world).
    daily_peak: Vec<usize>,
    peak: usize,
    /// Bytes in allocations above [`LARGE_ABOVE_BYTES`] at the end of the last day,
    /// above the start.
    last_day_large: isize,
    /// Resident set at the end of each day above its value before the run (`None` if
    /// `/proc` cannot be read).
    daily_rss: Vec<Option<u64>>,
}

fn measure(
    scenario: &Scenario,
    series: &PriceSeries,
) -> Result<RunMemory, Box<dyn std::error::Error>> {
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    let classes = || -> Vec<isize> {
        LIVE_BY_CLASS
            .iter()
            .map(|c| c.load(Ordering::Relaxed) as isize)
            .collect()
    };
    let base_classes = classes();
    let base_large = LIVE_LARGE_BYTES.load(Ordering::Relaxed) as isize;
    let mut last_day_large = 0;
    let mut last_day_classes = Vec::new();
    PEAK_BYTES.store(base, Ordering::Relaxed);
    SNAPSHOT_LIVE_BYTES.store(base, Ordering::Relaxed);
    let rss_before = rss_bytes();
    let mut daily_live = Vec::new();
    let mut daily_peak = Vec::new();
    let mut peak = base;
    let mut daily_rss = Vec::new();
    let mut on_day = |_: Progress| {
        let live = LIVE_BYTES.load(Ordering::Relaxed);
        daily_live.push(live.saturating_sub(base));
        // The day's peak; the next day's starts from what is live now.
        let day_peak = PEAK_BYTES.swap(live, Ordering::Relaxed);
        peak = peak.max(day_peak);
        daily_peak.push(day_peak.saturating_sub(base));
        last_day_classes = classes()
            .iter()
            .zip(&base_classes)
            .map(|(now, before)| now - before)
            .collect();
        last_day_large = LIVE_LARGE_BYTES.load(Ordering::Relaxed) as isize - base_large;
        daily_rss.push(
            rss_before
                .zip(rss_bytes())
                .map(|(b, l)| l.saturating_sub(b)),
        );
    };
    let (world, _) = simulate(scenario, series, &mut on_day)?;
    let n_devices = world.n_devices();
    drop(world);
    let peak_classes = AT_PEAK_BY_CLASS
        .iter()
        .zip(&base_classes)
        .map(|(at_peak, before)| at_peak.load(Ordering::Relaxed) as isize - before)
        .collect();
    // No more snapshots until the next run sets its base.
    SNAPSHOT_LIVE_BYTES.store(usize::MAX, Ordering::Relaxed);
    Ok(RunMemory {
        n_devices,
        last_day_classes,
        peak_classes,
        daily_live,
        daily_peak,
        peak: peak
            .max(PEAK_BYTES.load(Ordering::Relaxed))
            .saturating_sub(base),
        last_day_large,
        daily_rss,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    return_freed_pages_at_once()?;
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: memory_per_battery SCENARIO.toml [DAYS]")?;
    let text = std::fs::read_to_string(&path)?;
    let mut scenario = Scenario::parse(&path, &text)?;
    if let Some(days) = args.next() {
        *scenario.market.days.get_mut() = days.parse()?;
    }
    let rss_child_scale: Option<u32> = match (args.next().as_deref(), args.next()) {
        (Some("--rss-child"), Some(scale)) => Some(scale.parse()?),
        (None, None) => None,
        _ => return Err("usage: memory_per_battery SCENARIO.toml [DAYS]".into()),
    };
    let data = std::path::Path::new(&path)
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(&scenario.market.data);
    let csv = std::fs::read_to_string(&data)?;
    let series =
        PriceSeries::parse_csv(&data.display().to_string(), &csv, &SeriesLayout::default())?;

    let scaled = |scale: u32| {
        let mut scaled = scenario.clone();
        for group in &mut scaled.fleet {
            group.get_mut().count *= scale;
        }
        scaled
    };
    if let Some(scale) = rss_child_scale {
        // One run in this fresh process; the parent reads these lines.
        let run = measure(&scaled(scale), &series)?;
        println!("devices {}", run.n_devices);
        for rss in &run.daily_rss {
            println!("rss {}", rss.ok_or("/proc/self/status unreadable")?);
        }
        return Ok(());
    }

    let single = measure(&scenario, &series)?;
    let doubled = measure(&scaled(2), &series)?;

    let n = single.n_devices;
    println!(
        "inline sizes: AgentCore {} B (CoreConfig {} B, Executor {} B), VirtualAgent {} B, \
         ScheduleRecord {} B, SignedSchedule {} B, OutboxEntry {} B, ReceiptWindow {} B, \
         sim Event {} B",
        size_of::<voltex_agent::core::AgentCore>(),
        size_of::<voltex_agent::core::CoreConfig>(),
        size_of::<voltex_agent::executor::Executor>(),
        size_of::<voltex_sim::agent::VirtualAgent>(),
        size_of::<voltex_agent::store::ScheduleRecord>(),
        size_of::<voltex_dispatch::SignedSchedule>(),
        size_of::<voltex_agent::outbox::OutboxEntry>(),
        size_of::<voltex_dispatch::receipt::ReceiptWindow>(),
        size_of::<voltex_sim::world::Event>(),
    );
    // What the options `voltex` starts jemalloc with did (`voltex::allocator`).
    let slab = |block_bytes: usize| match slab_bytes(block_bytes) {
        Ok(Some(bytes)) => format!("{bytes} B"),
        Ok(None) => "none".to_string(),
        Err(error) => error.to_string(),
    };
    println!(
        "jemalloc slab of the size class holding a 160-B block: {}, a 192-B block: {}",
        slab(160),
        slab(192)
    );
    println!(
        "{path}: {n} and {} batteries, {} days",
        doubled.n_devices,
        single.daily_live.len()
    );
    println!(
        "day  live heap N (B/battery)  live heap 2N (B/battery)  marginal (B/battery)  \
         day's peak, marginal (B/battery)"
    );
    let per_battery_marginal =
        |a: usize, b: usize| (b as f64 - a as f64) / (doubled.n_devices - n) as f64;
    for (day, ((a, b), (peak_a, peak_b))) in single
        .daily_live
        .iter()
        .zip(&doubled.daily_live)
        .zip(single.daily_peak.iter().zip(&doubled.daily_peak))
        .enumerate()
    {
        println!(
            "{:>3}  {:>22.0}  {:>24.0}  {:>20.0}  {:>31.0}",
            day + 1,
            *a as f64 / n as f64,
            *b as f64 / doubled.n_devices as f64,
            per_battery_marginal(*a, *b),
            per_battery_marginal(*peak_a, *peak_b),
        );
    }
    println!(
        "peak live heap: {:.0} B/battery (N), {:.0} B/battery (2N), marginal {:.0} B/battery",
        single.peak as f64 / n as f64,
        doubled.peak as f64 / doubled.n_devices as f64,
        (doubled.peak as f64 - single.peak as f64) / (doubled.n_devices - n) as f64
    );
    let by_class = |what: &str, single: &[isize], doubled_classes: &[isize]| {
        println!("live allocations per battery {what}, by requested size:");
        let mut marginal: Vec<(usize, f64)> = single
            .iter()
            .zip(doubled_classes)
            .enumerate()
            .map(|(class, (a, b))| (class, (*b - *a) as f64 / (doubled.n_devices - n) as f64))
            .filter(|(_, per_battery)| per_battery.abs() >= 0.05)
            .collect();
        marginal.sort_by(|x, y| (y.1 * y.0 as f64).total_cmp(&(x.1 * x.0 as f64)));
        for (class, per_battery) in marginal.iter().take(12) {
            let upper = class * 8;
            println!(
                "  {:>4}-{:<4} B: {per_battery:>5.2} allocations (about {:.0} B)",
                upper.saturating_sub(7),
                upper,
                per_battery * upper as f64
            );
        }
    };
    by_class(
        "at the end of the last day",
        &single.last_day_classes,
        &doubled.last_day_classes,
    );
    println!(
        "  above {LARGE_ABOVE_BYTES} B (buffers): {:.0} B",
        (doubled.last_day_large - single.last_day_large) as f64 / (doubled.n_devices - n) as f64
    );
    by_class(
        "near the run's peak",
        &single.peak_classes,
        &doubled.peak_classes,
    );
    let days = scenario.market.days.get_ref().to_string();
    let (n_single, rss_single) = rss_in_child(&path, &days, 1)?;
    let (n_doubled, rss_doubled) = rss_in_child(&path, &days, 2)?;
    println!(
        "resident set at the end of each day above the start of the run, each run in its \
         own process (allocator slack included):"
    );
    println!("day  N (B/battery)  2N (B/battery)  marginal (B/battery)");
    for (day, (a, b)) in rss_single.iter().zip(&rss_doubled).enumerate() {
        println!(
            "{:>3}  {:>13.0}  {:>14.0}  {:>20.0}",
            day + 1,
            *a as f64 / n_single as f64,
            *b as f64 / n_doubled as f64,
            (*b as f64 - *a as f64) / (n_doubled - n_single) as f64,
        );
    }
    Ok(())
}

/// Runs this program again as `--rss-child SCALE` and reads back its device count and
/// resident set growth at the end of each day.
fn rss_in_child(
    path: &str,
    days: &str,
    scale: u32,
) -> Result<(usize, Vec<u64>), Box<dyn std::error::Error>> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([path, days, "--rss-child", &scale.to_string()])
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "the child run at scale {scale} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let mut n_devices = None;
    let mut daily = Vec::new();
    for line in String::from_utf8(output.stdout)?.lines() {
        match line.split_once(' ') {
            Some(("devices", n)) => n_devices = Some(n.parse()?),
            Some(("rss", bytes)) => daily.push(bytes.parse()?),
            _ => return Err(format!("unexpected line from the child run: {line:?}").into()),
        }
    }
    Ok((
        n_devices.ok_or("the child run printed no device count")?,
        daily,
    ))
}
