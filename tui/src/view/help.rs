//! The `?` overlay: every key, in a box over the current screen.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

const KEYS: [(&str, &str); 15] = [
    ("1-5 Tab", "switch screen: Fleet Node Models Policies Decisions"),
    ("↑↓ j k", "move the selection"),
    ("PgUp PgDn", "move by ten"),
    ("g G", "first, last"),
    ("Enter", "node detail (Fleet), explanation (Decisions)"),
    ("Esc", "back, clear filter, close"),
    ("/", "filter nodes by name or health (lost, xid, degraded)"),
    ("s", "cycle the Fleet sort column"),
    ("r", "reverse the sort"),
    ("+ -", "zoom history: 5 10 15 30 60 minutes"),
    ("?", "this help"),
    ("q Ctrl-C", "quit"),
    ("", ""),
    ("red bar", "collector unreachable: data frozen, retrying"),
    ("yellow bar", "data older than 3 s"),
];

/// Draw the help box centred on `area`.
pub fn render(frame: &mut Frame, area: Rect) {
    let w = area.width.min(74);
    let h = area.height.min(KEYS.len() as u16 + 2);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!(" {k:<11}"),
                    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::new()
                .borders(Borders::ALL)
                .title(" keys — ? or Esc to close ")
                .border_style(Style::new().fg(Color::Cyan)),
        ),
        rect,
    );
}
