//! Drawing: one module per screen, all drawing from `&App` at a given `now` and nothing else,
//! so a test renders any state at any size into a `TestBackend` and gets the same cells.
//!
//! The frame is a tab bar (row 0; on its right the clock, the collector's cluster role and its
//! URL), an optional banner when the collector is unreachable or the data is stale, the screen
//! body, and a status line with the keys that apply.

mod decisions;
mod fleet;
pub mod fmt;
mod help;
mod models;
mod node;
mod policies;

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, Connection, Tab};
use crate::model::{ClusterRole, ClusterStatus, NANOS_PER_SEC, UnixNanos};

/// Data older than this, with the collector up, is marked stale (the fetch loop asks every
/// second, so three missed answers).
pub const STALE_AFTER_SECS: u64 = 3;

/// A node that has sent nothing for this long is marked stale on the Fleet screen.
pub const NODE_STALE_SECS: u64 = 30;

/// Draw the whole dashboard for `app` as of `now`.
pub fn render(frame: &mut Frame, app: &App, now: UnixNanos) {
    let area = frame.area();
    let banner = banner(app, now);
    let [top, banner_area, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::from(banner.is_some())),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(tab_bar(app, now, top.width), top);
    if let Some(b) = banner {
        frame.render_widget(b, banner_area);
    }
    match app.tab {
        Tab::Fleet => fleet::render(frame, app, now, body),
        Tab::Node => node::render(frame, app, now, body),
        Tab::Models => models::render(frame, app, now, body),
        Tab::Policies => policies::render(frame, app, now, body),
        Tab::Decisions => decisions::render(frame, app, now, body),
    }
    frame.render_widget(status_line(app), status);
    if app.help {
        help::render(frame, area);
    }
}

fn tab_bar(app: &App, now: UnixNanos, width: u16) -> Paragraph<'static> {
    let mut spans = vec![Span::styled(" stoker ", Style::new().add_modifier(Modifier::BOLD))];
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let style = if *tab == app.tab {
            Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Cyan)
        };
        spans.push(Span::styled(format!("{}:{}", i + 1, tab.title()), style));
        spans.push(Span::raw(" "));
    }
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let dot = match app.connection {
        Connection::Up { .. } => Span::styled("●", Style::new().fg(Color::Green)),
        Connection::Connecting => Span::styled("○", Style::new().fg(Color::Yellow)),
        Connection::Down { .. } => Span::styled("●", Style::new().fg(Color::Red)),
    };
    let free = usize::from(width).saturating_sub(used + 2);
    if free >= 10 {
        let right = header_right(app, now, free);
        let len: usize = right.iter().map(|s| s.content.chars().count()).sum();
        spans.push(Span::raw(" ".repeat(free.saturating_sub(len))));
        spans.push(dot);
        spans.extend(right);
    }
    Paragraph::new(Line::from(spans))
}

/// The tab bar's right side after the connection dot, in at most `room` cells: the clock, the
/// collector's cluster role when it has one to tell, then the collector's URL in what is left.
/// The role goes before the URL, which the user typed and knows, so a narrow terminal cuts the
/// URL first.
fn header_right(app: &App, now: UnixNanos, room: usize) -> Vec<Span<'static>> {
    let gray = Style::new().fg(Color::DarkGray);
    let clock = fmt::fit(&format!(" {}Z", fmt::clock(now)), room);
    let mut left = room.saturating_sub(clock.chars().count());
    let mut spans = vec![Span::styled(clock, gray)];
    if let Some((words, style)) = app.cluster.as_ref().and_then(cluster_badge) {
        if let Some(w) = words.into_iter().find(|w| w.chars().count() < left) {
            left -= w.chars().count() + 1;
            spans.push(Span::styled(" ", gray));
            spans.push(Span::styled(w, style));
        }
    }
    // Fewer cells than " ab…" would show only an ellipsis.
    if left >= 4 {
        spans.push(Span::styled(fmt::fit(&format!(" {}", app.collector), left), gray));
    }
    spans
}

