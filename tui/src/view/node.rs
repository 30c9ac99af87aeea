//! The Node screen: per-GPU gauges with history sparklines (one line per GPU, nvitop-style), a
//! chart of the selected GPU when the terminal is tall enough, the processes holding GPU memory
//! and the node's inference services with p50/p95/p99 latency; above them, when the collector
//! flags any, the node's anomalies with why.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table};

use super::{column_widths, fmt, header_style, placeholder, section, selected_style};
use crate::app::App;
use crate::model::{GpuStatus, GpuView, NANOS_PER_SEC, NodeDetail, Series, UnixNanos};

/// Draw the Node screen into `area`.
pub fn render(frame: &mut Frame, app: &App, now: UnixNanos, area: Rect) {
    let Some(name) = &app.detail_node else {
        placeholder(
            frame,
            area,
            "no node chosen: pick one on the Fleet screen (1) and press Enter",
        );
        return;
    };
    let Some(detail) = app.node.as_ref().filter(|n| &n.data.node == name) else {
        let text = match &app.node_missing {
            Some(what) => {
                format!("{what} is not known to the collector (left the fleet?); Esc for the fleet")
            }
            None => format!("loading {name}…"),
        };
        placeholder(frame, area, &text);
        return;
    };
    let d = &detail.data;
    let n_gpus = d.gpus.len() as u16;
    let rest = area.height.saturating_sub(2 + n_gpus);
    let chart_h = if rest >= 24 { (rest - 14).clamp(8, 20) } else { 0 };
    let anomalies_h = if d.anomalies.is_empty() {
        0
    } else {
        1 + 2 * (d.anomalies.len() as u16).min(MAX_ANOMALIES)
    };
    let [head, gpu_title, gpus, chart, anomalies_area, lists] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(n_gpus),
        Constraint::Length(chart_h),
        Constraint::Length(anomalies_h),
        Constraint::Min(0),
    ])
    .areas(area);
    frame.render_widget(header(d, now), head);
    let title = match d.gpus.first() {
        Some(g) => format!(
            "{} × {}  (history {}m, +/- to zoom)",
            d.gpus.len(),
            g.model,
            app.zoom.as_secs() / 60
        ),
        // A CPU-only node reports no GPU at all; "0 ×" would read like a GPU model lost.
        None => "no GPU".to_owned(),
    };
    frame.render_widget(Paragraph::new(section(&title, area.width)), gpu_title);
    let lines: Vec<Line> =
        d.gpus.iter().enumerate().map(|(i, g)| gpu_line(g, gpus.width, i == app.gpu_sel)).collect();
    frame.render_widget(Paragraph::new(lines), gpus);
    if chart_h > 0 {
        if let Some(g) = d.gpus.get(app.gpu_sel) {
            gpu_chart(frame, g, d, now, chart);
        }
    }
    if anomalies_h > 0 {
        anomalies(frame, d, now, anomalies_area);
    }
    if lists.width >= 160 {
        let [l, r] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .spacing(1)
            .areas(lists);
        processes(frame, d, l);
        services(frame, d, r);
    } else {
        let svc_h = (d.services.len() as u16 + 2).min(lists.height / 2);
        let [l, r] = Layout::vertical([Constraint::Min(0), Constraint::Length(svc_h)]).areas(lists);
        processes(frame, d, l);
        services(frame, d, r);
    }
}

/// Anomalies shown at most, two lines each (the highest scores; the title gives the count).
const MAX_ANOMALIES: u16 = 3;

