//! The real dashboard loop on a `TestBackend`: it keeps drawing and answering keys while the
//! collector hangs, shows the outage, and quits on `q`.

use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use stoker_tui::app::App;
use stoker_tui::client::{Clock, FetchConfig};
use stoker_tui::fake::{FakeFleet, FakeSource};
use stoker_tui::run::event_loop;
use stoker_tui::view::buffer_text;
use tokio::sync::mpsc;

use crate::NOW;

fn key(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

#[tokio::test(start_paused = true)]
async fn rendering_never_waits_on_a_hung_collector() {
    let clock = Clock::starting_at(NOW);
    // The collector accepts the request and never answers.
    let source =
        FakeSource::new(FakeFleet::new(4, 2), clock).with_delay(Duration::from_secs(24 * 3600));
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let (keys, events) = mpsc::channel(8);
    let driver = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        keys.send(key('3')).await.unwrap();
        tokio::time::sleep(Duration::from_secs(7)).await;
        keys.send(key('?')).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        keys.send(key('?')).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        keys.send(key('q')).await.unwrap();
    };
    let app = App::new("http://127.0.0.1:7700");
    let (result, ()) = tokio::join!(
        event_loop(&mut terminal, app, source, events, clock, FetchConfig::default()),
        driver
    );
    result.unwrap();
    let screen = buffer_text(terminal.backend().buffer());
    let lines: Vec<&str> = screen.lines().collect();
    // The key moved the screen to Models at once, though no fetch ever completed.
    assert!(lines[0].contains("3:Models"), "{screen}");
    assert!(lines[1].starts_with(" DISCONNECTED 3s — no answer within 5s; retry in"), "{screen}");
    assert!(screen.contains("waiting for the collector…"), "{screen}");
}

#[tokio::test(start_paused = true)]
async fn data_arrives_and_the_loop_quits_on_q() {
    let clock = Clock::starting_at(NOW);
    let source = FakeSource::new(FakeFleet::new(4, 2), clock);
    let log = source.log();
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let (keys, events) = mpsc::channel(8);
    let driver = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        keys.send(Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        keys.send(key('q')).await.unwrap();
    };
    let (result, ()) = tokio::join!(
        event_loop(
            &mut terminal,
            App::new("http://127.0.0.1:7700"),
            source,
            events,
            clock,
            FetchConfig::default()
        ),
        driver
    );
    result.unwrap();
    let screen = buffer_text(terminal.backend().buffer());
    assert!(screen.contains(" gpu-node-001 seen"), "{screen}");
    assert!(screen.contains("─ Processes (4)"), "{screen}");
    let log = log.lock().unwrap();
    let kinds: Vec<String> = log
        .needs
        .iter()
        .map(|n| format!("{n:?}").split([' ', '{']).next().unwrap_or_default().to_owned())
        .collect();
    // Fleet once a second for 2.5 s, then only the node.
    assert_eq!(kinds, ["Fleet", "Fleet", "Fleet", "Node"], "{:?}", log.needs);
}
