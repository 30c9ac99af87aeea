//! Print every screen of a generated fleet as text, at a given size: a quick look without a
//! terminal. `cargo run -p stoker-tui --example screens -- 80 24`.
#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use stoker_tui::app::App;
use stoker_tui::client::{Need, Update};
use stoker_tui::fake::FakeFleet;
use stoker_tui::view;

fn main() {
    let args: Vec<u16> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (w, h) = (args.first().copied().unwrap_or(80), args.get(1).copied().unwrap_or(24));
    let now = 1_700_000_000 * stoker_tui::model::NANOS_PER_SEC;
    let fleet = FakeFleet::new(20, 8);
    let mut app = App::new("http://127.0.0.1:7700");
    for key in ['1', '\n', '3', '4', '5'] {
        let code = if key == '\n' { KeyCode::Enter } else { KeyCode::Char(key) };
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
        let need: Need = app.need();
        let snapshot = fleet.answer(&need, now).unwrap();
        app.apply(Update::Data { at: now, snapshot });
        println!("=== {:?} {w}x{h}", app.tab);
        print!("{}", view::buffer_text(&view::render_buffer(&app, now, w, h)));
    }
}