/// The node's anomalies, highest score first: subject, baseline, score and since when on one
/// line, why on the next.
fn anomalies(frame: &mut Frame, d: &NodeDetail, now: UnixNanos, area: Rect) {
    let mut lines = vec![section(&format!("Anomalies ({})", d.anomalies.len()), area.width)];
    let mark = Style::new().fg(Color::Magenta);
    for a in d.anomalies.iter().take(usize::from(MAX_ANOMALIES)) {
        lines.push(Line::from(vec![
            Span::styled(format!(" {} ", super::fleet::ANOMALY_MARK), mark),
            Span::styled(a.subject.clone(), Style::new().add_modifier(Modifier::BOLD)),
            Span::styled(
                format!(
                    "  vs {}  {} {} (expected {})  score {:.1}  since {} ago",
                    a.baseline,
                    a.feature,
                    fmt_number(a.value),
                    fmt_number(a.expected),
                    a.score,
                    fmt::ago(now, a.since)
                ),
                Style::new().fg(Color::DarkGray),
            ),
        ]));
        lines.push(Line::raw(format!("   {}", a.why)));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

/// A feature value with at most three significant decimals.
fn fmt_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn header(d: &NodeDetail, now: UnixNanos) -> Paragraph<'static> {
    let cpu = d.cpu_history.last();
    let age = now.saturating_sub(d.last_seen) / NANOS_PER_SEC;
    let seen_style = if age > super::NODE_STALE_SECS {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Paragraph::new(Line::from(vec![
        Span::styled(format!(" {} ", d.node), Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(format!("seen {} ago", fmt::span(age)), seen_style),
        Span::raw("  CPU "),
        Span::styled(format!("{:>4}", fmt::pct(cpu)), fmt::load_style(cpu)),
        Span::styled(format!(" {}", fmt::spark(&d.cpu_history, 12, 1.0)), fmt::load_style(cpu)),
        Span::raw(format!("  MEM {}", fmt::mem_pair(d.mem_used, d.mem_total))),
        Span::styled(
            if d.anomalies.is_empty() {
                String::new()
            } else {
                format!("  {} anomaly {}", super::fleet::ANOMALY_MARK, d.anomalies.len())
            },
            Style::new().fg(Color::Magenta),
        ),
    ]))
}

fn gpu_line(g: &GpuView, width: u16, selected: bool) -> Line<'static> {
    let wide = width >= 120;
    let bar_w = if wide { 16 } else { 8 };
    let (status, status_style) = match g.status {
        GpuStatus::Ok => ("ok  ", Style::new().fg(Color::Green)),
        GpuStatus::Degraded => ("DEGR", Style::new().fg(Color::Yellow)),
        GpuStatus::Failed => ("LOST", Style::new().fg(Color::White).bg(Color::Red)),
    };
    let mem = match (g.mem_used, g.mem_total) {
        (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
        _ => None,
    };
    let idx_style =
        if selected { selected_style() } else { Style::new().add_modifier(Modifier::BOLD) };
    let mut spans = vec![
        Span::styled(format!("{:>2}", g.index), idx_style),
        Span::raw(" "),
        Span::styled(status, status_style),
        Span::raw(" "),
        Span::styled(fmt::bar(g.util, bar_w), fmt::load_style(g.util)),
        Span::raw(format!("{:>5}", fmt::pct(g.util))),
        Span::raw(" "),
        Span::styled(fmt::bar(mem, bar_w), fmt::load_style(mem)),
        Span::raw(format!("{:>8}", fmt::mem_pair(g.mem_used, g.mem_total))),
        Span::raw(format!(" {:>5}", fmt::watts(g.power_w))),
        Span::styled(format!(" {:>4}", fmt::celsius(g.temp_c)), fmt::temp_style(g.temp_c)),
    ];
    if wide {
        spans.push(Span::raw(format!(
            " {:>7}",
            g.sm_clock_mhz.map_or_else(|| "-".to_owned(), |c| format!("{c:.0}MHz"))
        )));
    }
    if let Some(x) = g.last_xid {
        spans.push(Span::styled(format!(" XID{}", x.code), Style::new().fg(Color::Red)));
    }
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let spark_w = usize::from(width).saturating_sub(used + 1);
    if spark_w >= 4 {
        spans.push(Span::raw(" "));
        spans
            .push(Span::styled(fmt::spark(&g.util_history, spark_w, 1.0), fmt::load_style(g.util)));
    }
    Line::from(spans)
}

fn to_xy(s: &Series, now: UnixNanos, scale: f64) -> Vec<(f64, f64)> {
    s.points
        .iter()
        .map(|&(t, v)| (-((now.saturating_sub(t)) as f64 / NANOS_PER_SEC as f64), v * scale))
        .collect()
}

fn gpu_chart(frame: &mut Frame, g: &GpuView, d: &NodeDetail, now: UnixNanos, area: Rect) {
    let window = d.window.as_secs_f64();
    let util = to_xy(&g.util_history, now, 100.0);
    let mem = g
        .mem_total
        .filter(|t| *t > 0)
        .map_or_else(Vec::new, |t| to_xy(&g.mem_history, now, 100.0 / t as f64));
    let power = g
        .power_limit_w
        .filter(|p| *p > 0.0)
        .map_or_else(Vec::new, |p| to_xy(&g.power_history, now, 100.0 / p));
    let datasets = vec![
        Dataset::default()
            .name("util %")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Green))
            .data(&util),
        Dataset::default()
            .name("mem %")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Cyan))
            .data(&mem),
        Dataset::default()
            .name("power % of limit")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Magenta))
            .data(&power),
    ];
    let minutes = d.window.as_secs() / 60;
    let chart = Chart::new(datasets)
        .block(
            ratatui::widgets::Block::new()
                .title(section(&format!("GPU {} history", g.index), area.width)),
        )
        .x_axis(
            Axis::default()
                .bounds([-window, 0.0])
                .labels([format!("-{minutes}m"), format!("-{}m", minutes / 2), "now".to_owned()])
                .style(Style::new().fg(Color::DarkGray)),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, 100.0])
                .labels(["0", "50", "100"])
                .style(Style::new().fg(Color::DarkGray)),
        );
    frame.render_widget(chart, area);
}

