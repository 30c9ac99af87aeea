//! The Decisions screen: the log, newest first, and the selected decision's full explanation —
//! inputs seen, raw recommendation, each constraint in order with its effect, the action or the
//! reason for none, the actuator's outcome and the job's status. Enter gives the explanation
//! the whole screen.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};

use super::{column_widths, fmt, header_style, placeholder, scroll_to, section, selected_style};
use crate::app::App;
use crate::model::{DecisionOutcome, DecisionView, UnixNanos};

/// Draw the Decisions screen into `area`.
pub fn render(frame: &mut Frame, app: &App, now: UnixNanos, area: Rect) {
    let Some(list) = &app.decisions else {
        placeholder(frame, area, "waiting for the collector…");
        return;
    };
    let list = &list.data;
    if list.is_empty() {
        placeholder(frame, area, "no decisions yet");
        return;
    }
    let Some(sel) = list.get(app.decision_sel) else {
        return;
    };
    if app.decision_expanded {
        explain(frame, sel, now, area);
        return;
    }
    let list_h = (area.height * 2 / 5).max(4);
    let [list_area, detail_area] =
        Layout::vertical([Constraint::Length(list_h), Constraint::Min(0)]).areas(area);
    let visible = usize::from(list_h.saturating_sub(1));
    let offset = scroll_to(app, app.decision_sel, list.len(), visible);
    let widths = column_widths(list_area.width, &COLUMNS, Flex::Start);
    let rows: Vec<Row> = list
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(i, d)| {
            let row = log_row(d, now, &widths);
            if i == app.decision_sel { row.style(selected_style()) } else { row }
        })
        .collect();
    let header = Row::new(["TIME", "   AGO", "POLICY / RULE", "OUTCOME"]).style(header_style());
    frame.render_widget(
        Table::new(rows, COLUMNS).header(header).column_spacing(1).flex(Flex::Start),
        list_area,
    );
    explain(frame, sel, now, detail_area);
}

/// The log's columns: time, age, policy/rule, outcome.
const COLUMNS: [Constraint; 4] =
    [Constraint::Length(8), Constraint::Length(6), Constraint::Fill(2), Constraint::Fill(3)];

fn outcome(d: &DecisionView) -> Span<'static> {
    let prefix = if d.dry_run { "[dry-run] " } else { "" };
    match &d.outcome {
        // The engine decided to act and the actuator could not: not a success to show green.
        DecisionOutcome::Action(a) if d.actuator.as_ref().is_some_and(|x| x.failed) => {
            Span::styled(
                format!("{prefix}FAILED {a}"),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        }
        DecisionOutcome::Action(a) => Span::styled(
            format!("{prefix}{a}"),
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        ),
        DecisionOutcome::NoAction(why) => {
            // The engine's reasons already read "no action because …".
            let text = if why.starts_with("no action") {
                format!("{prefix}{why}")
            } else {
                format!("{prefix}no action: {why}")
            };
            Span::styled(text, Style::new().fg(Color::DarkGray))
        }
    }
}

fn log_row(d: &DecisionView, now: UnixNanos, widths: &[usize]) -> Row<'static> {
    let w = |i: usize| widths.get(i).copied().unwrap_or(0);
    let mut result = outcome(d);
    result.content = fmt::fit(&result.content, w(3)).into();
    Row::new(vec![
        Cell::from(fmt::clock(d.time)),
        Cell::from(format!("{:>6}", fmt::ago(now, d.time))),
        Cell::from(fmt::fit(&format!("{} / {}", d.policy, d.rule), w(2))),
        Cell::from(Line::from(result)),
    ])
}

fn explain(frame: &mut Frame, d: &DecisionView, now: UnixNanos, area: Rect) {
    let label = Style::new().fg(Color::Cyan);
    let mut lines = vec![section(
        &format!(
            "{} {}Z ({} ago)  {} / {}",
            d.id,
            fmt::clock(d.time),
            fmt::ago(now, d.time),
            d.policy,
            d.rule
        ),
        area.width,
    )];
    let inputs: Vec<String> =
        d.inputs.iter().map(|i| format!("{} = {}", i.name, fmt::value(i.value, i.unit))).collect();
    lines.push(Line::from(vec![Span::styled("inputs   ", label), Span::raw(inputs.join(", "))]));
    lines.push(Line::from(vec![
        Span::styled("wanted   ", label),
        Span::raw(d.recommendation.clone()),
    ]));
    for (n, c) in d.constraints.iter().enumerate() {
        let style = if c.changed { Style::new().fg(Color::Yellow) } else { Style::new() };
        lines.push(Line::from(vec![
            Span::styled(if n == 0 { "applied  " } else { "         " }, label),
            Span::raw(format!("{}. {:<14}", n + 1, c.name)),
            Span::styled(c.effect.clone(), style),
            Span::styled(if c.changed { "  (changed)" } else { "" }, style),
        ]));
    }
    lines.push(Line::from(vec![
        Span::styled("result   ", label),
        Span::styled(
            if d.dry_run { "mode dry-run; " } else { "" },
            Style::new().fg(Color::Magenta),
        ),
        outcome(d),
    ]));
    if let Some(a) = &d.actuator {
        let ids = if a.remote_ids.is_empty() {
            String::new()
        } else {
            format!("; {}", a.remote_ids.join(", "))
        };
        let attempts = if a.attempts == 1 {
            "1 attempt".to_owned()
        } else {
            format!("{} attempts", a.attempts)
        };
        lines.push(Line::from(vec![
            Span::styled("actuator ", label),
            Span::raw(format!("{}: {}, {attempts}{ids}", a.actuator, a.status)),
        ]));
    }
    if let Some(j) = &d.job {
        let url = j.url.as_ref().map_or_else(String::new, |u| format!("  {u}"));
        lines.push(Line::from(vec![
            Span::styled("job      ", label),
            Span::raw(format!("{} {}{url}", j.id, j.state)),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}
