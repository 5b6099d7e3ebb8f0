//! WebSocket stream `/api/v1/stream`: L2 depth increments, trades, phase changes and
//! (with a token) the caller's own order events, as JSON text frames.
//!
//! Browsers cannot set headers on a WebSocket, so the token travels as the `token`
//! query parameter. A client first fetches the REST depth snapshot and then applies
//! increments whose `event_seq` is larger than the snapshot's `as_of_event_seq`. A
//! client that falls behind the bounded broadcast gets a `lagged` message and must
//! resnapshot; it never slows the sequencer.
//!
//! `market=false` leaves out market data (fleet events only).
//!
//! Day-ahead auctions: every client gets `auction_cleared` (price and volume of a
//! product's auction when its gate passed); a token also gets `curve` messages for its
//! own accounts' bid curves (accepted, replaced, withdrawn, rejected) and
//! `auction_award` messages with its own accepted quantities (operators: all).
//!
//! Fleet events (`type: fleet`: a schedule version issued, received, accepted, started,
//! completed, rejected, superseded or failed; see `super::fleet_events`) go to operator
//! and quant tokens for every device and to a device token for its own device only;
//! traders and anonymous clients get none.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use voltex_engine::{EngineEvent, EventKind};
use voltex_market::book::{BookEvent, Phase};
use voltex_market::{MarketRules, Side};

use super::SharedState;
use super::fleet_events::FleetEvent;
use super::market::SideDto;
use crate::server::auth::{Claims, Role};
use crate::server::problem::ApiError;

/// Query of the stream endpoint.
#[derive(Clone, Debug, Deserialize)]
pub struct StreamQuery {
    /// Only this product (default: all).
    pub product: Option<u32>,
    /// `false`: no market data at all, only fleet events (the dashboard's Dispatch
    /// page). Default `true`.
    pub market: Option<bool>,
    /// Bearer token, for own order events.
    pub token: Option<String>,
}

/// One stream message.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamMessage {
    /// An L2 level changed.
    Depth {
        /// Event sequence number.
        event_seq: u64,
        /// Product.
        product: u32,
        /// Side of the level.
        side: SideDto,
        /// Level price, EUR/MWh.
        price_eur_per_mwh: String,
        /// Visible quantity now, MW (0: level gone).
        qty_mw: String,
        /// Orders at the level.
        n_orders: u32,
    },
    /// A trade.
    Trade {
        /// Event sequence number.
        event_seq: u64,
        /// Product.
        product: u32,
        /// Trade id within the product.
        trade_id: u64,
        /// Price, EUR/MWh.
        price_eur_per_mwh: String,
        /// Quantity, MW.
        qty_mw: String,
        /// The aggressor's side.
        aggressor_side: SideDto,
        /// Engine time, UTC ns.
        at_ns: i64,
    },
    /// A book's phase changed.
    Phase {
        /// Event sequence number.
        event_seq: u64,
        /// Product.
        product: u32,
        /// `open`, `halted` or `closed`.
        phase: String,
    },
    /// An event of one of the caller's orders.
    Order {
        /// Event sequence number.
        event_seq: u64,
        /// Product.
        product: u32,
        /// Order id.
        order_id: u64,
        /// `accepted`, `filled_part`, `cancelled`, `expired`, `restated`.
        event: String,
    },
    /// A product's day-ahead auction cleared.
    AuctionCleared {
        /// Event sequence number.
        event_seq: u64,
        /// Product.
        product: u32,
        /// Clearing price, EUR/MWh; absent when nothing traded.
        price_eur_per_mwh: Option<String>,
        /// Traded volume, MW.
        volume_mw: String,
    },
    /// One of the caller's accounts' accepted quantity in a cleared auction.
    AuctionAward {
        /// Event sequence number.
        event_seq: u64,
        /// Product.
        product: u32,
        /// Account.
        account: u32,
        /// Side.
        side: SideDto,
        /// Accepted quantity, MW.
        qty_mw: String,
    },
    /// A change of one of the caller's accounts' bid curves.
    Curve {
        /// Event sequence number.
        event_seq: u64,
        /// Product.
        product: u32,
        /// Account.
        account: u32,
        /// Side.
        side: SideDto,
        /// `accepted`, `replaced`, `withdrawn` or `rejected`.
        event: String,
    },
    /// A change of one of the caller's accounts' block families.
    Family {
        /// Event sequence number.
        event_seq: u64,
        /// Its first product (0 for a refused command that named none).
        product: u32,
        /// Account.
        account: u32,
        /// The account's name for the family.
        family: u32,
        /// `accepted`, `replaced`, `withdrawn` or `rejected` (commands), then at its
        /// gate `cleared_accepted` or `cleared_rejected`.
        event: String,
    },
    /// Delivery progress of one schedule version (operators and quants: every device;
    /// a device token: its own).
    Fleet {
        /// Device.
        device_id: String,
        /// Schedule id (128-bit, decimal string).
        schedule_id: String,
        /// Version.
        version: u64,
        /// `issued`, `received`, `accepted`, `started`, `completed`, `rejected`,
        /// `superseded`, `failed`.
        status: String,
        /// Whether an agent ack caused it.
        by_agent: bool,
        /// When, UTC ns.
        at_ns: i64,
        /// When, RFC 3339 UTC.
        at: String,
    },
    /// The client fell behind and missed messages: resnapshot.
    Lagged {
        /// Messages skipped.
        missed: u64,
    },
}

