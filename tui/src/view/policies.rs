//! The Policies screen: every rule with its state (ok, pending for N s, firing, cooling down
//! until T, dry-run), its first input against target, replicas, and when it may act next;
//! the selected rule's inputs in full below. A scaling rule of a policy with `scale.forecast`
//! shows its target's forecast error (MAPE, and the naive last-value forecast's for
//! comparison) in the table and the forecast in the detail.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{column_widths, fmt, header_style, placeholder, scroll_to, section, selected_style};
use crate::app::App;
use crate::model::{ForecastView, NextAction, RuleInput, RuleKind, RuleState, RuleView, UnixNanos};

/// Draw the Policies screen into `area`.
pub fn render(frame: &mut Frame, app: &App, now: UnixNanos, area: Rect) {
    let Some(rules) = &app.policies else {
        placeholder(frame, area, "waiting for the collector…");
        return;
    };
    let rules = &rules.data;
    if rules.is_empty() {
        placeholder(frame, area, "no policies loaded");
        return;
    }
    let detail_h = rules
        .get(app.policy_sel)
        .map_or(0, |r| {
            let problem = problem_lines(r, now, area.width).len() as u16;
            r.inputs.len() as u16 + 3 + u16::from(r.forecast.is_some()) + problem
        })
        .min(area.height / 2);
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(detail_h)]).areas(area);
    let visible = usize::from(table_area.height.saturating_sub(1));
    let offset = scroll_to(app, app.policy_sel, rules.len(), visible);
    let widths = column_widths(table_area.width, &COLUMNS, Flex::Start);
    let rows: Vec<Row> = rules
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(i, r)| {
            let row = rule_row(r, now, &widths);
            if i == app.policy_sel { row.style(selected_style()) } else { row }
        })
        .collect();
    let header =
        Row::new(["POLICY / RULE", "STATE", "NOW / TARGET", "REPL", "MAPE (NAIVE)", "NEXT ACTION"])
            .style(header_style());
    frame.render_widget(
        Table::new(rows, COLUMNS).header(header).column_spacing(1).flex(Flex::Start),
        table_area,
    );
    if let Some(r) = rules.get(app.policy_sel) {
        detail(frame, r, now, detail_area);
    }
}

/// The rules table's columns: policy/rule, state, now/target, replicas, MAPE, next action.
const COLUMNS: [Constraint; 6] = [
    Constraint::Fill(3),
    Constraint::Length(14),
    Constraint::Length(13),
    Constraint::Length(5),
    Constraint::Length(12),
    Constraint::Fill(2),
];

/// The state cell: word and colour. A rule that cannot act (its actuator failed, its target's
/// size is unknown) is `FAILED` whatever the engine's state, since nothing it decides happens.
pub fn state(r: &RuleView, now: UnixNanos) -> Span<'static> {
    if r.problem.is_some() {
        return Span::styled(
            "FAILED",
            Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD),
        );
    }
    match &r.state {
        RuleState::Ok => Span::styled("ok", Style::new().fg(Color::Green)),
        RuleState::Pending { since } => Span::styled(
            format!("pending {}", fmt::ago(now, *since)),
            Style::new().fg(Color::Yellow),
        ),
        RuleState::Firing => {
            Span::styled("FIRING", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
        }
        RuleState::Cooling { until } => Span::styled(
            format!("cooling {}", fmt::until(now, *until)),
            Style::new().fg(Color::Blue),
        ),
        RuleState::DryRun => Span::styled("dry-run", Style::new().fg(Color::Magenta)),
    }
}

fn vs(i: &RuleInput) -> String {
    format!("{} / {}", fmt::value(i.current, i.unit), fmt::value(Some(i.target), i.unit))
}

fn next(n: &NextAction, now: UnixNanos) -> String {
    match n {
        NextAction::Now => "now".to_owned(),
        NextAction::At { at, reason } => format!("in {} ({reason})", fmt::until(now, *at)),
        NextAction::Blocked(reason) => format!("never: {reason}"),
    }
}

/// `12% (27%)`: the forecast's MAPE and the naive forecast's; `-` before any is scored.
fn mape_cell(f: &ForecastView) -> Line<'static> {
    let text = format!("{} ({})", mape(f.mape), mape(f.naive_mape));
    let style = match (f.mape, f.naive_mape) {
        (Some(m), Some(n)) if m <= n => Style::new().fg(Color::Green),
        (Some(_), Some(_)) => Style::new().fg(Color::Yellow),
        _ => Style::new().fg(Color::DarkGray),
    };
    Line::styled(text, style)
}

fn mape(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |m| format!("{:.0}%", m * 100.0))
}

