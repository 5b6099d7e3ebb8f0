//! # voltex-market: the shared vocabulary and the pure market mechanisms
//!
//! Everything in Voltex speaks in these types: [`Price`] (integer ticks of
//! 0.01 EUR/MWh), [`Qty`] (integer lots), [`Side`], ids, [`UtcNanos`] and aligned
//! [`DeliveryPeriod`]s, and per-market [`MarketRules`] that turn boundary decimals into
//! internal units without ever rounding.
//!
//! On top of the vocabulary sit the market mechanisms:
//! - [`book::OrderBook`]: the continuous order book of one product, with price-time
//!   priority, IOC/FOK/post-only/iceberg orders, modify and cancel, self-trade
//!   prevention, halts and gate closure. [`book::reference::ReferenceBook`] is a plain
//!   `BTreeMap` implementation of the same rules, used as the differential oracle and
//!   the benchmark baseline.
//! - [`auction::Auction`]: the day-ahead uniform-price call auction over stepwise and
//!   piecewise-linear [`auction::BidCurve`]s, one delivery period at a time;
//!   [`block::clear_day_with_families`] adds linked block orders across a day's periods
//!   (all-or-none [`block::BlockFamily`]s, accepted only at a surplus).
//! - [`series::PriceSeries`]: day-ahead price series with exogenous day-ahead forecasts,
//!   parsed from CSV text (whole days, no gaps, exact `Decimal` prices plus an `f64` view).
//!
//! **Architecture Invariant:** this crate does no I/O, reads no clock and draws no
//! randomness. Callers pass time in, so replaying the same commands gives the same
//! events, in live runs and in the simulator alike.
//!
//! ```
//! use voltex_market::book::{BookCommand, BookConfig, NewOrder, OrderBook};
//! use voltex_market::{AccountId, MarketRules, OrderId, Price, Qty, Side};
//!
//! let mut book = OrderBook::new(MarketRules::intraday_default(), BookConfig::default()).unwrap();
//! let mut events = Vec::new();
//! let ask = NewOrder::limit(OrderId(1), AccountId(1), Side::Sell, Price(5000), Qty(10));
//! book.apply(&BookCommand::Submit(ask), &mut events);
//! let bid = NewOrder::limit(OrderId(2), AccountId(2), Side::Buy, Price(5100), Qty(4));
//! book.apply(&BookCommand::Submit(bid), &mut events);
//! assert_eq!(book.bbo().ask, Some((Price(5000), Qty(6))));
//! ```
#![deny(missing_docs)]

pub mod auction;
pub mod battery;
pub mod block;
pub mod book;
pub mod rules;
pub mod series;
pub mod time;
pub mod units;

pub use rules::{MarketRules, RuleError};
pub use time::{DeliveryPeriod, PeriodLength, Product, TimeError, UtcNanos};
pub use units::{AccountId, OrderId, Price, ProductId, Qty, Side, TradeId, UnitError};