/// The fleet event as `claims` may see it: operators and quants see every device, a
/// device only itself, everyone else nothing.
pub fn fleet_message(event: &FleetEvent, claims: Option<&Claims>) -> Option<StreamMessage> {
    let claims = claims?;
    let allowed = match claims.role {
        Role::Operator | Role::Quant => true,
        Role::Device => claims.sub == event.device_id,
        Role::Trader => false,
    };
    allowed.then(|| StreamMessage::Fleet {
        device_id: event.device_id.clone(),
        schedule_id: event.schedule_id.clone(),
        version: event.version,
        status: event.status.clone(),
        by_agent: event.by_agent,
        at_ns: event.at_ns,
        at: event.at.clone(),
    })
}

fn side(side: Side) -> SideDto {
    side.into()
}

/// Turns one engine event into what `claims` may see (market data for everyone).
fn messages(
    event: &EngineEvent,
    rules: &MarketRules,
    claims: Option<&Claims>,
    out: &mut Vec<StreamMessage>,
) {
    let product = event.product.0;
    let event_seq = event.event_seq;
    let owns = |account: u32| {
        claims.is_some_and(|claims| {
            claims.role == Role::Operator || claims.accounts.contains(&account)
        })
    };
    // Awards and volumes in the intraday lots (config validation keeps the day-ahead
    // lot equal to it).
    let day_ahead = rules;
    let curve =
        |account: voltex_market::AccountId, curve_side: Side, name: &str| StreamMessage::Curve {
            event_seq,
            product,
            account: account.0,
            side: side(curve_side),
            event: name.into(),
        };
    let family_message = |account: voltex_market::AccountId,
                          family: voltex_engine::family::FamilyRef,
                          name: &str| StreamMessage::Family {
        event_seq,
        product,
        account: account.0,
        family: family.0,
        event: name.into(),
    };
    let book_event = match event.kind {
        EventKind::Book(book_event) => book_event,
        EventKind::AuctionCleared { price, volume, .. } => {
            out.push(StreamMessage::AuctionCleared {
                event_seq,
                product,
                price_eur_per_mwh: price.map(|price| price.to_decimal().to_string()),
                volume_mw: day_ahead.qty_to_mw(volume).normalize().to_string(),
            });
            return;
        }
        EventKind::AuctionAward {
            account,
            side: award_side,
            qty,
        } if owns(account.0) => {
            out.push(StreamMessage::AuctionAward {
                event_seq,
                product,
                account: account.0,
                side: side(award_side),
                qty_mw: day_ahead.qty_to_mw(qty).normalize().to_string(),
            });
            return;
        }
        EventKind::CurveAccepted {
            account,
            side: curve_side,
            replaced,
            ..
        } if owns(account.0) => {
            let name = if replaced { "replaced" } else { "accepted" };
            out.push(curve(account, curve_side, name));
            return;
        }
        EventKind::CurveWithdrawn {
            account,
            side: curve_side,
        } if owns(account.0) => {
            out.push(curve(account, curve_side, "withdrawn"));
            return;
        }
        EventKind::CurveRejected {
            account,
            side: curve_side,
            ..
        } if owns(account.0) => {
            out.push(curve(account, curve_side, "rejected"));
            return;
        }
        EventKind::FamilyAccepted {
            account,
            family,
            replaced,
            ..
        } if owns(account.0) => {
            let name = if replaced { "replaced" } else { "accepted" };
            out.push(family_message(account, family, name));
            return;
        }
        EventKind::FamilyWithdrawn { account, family } if owns(account.0) => {
            out.push(family_message(account, family, "withdrawn"));
            return;
        }
        EventKind::FamilyRejected {
            account, family, ..
        } if owns(account.0) => {
            out.push(family_message(account, family, "rejected"));
            return;
        }
        EventKind::FamilyCleared {
            account,
            family,
            accepted,
            ..
        } if owns(account.0) => {
            let name = if accepted {
                "cleared_accepted"
            } else {
                "cleared_rejected"
            };
            out.push(family_message(account, family, name));
            return;
        }
        _ => return,
    };
    match book_event {
        BookEvent::Depth {
            side: level_side,
            price,
            visible,
            n_orders,
        } => out.push(StreamMessage::Depth {
            event_seq,
            product,
            side: side(level_side),
            price_eur_per_mwh: price.to_decimal().to_string(),
            qty_mw: rules.qty_to_mw(visible).normalize().to_string(),
            n_orders,
        }),
        BookEvent::Trade {
            trade_id,
            aggressor,
            aggressor_account,
            aggressor_side,
            resting,
            resting_account,
            price,
            qty,
        } => {
            out.push(StreamMessage::Trade {
                event_seq,
                product,
                trade_id: trade_id.0,
                price_eur_per_mwh: price.to_decimal().to_string(),
                qty_mw: rules.qty_to_mw(qty).normalize().to_string(),
                aggressor_side: side(aggressor_side),
                at_ns: event.now.nanos(),
            });
            for (order, account) in [(aggressor, aggressor_account), (resting, resting_account)] {
                if owns(account.0) {
                    out.push(StreamMessage::Order {
                        event_seq,
                        product,
                        order_id: order.0,
                        event: "filled_part".into(),
                    });
                }
            }
        }
        BookEvent::PhaseChanged { phase } => out.push(StreamMessage::Phase {
            event_seq,
            product,
            phase: match phase {
                Phase::Open => "open",
                Phase::Halted => "halted",
                Phase::Closed => "closed",
            }
            .into(),
        }),
        BookEvent::Accepted { id, account, .. } if owns(account.0) => {
            out.push(StreamMessage::Order {
                event_seq,
                product,
                order_id: id.0,
                event: "accepted".into(),
            })
        }
        // Cancel, expiry and restatement carry no account: operators see them all.
        BookEvent::Cancelled { id, .. }
        | BookEvent::Expired { id, .. }
        | BookEvent::Restated { id, .. }
            if claims.is_some_and(|claims| claims.role == Role::Operator) =>
        {
            let name = match book_event {
                BookEvent::Cancelled { .. } => "cancelled",
                BookEvent::Expired { .. } => "expired",
                _ => "restated",
            };
            out.push(StreamMessage::Order {
                event_seq,
                product,
                order_id: id.0,
                event: name.into(),
            });
        }
        _ => {}
    }
}