/// The header's words for the collector's place in its cluster, longest first (the header
/// shows the first that fits), and their style; `None` for a collector alone (`backend =
/// "none"`), which always leads at term 0, so a badge would tell nothing.
fn cluster_badge(c: &ClusterStatus) -> Option<(Vec<String>, Style)> {
    if c.alone() {
        return None;
    }
    // Term 0 means no leader is known yet: there is no term to tell.
    let term = if c.term > 0 { format!(" t{}", c.term) } else { String::new() };
    Some(match (c.role, c.leader.as_deref()) {
        (ClusterRole::Leader, _) => (vec![format!("leader{term}")], Style::new().fg(Color::Green)),
        (ClusterRole::Follower, Some(leader)) => (
            vec![format!("follower (leader {leader}){term}"), format!("follower{term}")],
            Style::new().fg(Color::Gray),
        ),
        // An election under way: nobody evaluates policies or acts until it ends.
        (ClusterRole::Follower, None) => (
            vec![format!("follower (no leader){term}"), format!("no leader{term}")],
            Style::new().fg(Color::Yellow),
        ),
    })
}

/// When the screen's data was fetched, if it has any.
fn data_at(app: &App) -> Option<UnixNanos> {
    match app.tab {
        Tab::Fleet => app.fleet.as_ref().map(|f| f.at),
        Tab::Node => app.node.as_ref().map(|f| f.at),
        Tab::Models => app.models.as_ref().map(|f| f.at),
        Tab::Policies => app.policies.as_ref().map(|f| f.at),
        Tab::Decisions => app.decisions.as_ref().map(|f| f.at),
    }
}

/// The red or yellow line that says the data on screen is not current, and why.
fn banner(app: &App, now: UnixNanos) -> Option<Paragraph<'static>> {
    let age = data_at(app).map(|at| now.saturating_sub(at) / NANOS_PER_SEC);
    let shown = match age {
        Some(a) => format!("showing data from {} ago", fmt::span(a)),
        None => "no data yet".to_owned(),
    };
    match &app.connection {
        Connection::Down { since, error, retry_at, attempts, .. } => {
            let text = format!(
                " DISCONNECTED {} — {error}; retry in {} (attempt {attempts}); {shown}",
                fmt::ago(now, *since),
                fmt::until(now, *retry_at),
            );
            Some(
                Paragraph::new(text).style(
                    Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD),
                ),
            )
        }
        Connection::Up { .. } | Connection::Connecting => match age {
            Some(a) if a > STALE_AFTER_SECS => Some(
                Paragraph::new(format!(" STALE: {shown}; waiting for the collector"))
                    .style(Style::new().fg(Color::Black).bg(Color::Yellow)),
            ),
            _ => None,
        },
    }
}

fn status_line(app: &App) -> Paragraph<'static> {
    let key = Style::new().fg(Color::Cyan);
    let mut spans: Vec<Span<'static>> = Vec::new();
    if app.filter_editing {
        spans.push(Span::styled("/", key));
        spans.push(Span::raw(app.filter.clone()));
        spans.push(Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)));
        spans.push(Span::styled("  Enter keep  Esc clear", Style::new().fg(Color::DarkGray)));
        return Paragraph::new(Line::from(spans));
    }
    let hints: &[(&str, &str)] = match app.tab {
        Tab::Fleet => {
            &[("↑↓", "move"), ("⏎", "detail"), ("/", "filter"), ("s", "sort"), ("r", "rev")]
        }
        Tab::Node => &[("↑↓", "gpu"), ("+-", "zoom"), ("Esc", "fleet")],
        Tab::Models => &[("↑↓", "version"), ("+-", "zoom")],
        Tab::Policies => &[("↑↓", "rule")],
        Tab::Decisions => &[("↑↓", "decision"), ("⏎", "explain")],
    };
    for (k, what) in hints.iter().chain(&[("?", "help"), ("q", "quit")]) {
        spans.push(Span::styled(format!(" {k}"), key));
        spans.push(Span::raw(format!(" {what}")));
    }
    if app.tab == Tab::Fleet {
        let dir = if app.sort_reversed { "↑" } else { "↓" };
        spans.push(Span::styled(
            format!(" │ sort {}{dir}", app.sort.label()),
            Style::new().fg(Color::DarkGray),
        ));
        if !app.filter.is_empty() {
            spans.push(Span::styled(
                format!(" │ filter \"{}\"", app.filter),
                Style::new().fg(Color::Yellow),
            ));
        }
    }
    if matches!(app.tab, Tab::Node | Tab::Models) {
        spans.push(Span::styled(
            format!(" │ window {}m", app.zoom.as_secs() / 60),
            Style::new().fg(Color::DarkGray),
        ));
    }
    Paragraph::new(Line::from(spans))
}

