//! Every screen rendered from fixed state into a `TestBackend`, at 80×24 and 160×48, compared
//! with the text snapshots in `tui/tests/snapshots/` (regenerate after an intended change with
//! `STOKER_UPDATE_SNAPSHOTS=1 cargo test -p stoker-tui render` and review the diff), plus
//! assertions on colours and modifiers that text snapshots cannot see.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier};
use stoker_tui::app::App;
use stoker_tui::client::Update;
use stoker_tui::fake::FakeFleet;
use stoker_tui::model::NANOS_PER_SEC;
use stoker_tui::view::{buffer_text, render_buffer};

use crate::{NOW, feed};

/// The sizes every screen is drawn at.
pub const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

/// Compare `text` with the snapshot `name` (or write it, with `STOKER_UPDATE_SNAPSHOTS`).
pub fn check(name: &str, text: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let path = dir.join(format!("{name}.txt"));
    if std::env::var_os("STOKER_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("no snapshot {}; run with STOKER_UPDATE_SNAPSHOTS=1 and review it", path.display())
    });
    if want != text {
        let new = path.with_extension("txt.new");
        std::fs::write(&new, text).unwrap();
        let line = want.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{name} differs from its snapshot at line {}:\n  want: {}\n  got:  {}\nfull output in {}",
            line + 1,
            want.lines().nth(line).unwrap_or(""),
            text.lines().nth(line).unwrap_or(""),
            new.display()
        );
    }
}

fn press(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        press(app, KeyCode::Char(c));
    }
}

/// A 40-node × 8-GPU fleet on the Fleet screen with the cursor on the fourth node.
fn fleet_app() -> (App, FakeFleet) {
    let fleet = FakeFleet::new(40, 8);
    let mut app = App::new("http://127.0.0.1:7700");
    feed(&mut app, &fleet, NOW);
    keys(&mut app, "jjj");
    (app, fleet)
}

fn snap_all_sizes(name: &str, app: &App) {
    for (w, h) in SIZES {
        check(&format!("{name}_{w}x{h}"), &buffer_text(&render_buffer(app, NOW, w, h)));
    }
}

#[test]
fn fleet() {
    let (app, _) = fleet_app();
    snap_all_sizes("fleet", &app);
}

#[test]
fn fleet_sorted_and_filtered() {
    let (mut app, _) = fleet_app();
    keys(&mut app, "ss/node-0");
    check("fleet_filter_80x24", &buffer_text(&render_buffer(&app, NOW, 80, 24)));
}

#[test]
fn node_detail_with_a_lost_gpu() {
    let (mut app, fleet) = fleet_app();
    keys(&mut app, "jjjj");
    press(&mut app, KeyCode::Enter);
    feed(&mut app, &fleet, NOW);
    snap_all_sizes("node", &app);
    let text = buffer_text(&render_buffer(&app, NOW, 80, 24));
    assert!(text.contains(" gpu-node-008 seen"), "{text}");
    assert!(text.contains(" 7 LOST"), "{text}");
}

#[test]
fn models() {
    let (mut app, fleet) = fleet_app();
    keys(&mut app, "3");
    feed(&mut app, &fleet, NOW);
    keys(&mut app, "jj");
    snap_all_sizes("models", &app);
}

#[test]
fn policies() {
    let (mut app, fleet) = fleet_app();
    keys(&mut app, "4");
    feed(&mut app, &fleet, NOW);
    keys(&mut app, "j");
    snap_all_sizes("policies", &app);
    let text = buffer_text(&render_buffer(&app, NOW, 160, 48));
    for state in ["FIRING", "pending 42s", "cooling 20h00m", "dry-run", "ok"] {
        assert!(text.contains(state), "{state} missing:\n{text}");
    }
}

#[test]
fn decisions_and_one_explained() {
    let (mut app, fleet) = fleet_app();
    keys(&mut app, "5");
    feed(&mut app, &fleet, NOW);
    keys(&mut app, "jj");
    snap_all_sizes("decisions", &app);
    press(&mut app, KeyCode::Enter);
    check("decision_expanded_80x24", &buffer_text(&render_buffer(&app, NOW, 80, 24)));
}

#[test]
fn help_overlay() {
    let (mut app, _) = fleet_app();
    keys(&mut app, "?");
    check("help_80x24", &buffer_text(&render_buffer(&app, NOW, 80, 24)));
}

