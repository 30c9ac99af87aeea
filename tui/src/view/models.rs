//! The Models screen: a row per model version (current one starred) with rate, errors,
//! latency percentiles and drift; below, the selected version's latency percentiles over time,
//! its confidence distribution and its drift against the reference.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table};

use super::{column_widths, fmt, header_style, placeholder, scroll_to, section, selected_style};
use crate::app::App;
use crate::model::{ModelVersionView, ModelView, NANOS_PER_SEC, Series, UnixNanos};

/// Draw the Models screen into `area`.
pub fn render(frame: &mut Frame, app: &App, now: UnixNanos, area: Rect) {
    let rows = app.model_rows();
    if app.models.is_none() {
        placeholder(frame, area, "waiting for the collector…");
        return;
    }
    if rows.is_empty() {
        placeholder(frame, area, "no model has reported inference metrics yet");
        return;
    }
    let table_h = (rows.len() as u16 + 1).min(area.height / 3).max(3);
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(area);
    let visible = usize::from(table_h.saturating_sub(1));
    let offset = scroll_to(app, app.model_sel, rows.len(), visible);
    let name_w =
        rows.iter().map(|(m, _)| m.name.chars().count()).max().unwrap_or(5).clamp(5, 32) as u16;
    let columns = columns(name_w);
    // What the name column gets once the table is squeezed into the width there is.
    let name_fit =
        column_widths(table_area.width, &columns, Flex::Start).first().copied().unwrap_or(0);
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(i, (m, v))| {
            let row = version_row(m, v, name_fit);
            if i == app.model_sel { row.style(selected_style()) } else { row }
        })
        .collect();
    let header = Row::new([
        "MODEL", "VERSION", "   RATE", "  ERRS", "   P50", "   P95", "   P99", "DRIFT", " ACC",
    ])
    .style(header_style());
    frame.render_widget(
        Table::new(body, columns).header(header).column_spacing(1).flex(Flex::Start),
        table_area,
    );
    if let Some((m, v)) = rows.get(app.model_sel) {
        detail(frame, app, m, v, now, detail_area);
    }
}

fn version_row(m: &ModelView, v: &ModelVersionView, name_w: usize) -> Row<'static> {
    let current = v.version == m.current_version;
    // The star marks the current version even when the version itself is cut.
    let version = match (current, version_label(&v.version)) {
        (true, label) => format!("{}*", fmt::fit(label, VERSION_W - 1)),
        (false, label) => fmt::fit(label, VERSION_W),
    };
    let drift_style = match &v.drift {
        Some(d) if d.threshold.is_some_and(|t| d.value > t) => Style::new().fg(Color::Red),
        _ => Style::new(),
    };
    let err_style =
        if v.errors_rps.unwrap_or(0.0) > 0.0 { Style::new().fg(Color::Red) } else { Style::new() };
    Row::new(vec![
        Cell::from(fmt::fit(&m.name, name_w)),
        Cell::from(version),
        Cell::from(format!("{:>7}", fmt::rate(v.rate_rps))),
        Cell::from(Line::styled(format!("{:>6}", fmt::rate(v.errors_rps)), err_style)),
        Cell::from(format!("{:>6}", fmt::latency(v.latency.p50))),
        Cell::from(format!("{:>6}", fmt::latency(v.latency.p95))),
        Cell::from(format!("{:>6}", fmt::latency(v.latency.p99))),
        Cell::from(Line::styled(
            v.drift.as_ref().map_or_else(|| "    -".to_owned(), |d| format!("{:>5.2}", d.value)),
            drift_style,
        )),
        Cell::from(format!("{:>4}", fmt::pct(v.accuracy))),
    ])
}

/// The table's columns: model, version, rate, errors, p50, p95, p99, drift, accuracy.
fn columns(name_w: u16) -> [Constraint; 9] {
    [
        Constraint::Length(name_w),
        Constraint::Length(VERSION_W as u16),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(4),
    ]
}

/// Width of the VERSION column.
const VERSION_W: usize = 8;

/// A version as listed: `-` for data that names no `model.version`.
fn version_label(version: &str) -> &str {
    if version.is_empty() { "-" } else { version }
}

fn xy(s: &Series, now: UnixNanos, scale: f64) -> Vec<(f64, f64)> {
    s.points
        .iter()
        .map(|&(t, v)| (-(now.saturating_sub(t) as f64 / NANOS_PER_SEC as f64), v * scale))
        .collect()
}