/// First row to show of a list of `len` rows in `visible` lines so that `sel` is in sight,
/// moving the window as little as possible from where it was.
fn scroll_to(app: &App, sel: usize, len: usize, visible: usize) -> usize {
    let mut offset = app.scroll.get();
    if visible == 0 {
        return 0;
    }
    if sel < offset {
        offset = sel;
    } else if sel >= offset + visible {
        offset = sel + 1 - visible;
    }
    offset = offset.min(len.saturating_sub(visible));
    app.scroll.set(offset);
    offset
}

/// A centred message for a screen without data.
fn placeholder(frame: &mut Frame, area: Rect, text: &str) {
    let [_, mid, _] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(1), Constraint::Fill(1)])
            .areas(area);
    frame.render_widget(
        Paragraph::new(text.to_owned())
            .style(Style::new().fg(Color::DarkGray))
            .alignment(ratatui::layout::Alignment::Center),
        mid,
    );
}

/// Bold header style for tables.
fn header_style() -> Style {
    Style::new().add_modifier(Modifier::BOLD).fg(Color::Gray)
}

/// The selected row.
fn selected_style() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// The width in cells of each column of a `Table` drawn `width` cells wide with these
/// constraints, `flex` and one cell between columns (and no selection column, as the screens
/// draw them): what a cell may hold before the table cuts it, so that names are cut with `…`
/// by [`fmt::fit`] instead of silently.
fn column_widths(width: u16, constraints: &[Constraint], flex: Flex) -> Vec<usize> {
    Layout::horizontal(constraints.iter().copied())
        .flex(flex)
        .spacing(1)
        .split(Rect::new(0, 0, width, 1))
        .iter()
        .map(|r| usize::from(r.width))
        .collect()
}

/// A section title line: `─ Title ───`.
fn section(title: &str, width: u16) -> Line<'static> {
    let t = format!("─ {} ", fmt::fit(title, usize::from(width).saturating_sub(3)));
    let rest = usize::from(width).saturating_sub(t.chars().count());
    Line::from(vec![
        Span::styled(t, Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
        Span::styled("─".repeat(rest), Style::new().fg(Color::DarkGray)),
    ])
}

/// Render `app` at `now` into an off-screen `width`×`height` buffer (tests, benchmarks).
pub fn render_buffer(
    app: &App,
    now: UnixNanos,
    width: u16,
    height: u16,
) -> ratatui::buffer::Buffer {
    let Ok(mut terminal) =
        ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height));
    let Ok(_) = terminal.draw(|f| render(f, app, now));
    terminal.backend().buffer().clone()
}

/// The characters of a buffer, one line per row, trailing blanks trimmed: what a snapshot
/// file holds.
pub fn buffer_text(buffer: &ratatui::buffer::Buffer) -> String {
    let area = buffer.area;
    let mut out = String::with_capacity(usize::from(area.width + 1) * usize::from(area.height));
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            if let Some(cell) = buffer.cell((x, y)) {
                line.push_str(cell.symbol());
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