/// The detail line of a forecast.
fn forecast_line(f: &ForecastView) -> Line<'static> {
    let mut spans = vec![Span::raw(format!(" forecast ({}): ", f.mode))];
    match (&f.problem, f.load) {
        (Some(problem), _) => {
            spans.push(Span::styled(format!("none, {problem}"), Style::new().fg(Color::Yellow)))
        }
        (None, Some(load)) => spans.push(Span::raw(format!(
            "load {load:.1}{}",
            f.replicas.map_or_else(String::new, |r| format!(" -> {r} replicas"))
        ))),
        (None, None) => spans.push(Span::raw("none yet")),
    }
    spans.push(Span::raw(format!(
        "  MAPE {} vs naive {} over {:.0} scored",
        mape(f.mape),
        mape(f.naive_mape),
        f.scored
    )));
    Line::from(spans)
}

fn rule_row(r: &RuleView, now: UnixNanos, widths: &[usize]) -> Row<'static> {
    let w = |i: usize| widths.get(i).copied().unwrap_or(0);
    let kind = match r.kind {
        RuleKind::Scale => "",
        RuleKind::Retrain => " (retrain)",
    };
    let replicas = match (r.replicas, r.ready) {
        (Some(p), _) if p.desired != p.current => format!("{}→{}", p.current, p.desired),
        (Some(p), None) => format!("{}", p.current),
        // Ready out of provisioned: the rest are still warming.
        (_, Some((ready, provisioned))) => format!("{ready}/{provisioned}"),
        (None, None) => String::new(),
    };
    // A failing rule's reason takes the place of its next action: that is what blocks it.
    let next_cell = match &r.problem {
        Some(p) => Line::styled(fmt::fit(&p.what, w(5)), Style::new().fg(Color::Red)),
        None => Line::raw(fmt::fit(&next(&r.next_action, now), w(5))),
    };
    Row::new(vec![
        Cell::from(fmt::fit(&format!("{}/{}{kind}", r.policy, r.rule), w(0))),
        Cell::from(Line::from(state(r, now))),
        Cell::from(fmt::fit(&r.inputs.first().map(vs).unwrap_or_default(), w(2))),
        Cell::from(replicas),
        Cell::from(r.forecast.as_ref().map(mape_cell).unwrap_or_default()),
        Cell::from(next_cell),
    ])
}

/// Why the rule cannot act, whole, wrapped to `width`: the first line marked `FAILED`.
fn problem_lines(r: &RuleView, now: UnixNanos, width: u16) -> Vec<Line<'static>> {
    let Some(p) = &r.problem else {
        return Vec::new();
    };
    const MARK: &str = " FAILED ";
    let when = p.at.map_or_else(String::new, |t| format!(" ({} ago)", fmt::ago(now, t)));
    let indent = MARK.chars().count() + 1;
    let text = format!("{}{when}", p.what);
    let red = Style::new().fg(Color::Red);
    fmt::wrap(&text, usize::from(width).saturating_sub(indent).max(10))
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let lead = if i == 0 {
                Span::styled(MARK, Style::new().fg(Color::White).bg(Color::Red))
            } else {
                Span::raw(" ".repeat(MARK.chars().count()))
            };
            Line::from(vec![lead, Span::styled(format!(" {part}"), red)])
        })
        .collect()
}

fn detail(frame: &mut Frame, r: &RuleView, now: UnixNanos, area: Rect) {
    if area.height < 2 {
        return;
    }
    let mut lines = vec![section(&format!("{} / {}", r.policy, r.rule), area.width)];
    lines.extend(problem_lines(r, now, area.width));
    for i in &r.inputs {
        let over = i.current.is_some_and(|c| c > i.target);
        let style = match i.current {
            None => Style::new().fg(Color::Yellow),
            Some(_) if over => Style::new().fg(Color::Red),
            Some(_) => Style::new().fg(Color::Green),
        };
        lines.push(Line::from(vec![
            Span::raw(format!(" {:<32} ", fmt::fit(&i.name, 32))),
            Span::styled(format!("{:>8}", fmt::value(i.current, i.unit)), style),
            Span::raw(format!("  target {}", fmt::value(Some(i.target), i.unit))),
            Span::styled(
                if i.current.is_none() { "  (missing data)" } else { "" },
                Style::new().fg(Color::Yellow),
            ),
        ]));
    }
    if let Some(f) = &r.forecast {
        lines.push(forecast_line(f));
    }
    let mut tail = vec![Span::raw(" state "), state(r, now)];
    if let Some(p) = r.replicas {
        tail.push(Span::raw(format!(
            "  replicas {} → {} (min {}, max {})",
            p.current, p.desired, p.min, p.max
        )));
    }
    if let Some((ready, provisioned)) = r.ready {
        tail.push(Span::raw(format!("  ready {ready}/{provisioned}")));
    }
    tail.push(Span::raw(format!("  next: {}", next(&r.next_action, now))));
    lines.push(Line::from(tail));
    frame.render_widget(Paragraph::new(lines), area);
}
