//! Criterion benchmarks of the order book: the exchange-core mix through the fast
//! book and the BTreeMap reference book, per operation, on the same seeded workload.
//! `voltex bench book` prints the full percentile table; this is the criterion view.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use voltex::workload::{WorkloadKind, generate};
use voltex_market::MarketRules;
use voltex_market::book::reference::ReferenceBook;
use voltex_market::book::{BookCommand, BookEvent, OrderBook};

const N_OPS: usize = 100_000;

fn replay<F: FnMut(&BookCommand, &mut Vec<BookEvent>)>(
    commands: &[BookCommand],
    mut apply: F,
) -> usize {
    let mut events = Vec::with_capacity(1_024);
    let mut n_events = 0;
    for command in commands {
        apply(command, &mut events);
        n_events += events.len();
        events.clear();
    }
    n_events
}

fn book_mix(c: &mut Criterion) {
    let kind = WorkloadKind::ExchangeCore;
    let workload = generate(kind, N_OPS, 7);
    let measured: Vec<BookCommand> = workload.commands.iter().map(|(_, c)| *c).collect();
    let rules = MarketRules::intraday_default();
    let mut group = c.benchmark_group("book/exchange-core-mix");
    group.throughput(Throughput::Elements(N_OPS as u64));
    group.sample_size(10);
    group.bench_function("fast", |b| {
        b.iter_batched(
            || {
                let mut book =
                    OrderBook::new(rules.clone(), kind.book_config()).expect("valid rules");
                replay(&workload.warmup, |c, e| book.apply(c, e));
                book
            },
            |mut book| black_box(replay(&measured, |c, e| book.apply(c, e))),
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("reference", |b| {
        b.iter_batched(
            || {
                let mut book = ReferenceBook::new(rules.clone(), kind.book_config());
                replay(&workload.warmup, |c, e| book.apply(c, e));
                book
            },
            |mut book| black_box(replay(&measured, |c, e| book.apply(c, e))),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, book_mix);
criterion_main!(benches);
