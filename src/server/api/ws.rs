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
    let EventKind::Book(book_event) = event.kind else {
        return;
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
