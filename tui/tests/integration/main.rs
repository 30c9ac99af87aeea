//! Integration tests of stoker-tui, one binary with a module per area.
#![allow(clippy::unwrap_used)]

mod anomalies;
mod cli;
mod cluster;
mod demo_e2e;
mod event_loop;
mod live;
mod otlp_fleet;
mod render;
mod screens_data;

use stoker_tui::app::App;
use stoker_tui::client::Update;
use stoker_tui::fake::FakeFleet;
use stoker_tui::model::{NANOS_PER_SEC, UnixNanos};

/// The fixed "now" every rendering test uses: 2023-11-14 22:13:20 UTC.
pub const NOW: UnixNanos = 1_700_000_000 * NANOS_PER_SEC;

/// Answer what the app's current screen needs from `fleet`, as the fetch loop would.
pub fn feed(app: &mut App, fleet: &FakeFleet, at: UnixNanos) {
    let snapshot = fleet.answer(&app.need(), at).unwrap();
    app.apply(Update::Data { at, snapshot });
}