#[test]
fn disconnected_banner_is_red_and_says_what_is_shown() {
    let (mut app, _) = fleet_app();
    let s = NANOS_PER_SEC;
    app.apply(Update::Disconnected {
        at: NOW + 2 * s,
        error: "collector unreachable: connection refused".into(),
        retry_at: NOW + 6 * s,
    });
    let buf = render_buffer(&app, NOW + 4 * s, 80, 24);
    check("disconnected_80x24", &buffer_text(&buf));
    let line: String = (0..80).map(|x| buf[(x, 1)].symbol().to_owned()).collect();
    assert!(
        line.starts_with(
            " DISCONNECTED 2s — collector unreachable: connection refused; retry in 2s"
        ),
        "{line}"
    );
    assert_eq!(buf[(1, 1)].bg, Color::Red);
}

#[test]
fn stale_data_is_marked_even_when_connected() {
    let (app, _) = fleet_app();
    let fresh = buffer_text(&render_buffer(&app, NOW + 2 * NANOS_PER_SEC, 80, 24));
    assert!(!fresh.contains("STALE"), "{fresh}");
    let buf = render_buffer(&app, NOW + 10 * NANOS_PER_SEC, 80, 24);
    let text = buffer_text(&buf);
    assert!(
        text.lines().nth(1).unwrap().starts_with(" STALE: showing data from 10s ago"),
        "{text}"
    );
    assert_eq!(buf[(1, 1)].bg, Color::Yellow);
}

#[test]
fn selected_row_is_reversed_and_follows_the_cursor_off_screen() {
    let fleet = FakeFleet::new(500, 8);
    let mut app = App::new("http://127.0.0.1:7700");
    feed(&mut app, &fleet, NOW);
    keys(&mut app, "jjj");
    let buf = render_buffer(&app, NOW, 80, 24);
    // Row 0 tabs, 1 summary, 2 header, 3.. nodes: the fourth node is on row 6.
    assert!(buf[(0, 6)].modifier.contains(Modifier::REVERSED));
    assert!(!buf[(0, 5)].modifier.contains(Modifier::REVERSED));
    keys(&mut app, "G");
    let text = buffer_text(&render_buffer(&app, NOW, 80, 24));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[22].starts_with("gpu-node-500"), "{text}");
    assert!(lines[3].starts_with("gpu-node-481"), "{text}");
}

#[test]
fn tiny_and_odd_terminal_sizes_never_panic() {
    let (mut app, fleet) = fleet_app();
    let mut states = Vec::new();
    for tab in ['1', '2', '3', '4', '5'] {
        keys(&mut app, &tab.to_string());
        feed(&mut app, &fleet, NOW);
        states.push(tab);
        for (w, h) in [(1, 1), (10, 3), (20, 5), (40, 10), (79, 23), (300, 100)] {
            render_buffer(&app, NOW, w, h);
            keys(&mut app, "?");
            render_buffer(&app, NOW, w, h);
            keys(&mut app, "?");
        }
    }
    assert_eq!(states.len(), 5);
}

#[test]
fn a_node_that_left_the_fleet_says_so() {
    let (mut app, _) = fleet_app();
    press(&mut app, KeyCode::Enter);
    let loading = buffer_text(&render_buffer(&app, NOW, 100, 24));
    assert!(loading.contains("loading gpu-node-004…"), "{loading}");
    app.apply(Update::NotFound { at: NOW, what: "node gpu-node-004".into() });
    let text = buffer_text(&render_buffer(&app, NOW, 100, 24));
    assert!(text.contains("node gpu-node-004 is not known to the collector"), "{text}");
    assert!(!text.contains("DISCONNECTED"), "{text}");
}

#[test]
fn anomalous_node_is_marked_on_the_fleet_and_explained_on_its_screen() {
    let (mut app, fleet) = fleet_app();
    let text = buffer_text(&render_buffer(&app, NOW, 160, 48));
    // Nodes 6, 23 and 40 of the fake fleet are anomalous; the others are not.
    assert!(text.contains("anomalous 3"), "{text}");
    let row = |name: &str| text.lines().find(|l| l.contains(name)).unwrap().to_owned();
    assert!(row("gpu-node-006").starts_with("◆gpu-node-006"), "{text}");
    assert!(row("gpu-node-006").contains("anomaly 2"), "{text}");
    assert!(!row("gpu-node-007").contains('◆') && row("gpu-node-007").contains(" ok"), "{text}");
    keys(&mut app, "jj");
    press(&mut app, KeyCode::Enter);
    feed(&mut app, &fleet, NOW);
    snap_all_sizes("node_anomalies", &app);
    let text = buffer_text(&render_buffer(&app, NOW, 160, 48));
    assert!(text.contains("Anomalies (2)"), "{text}");
    assert!(
        text.contains("gpu-node-006  vs peers  latency_at_gpu_load 0.094 (expected 0.041)  score 4.2  since 2m05s ago"),
        "{text}"
    );
    // Why, on its own line, whole even at 80 columns.
    for (w, h) in SIZES {
        let text = buffer_text(&render_buffer(&app, NOW, w, h));
        assert!(
            text.contains("   p95 latency 94 ms at 60 % GPU load; peers at that load see 41 ms"),
            "{text}"
        );
    }
    assert!(text.contains("gpu-node-006/resnet50  vs history"), "{text}");
    // A node without anomalies has no such section.
    keys(&mut app, "1j");
    press(&mut app, KeyCode::Enter);
    feed(&mut app, &fleet, NOW);
    let text = buffer_text(&render_buffer(&app, NOW, 160, 48));
    assert!(text.contains(" gpu-node-007 seen"), "{text}");
    assert!(!text.contains("Anomalies"), "{text}");
}

