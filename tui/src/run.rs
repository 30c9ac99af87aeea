//! The terminal loop: wires a [`Source`] to the app and the screen.
//!
//! Three actors: the fetch task (network), an input thread (blocking terminal reads) and this
//! loop, which owns the [`App`] and draws. The loop waits only on its own channels and a 4 Hz
//! tick, so a slow collector shows up as an ageing "data from N s ago", never a frozen screen.
//! The terminal is put back by `ratatui::restore` on exit and by ratatui's panic hook on panic.

use std::time::Duration;

use crossterm::event::Event;
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::TuiError;
use crate::app::{App, Effect};
use crate::client::{Clock, FetchConfig, Source, Update, fetch_loop};
use crate::view;

/// Redraw period when nothing happens: ages and clocks on screen tick at 4 fps.
pub const FRAME_PERIOD: Duration = Duration::from_millis(250);

/// Capacity of the update channel; the fetch loop waits when it is full.
const UPDATE_QUEUE: usize = 8;

/// Capacity of the key channel; keys beyond it are dropped by the input thread and counted.
const KEY_QUEUE: usize = 64;

/// Run the dashboard in the real terminal until `q`.
pub async fn dashboard<S: Source>(
    source: S,
    collector: String,
    clock: Clock,
    cfg: FetchConfig,
) -> Result<(), TuiError> {
    // Installs the panic hook that restores the terminal before the panic message prints.
    let mut terminal = ratatui::try_init().map_err(|e| TuiError::Terminal(e.to_string()))?;
    let (key_tx, key_rx) = mpsc::channel(KEY_QUEUE);
    let input = std::thread::Builder::new()
        .name("stoker-tui-input".to_owned())
        .spawn(move || read_input(&key_tx))
        .map_err(|e| TuiError::Terminal(e.to_string()))?;
    let result = event_loop(&mut terminal, App::new(collector), source, key_rx, clock, cfg).await;
    ratatui::restore();
    // The thread notices the closed channel within one poll period and ends.
    let _ = input.join();
    result
}

/// Forward terminal events until the loop stops listening.
fn read_input(keys: &mpsc::Sender<Event>) {
    let mut dropped: u64 = 0;
    while !keys.is_closed() {
        match crossterm::event::poll(Duration::from_millis(100)) {
            Ok(true) => match crossterm::event::read() {
                Ok(ev) => {
                    if keys.try_send(ev).is_err() {
                        dropped += 1;
                        warn!(dropped, "Key queue full; dropped a terminal event.");
                    }
                }
                Err(e) => {
                    warn!(error = %e, "Reading the terminal failed; input stops.");
                    return;
                }
            },
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "Polling the terminal failed; input stops.");
                return;
            }
        }
    }
}

/// The dashboard loop over any backend: draw, then wait for a tick, an update or an event.
/// Returns when a key asks to quit or the event channel closes. Tests run it on `TestBackend`.
pub async fn event_loop<B: Backend, S: Source>(
    terminal: &mut Terminal<B>,
    mut app: App,
    source: S,
    mut events: mpsc::Receiver<Event>,
    clock: Clock,
    cfg: FetchConfig,
) -> Result<(), TuiError> {
    let (need_tx, need_rx) = watch::channel(app.need());
    let (update_tx, mut updates) = mpsc::channel::<Update>(UPDATE_QUEUE);
    let cancel = CancellationToken::new();
    let fetch = tokio::spawn(fetch_loop(source, need_rx, update_tx, clock, cfg, cancel.clone()));
    let mut tick = tokio::time::interval(FRAME_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        if let Err(e) = terminal.draw(|f| view::render(f, &app, clock.now())) {
            break Err(TuiError::Terminal(e.to_string()));
        }
        tokio::select! {
            _ = tick.tick() => {}
            Some(update) = updates.recv() => {
                app.apply(update);
                while let Ok(more) = updates.try_recv() {
                    app.apply(more);
                }
            }
            event = events.recv() => match event {
                Some(Event::Key(key)) => match app.handle_key(key) {
                    Effect::Quit => break Ok(()),
                    Effect::Need(need) => {
                        need_tx.send_replace(need);
                    }
                    Effect::None => {}
                },
                Some(_) => {}
                None => break Ok(()),
            },
        }
    };
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), fetch).await;
    result
}