fn processes(frame: &mut Frame, d: &NodeDetail, area: Rect) {
    if area.height < 2 {
        return;
    }
    let [title, table] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    frame.render_widget(
        Paragraph::new(section(&format!("Processes ({})", d.processes.len()), area.width)),
        title,
    );
    let widths = column_widths(table.width, &PROCESS_COLUMNS, Flex::Start);
    let command_w = widths.get(6).copied().unwrap_or(0);
    let rows: Vec<Row> = d
        .processes
        .iter()
        .take(usize::from(table.height.saturating_sub(1)))
        .map(|p| {
            Row::new(vec![
                Cell::from(format!("{:>7}", p.pid)),
                Cell::from(format!("{:>3}", p.gpu_index)),
                Cell::from(format!("{:>8}", p.gpu_mem.map_or_else(|| "-".to_owned(), fmt::bytes))),
                Cell::from(Line::styled(
                    format!("{:>5}", fmt::pct(p.gpu_util)),
                    fmt::load_style(p.gpu_util),
                )),
                Cell::from(format!("{:>5}", fmt::pct(p.cpu))),
                Cell::from(format!("{:>6}", p.mem.map_or_else(|| "-".to_owned(), fmt::bytes))),
                Cell::from(fmt::fit(&p.name, command_w)),
            ])
        })
        .collect();
    let header = Row::new(["    PID", "GPU", "GPU MEM", "GPU %", " CPU%", "   MEM", "COMMAND"])
        .style(header_style());
    frame.render_widget(
        Table::new(rows, PROCESS_COLUMNS).header(header).column_spacing(1).flex(Flex::Start),
        table,
    );
}

/// The process table's columns: pid, GPU, GPU memory, GPU %, CPU %, memory, command.
const PROCESS_COLUMNS: [Constraint; 7] = [
    Constraint::Length(7),
    Constraint::Length(3),
    Constraint::Length(8),
    Constraint::Length(5),
    Constraint::Length(5),
    Constraint::Length(6),
    Constraint::Min(8),
];

/// The service table's columns: service, model:version, rate, errors, p50, p95, p99.
const SERVICE_COLUMNS: [Constraint; 7] = [
    Constraint::Fill(1),
    Constraint::Fill(1),
    Constraint::Length(7),
    Constraint::Length(6),
    Constraint::Length(6),
    Constraint::Length(6),
    Constraint::Length(6),
];

fn services(frame: &mut Frame, d: &NodeDetail, area: Rect) {
    if area.height < 2 {
        return;
    }
    let [title, table] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    frame.render_widget(
        Paragraph::new(section(&format!("Services ({})", d.services.len()), area.width)),
        title,
    );
    let widths = column_widths(table.width, &SERVICE_COLUMNS, Flex::Start);
    let w = |i: usize| widths.get(i).copied().unwrap_or(0);
    let rows: Vec<Row> = d
        .services
        .iter()
        .map(|s| {
            let err_style = if s.errors_rps.unwrap_or(0.0) > 0.0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            Row::new(vec![
                Cell::from(fmt::fit(&s.name, w(0))),
                Cell::from(fmt::fit(&model_version(&s.model, &s.version), w(1))),
                Cell::from(format!("{:>7}", fmt::rate(s.rate_rps))),
                Cell::from(Line::styled(format!("{:>6}", fmt::rate(s.errors_rps)), err_style)),
                Cell::from(format!("{:>6}", fmt::latency(s.latency.p50))),
                Cell::from(format!("{:>6}", fmt::latency(s.latency.p95))),
                Cell::from(format!("{:>6}", fmt::latency(s.latency.p99))),
            ])
        })
        .collect();
    let header = Row::new(["SERVICE", "MODEL", "   RATE", "  ERRS", "   P50", "   P95", "   P99"])
        .style(header_style());
    frame.render_widget(
        Table::new(rows, SERVICE_COLUMNS).header(header).column_spacing(1).flex(Flex::Start),
        table,
    );
}

/// `model:version`, or the model alone when the service reports no version (as the Models
/// screen lists it).
fn model_version(model: &str, version: &str) -> String {
    if version.is_empty() { model.to_owned() } else { format!("{model}:{version}") }
}