#[test]
fn policies_show_forecast_mape_against_naive() {
    let (mut app, fleet) = fleet_app();
    keys(&mut app, "4");
    feed(&mut app, &fleet, NOW);
    let buf = render_buffer(&app, NOW, 160, 48);
    let text = buffer_text(&buf);
    assert!(text.contains("MAPE (NAIVE)"), "{text}");
    let row = text.lines().find(|l| l.starts_with("resnet-serving/p95-latency")).unwrap();
    assert!(row.contains("12% (27%)"), "{row}");
    // The selected rule's detail spells the forecast out.
    assert!(
        text.contains(
            "forecast (floor): load 1480.0 -> 8 replicas  MAPE 12% vs naive 27% over 212 scored"
        ),
        "{text}"
    );
    // Better than naive is green.
    let y = text.lines().position(|l| l.starts_with("resnet-serving/p95-latency")).unwrap() as u16;
    let x = row.find("12% (27%)").unwrap() as u16;
    assert_eq!(buf[(x, y)].fg, Color::Green);
    // A forecast that cannot run yet says why.
    keys(&mut app, "jjj");
    let text = buffer_text(&render_buffer(&app, NOW, 160, 48));
    assert!(
        text.contains("forecast (forecast-only): none, 4m of history, fewer than minHistory 30m"),
        "{text}"
    );
}

#[test]
fn header_shows_the_collectors_cluster_role_and_term() {
    use stoker_tui::model::{ClusterRole, ClusterStatus};
    let view = |role, leader: &str, backend: &str, term| ClusterStatus {
        member: "collector-a".into(),
        role,
        leader: Some(leader.into()),
        members: vec!["collector-a".into(), "collector-b".into()],
        term,
        lease_ttl_s: 10,
        backend: backend.into(),
    };
    let header = |app: &App, w: u16| {
        let text = buffer_text(&render_buffer(app, NOW, w, 24));
        text.lines().next().unwrap().to_owned()
    };
    let (mut app, _) = fleet_app();
    let plain = [header(&app, 80), header(&app, 160)];

    app.apply(Update::Cluster(Some(view(ClusterRole::Leader, "collector-a", "etcd", 12))));
    let line = header(&app, 160);
    assert!(line.ends_with("● 22:13:20Z leader t12 http://127.0.0.1:7700"), "{line}");
    // At 80 columns the role outranks the URL, which the user typed.
    let line = header(&app, 80);
    assert!(line.ends_with("● 22:13:20Z leader t12"), "{line}");
    let buf = render_buffer(&app, NOW, 80, 24);
    let x = (line.chars().count() - "leader t12".len()) as u16;
    assert_eq!((buf[(x, 0)].symbol(), buf[(x, 0)].fg), ("l", Color::Green));

    app.apply(Update::Cluster(Some(view(ClusterRole::Follower, "collector-b", "etcd", 12))));
    let line = header(&app, 160);
    assert!(
        line.ends_with("● 22:13:20Z follower (leader collector-b) t12 http://127.0.0.1:7700"),
        "{line}"
    );
    let line = header(&app, 80);
    assert!(line.ends_with("● 22:13:20Z follower t12"), "{line}");

    // A collector alone always leads at term 0: no badge, the header as without a cluster.
    app.apply(Update::Cluster(Some(view(ClusterRole::Leader, "collector-a", "none", 0))));
    assert_eq!([header(&app, 80), header(&app, 160)], plain);
    // A collector from before clustering, likewise.
    app.apply(Update::Cluster(None));
    assert_eq!([header(&app, 80), header(&app, 160)], plain);
}