fn detail(
    frame: &mut Frame,
    app: &App,
    m: &ModelView,
    v: &ModelVersionView,
    now: UnixNanos,
    area: Rect,
) {
    if area.height < 4 {
        return;
    }
    let [title, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let current = if v.version == m.current_version { " (current)" } else { "" };
    frame.render_widget(
        Paragraph::new(section(
            &format!(
                "{} {}{current}, first seen {} ago",
                m.name,
                version_label(&v.version),
                fmt::ago(now, v.first_seen)
            ),
            area.width,
        )),
        title,
    );
    let hist_w = if body.width >= 120 { 44 } else { 30 };
    let [chart_area, side] = Layout::horizontal([Constraint::Min(20), Constraint::Length(hist_w)])
        .spacing(1)
        .areas(body);

    let p50 = xy(&v.latency_history.p50, now, 1000.0);
    let p95 = xy(&v.latency_history.p95, now, 1000.0);
    let p99 = xy(&v.latency_history.p99, now, 1000.0);
    let top = p99.iter().chain(&p95).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let window = app.zoom.as_secs_f64();
    let minutes = app.zoom.as_secs() / 60;
    let chart = Chart::new(vec![
        Dataset::default()
            .name("p50")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Green))
            .data(&p50),
        Dataset::default()
            .name("p95")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Yellow))
            .data(&p95),
        Dataset::default()
            .name("p99")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Red))
            .data(&p99),
    ])
    .block(Block::new().title(Line::styled("latency ms", Style::new().fg(Color::DarkGray))))
    .x_axis(
        Axis::default()
            .bounds([-window, 0.0])
            .labels([format!("-{minutes}m"), "now".to_owned()])
            .style(Style::new().fg(Color::DarkGray)),
    )
    .y_axis(
        Axis::default()
            .bounds([0.0, top])
            .labels(["0".to_owned(), format!("{top:.0}")])
            .style(Style::new().fg(Color::DarkGray)),
    );
    frame.render_widget(chart, chart_area);

    let mut lines = vec![Line::from(vec![
        Span::styled("rate ", Style::new().fg(Color::DarkGray)),
        Span::raw(fmt::rate(v.rate_rps)),
        Span::raw(" "),
        Span::styled(
            fmt::spark(
                &v.rate_history,
                usize::from(hist_w).saturating_sub(12),
                v.rate_history.points.iter().map(|p| p.1).fold(0.0, f64::max),
            ),
            Style::new().fg(Color::Cyan),
        ),
    ])];
    match &v.drift {
        Some(d) => {
            let over = d.threshold.is_some_and(|t| d.value > t);
            let style = if over {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::new().fg(Color::Green)
            };
            let limit = d
                .threshold
                .map_or_else(String::new, |t| format!(" {} {t:.2}", if over { ">" } else { "≤" }));
            lines.push(Line::from(vec![
                Span::styled("drift ", Style::new().fg(Color::DarkGray)),
                Span::styled(format!("{} {:.2}{limit}", d.test, d.value), style),
            ]));
            lines.push(Line::styled(
                format!("  vs {} over {}", d.reference, fmt::span(d.window.as_secs())),
                Style::new().fg(Color::DarkGray),
            ));
        }
        None => {
            lines.push(Line::styled("drift - (no reference yet)", Style::new().fg(Color::DarkGray)))
        }
    }
    lines.push(Line::from(vec![
        Span::styled("confidence ", Style::new().fg(Color::DarkGray)),
        Span::raw(format!("mean {}", fmt::pct(v.confidence.mean))),
        Span::styled(format!("  acc {}", fmt::pct(v.accuracy)), Style::new().fg(Color::DarkGray)),
    ]));
    let max = v.confidence.counts.iter().copied().max().unwrap_or(0).max(1);
    let bar_w = usize::from(hist_w).saturating_sub(15);
    let room = usize::from(side.height).saturating_sub(lines.len());
    let buckets = v.confidence.counts.len();
    // Highest-confidence buckets first: that is where a healthy model's mass is.
    for i in (0..buckets).rev().take(room) {
        let lo = if i == 0 { 0.0 } else { v.confidence.bounds.get(i - 1).copied().unwrap_or(0.0) };
        let count = v.confidence.counts[i];
        lines.push(Line::from(vec![
            Span::styled(format!("≥{lo:.1} "), Style::new().fg(Color::DarkGray)),
            Span::styled(
                fmt::bar(Some(count as f64 / max as f64), bar_w),
                Style::new().fg(Color::Blue),
            ),
            Span::raw(format!("{count:>7}")),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), side);
}