/// Upgrades to the stream.
pub async fn stream(
    State(state): State<SharedState>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let claims = match &query.token {
        Some(token) => Some(
            state
                .jwt
                .verify(token)
                .map_err(|error| ApiError::unauthenticated(error.to_string()))?,
        ),
        None => None,
    };
    let market = query.market.unwrap_or(true);
    Ok(upgrade.on_upgrade(move |socket| run(socket, state, market, query.product, claims)))
}

async fn run(
    mut socket: WebSocket,
    state: SharedState,
    market: bool,
    product: Option<u32>,
    claims: Option<Claims>,
) {
    let mut events = state.exchange.subscribe();
    let mut fleet = state.fleet_events.subscribe();
    // Roles that can see no fleet event do not listen at all.
    let mut fleet_open = claims
        .as_ref()
        .is_some_and(|claims| claims.role != Role::Trader);
    let rules = state.exchange.rules().clone();
    metrics::gauge!("voltex_ws_clients").increment(1.0);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            received = events.recv(), if market => {
                out.clear();
                match received {
                    Ok(event) => {
                        if product.is_none_or(|wanted| wanted == event.product.0) {
                            messages(&event, &rules, claims.as_ref(), &mut out);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => out.push(StreamMessage::Lagged { missed }),
                    Err(RecvError::Closed) => break,
                }
                if !send_all(&mut socket, &out).await {
                    break;
                }
            }
            received = fleet.recv(), if fleet_open => {
                out.clear();
                match received {
                    Ok(event) => out.extend(fleet_message(&event, claims.as_ref())),
                    Err(RecvError::Lagged(missed)) => out.push(StreamMessage::Lagged { missed }),
                    Err(RecvError::Closed) => fleet_open = false,
                }
                if !send_all(&mut socket, &out).await {
                    break;
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    metrics::gauge!("voltex_ws_clients").decrement(1.0);
}

/// Sends `messages` as text frames; `false` once the socket failed.
async fn send_all(socket: &mut WebSocket, messages: &[StreamMessage]) -> bool {
    for message in messages {
        let Ok(text) = serde_json::to_string(message) else {
            continue;
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use voltex_market::{AccountId, Price, ProductId, Qty, UtcNanos};

    fn event(kind: EventKind) -> EngineEvent {
        EngineEvent {
            event_seq: 9,
            command_seq: 4,
            now: UtcNanos(0),
            product: ProductId(3),
            kind,
        }
    }

    fn trader(accounts: Vec<u32>) -> Claims {
        Claims {
            sub: "alice".into(),
            role: Role::Trader,
            accounts,
            iat: 0,
            exp: 0,
        }
    }

    #[test]
    fn auction_results_go_to_everyone_and_awards_and_curves_to_their_owners() {
        let rules = MarketRules::intraday_default();
        let cleared = event(EventKind::AuctionCleared {
            price: Some(Price(4_000)),
            volume: Qty(15),
            n_curves: 2,
        });
        let award = event(EventKind::AuctionAward {
            account: AccountId(1),
            side: Side::Buy,
            qty: Qty(15),
        });
        let replaced = event(EventKind::CurveAccepted {
            account: AccountId(1),
            side: Side::Buy,
            kind: voltex_market::auction::CurveKind::Stepwise,
            n_points: 2,
            replaced: true,
        });
        let alice = trader(vec![1]);
        let bob = trader(vec![2]);
        let mut out = Vec::new();
        messages(&cleared, &rules, None, &mut out);
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"type": "auction_cleared", "event_seq": 9, "product": 3,
                "price_eur_per_mwh": "40.00", "volume_mw": "1.5"}])
        );
        for (claims, n_expected) in [(Some(&alice), 2), (Some(&bob), 0), (None, 0)] {
            out.clear();
            messages(&award, &rules, claims, &mut out);
            messages(&replaced, &rules, claims, &mut out);
            assert_eq!(out.len(), n_expected, "{claims:?}");
        }
        out.clear();
        messages(&replaced, &rules, Some(&alice), &mut out);
        assert_eq!(
            serde_json::to_value(&out).unwrap()[0]["event"],
            serde_json::json!("replaced")
        );
    }

    #[test]
    fn family_changes_go_to_their_owners_only() {
        use voltex_engine::family::{FamilyRef, FamilyReject};
        let rules = MarketRules::intraday_default();
        let (account, family) = (AccountId(1), FamilyRef(7));
        let events = [
            EventKind::FamilyAccepted {
                account,
                family,
                n_products: 2,
                n_blocks: 2,
                replaced: false,
            },
            EventKind::FamilyAccepted {
                account,
                family,
                n_products: 2,
                n_blocks: 2,
                replaced: true,
            },
            EventKind::FamilyRejected {
                account,
                family,
                reason: FamilyReject::GatesDiffer,
            },
            EventKind::FamilyWithdrawn { account, family },
            EventKind::FamilyCleared {
                account,
                family,
                accepted: true,
                surplus_ticks_x_lots: Some(20_000),
            },
            EventKind::FamilyCleared {
                account,
                family,
                accepted: false,
                surplus_ticks_x_lots: None,
            },
        ];
        let alice = trader(vec![1]);
        let bob = trader(vec![2]);
        let mut out = Vec::new();
        for kind in events {
            messages(&event(kind), &rules, Some(&alice), &mut out);
            messages(&event(kind), &rules, Some(&bob), &mut out);
            messages(&event(kind), &rules, None, &mut out);
        }
        let names: Vec<serde_json::Value> = serde_json::to_value(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|message| {
                assert_eq!(message["type"], "family", "{message}");
                assert_eq!(
                    (message["account"].as_u64(), message["family"].as_u64()),
                    (Some(1), Some(7))
                );
                message["event"].clone()
            })
            .collect();
        assert_eq!(
            names,
            serde_json::json!([
                "accepted",
                "replaced",
                "rejected",
                "withdrawn",
                "cleared_accepted",
                "cleared_rejected"
            ])
            .as_array()
            .unwrap()
            .clone(),
            "alice only, one message per event"
        );
    }
}
