//! The Fleet screen: one row per node, filtered and sorted by the app, with health spelled out.
//! Only the rows in sight are built, so 500 nodes cost what 20 do.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{NODE_STALE_SECS, fmt, header_style, placeholder, scroll_to, selected_style};
use crate::app::{App, FleetSort};
use crate::model::{FleetRow, NANOS_PER_SEC, UnixNanos};

/// Marks an anomalous node's name on the Fleet screen.
pub const ANOMALY_MARK: &str = "◆";

/// Draw the Fleet screen into `area`.
pub fn render(frame: &mut Frame, app: &App, now: UnixNanos, area: Rect) {
    let Some(fleet) = &app.fleet else {
        placeholder(frame, area, "waiting for the collector…");
        return;
    };
    let [summary_area, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    frame.render_widget(summary(&fleet.data, app.fleet_order.len(), now), summary_area);
    if app.fleet_order.is_empty() {
        placeholder(frame, table_area, "no node matches the filter (Esc clears it)");
        return;
    }
    let wide = area.width >= 110;
    let name_w = fleet
        .data
        .iter()
        .map(|r| r.node.chars().count() + usize::from(r.health.anomalies > 0))
        .max()
        .unwrap_or(4)
        .clamp(4, if wide { 28 } else { 16 }) as u16;
    let bar_w: u16 = if wide { 10 } else { 0 };
    let busy_w = if wide { bar_w + 5 } else { 4 };
    let columns: [(&str, FleetSort, u16); 9] = [
        ("NODE", FleetSort::Name, name_w),
        ("BUSY", FleetSort::GpuBusy, busy_w),
        ("MAX", FleetSort::GpuBusyMax, 4),
        ("GPU MEM", FleetSort::GpuMem, if wide { bar_w + 10 } else { 9 }),
        ("POWER", FleetSort::Power, 6),
        ("TEMP", FleetSort::Temp, 4),
        ("CPU", FleetSort::Cpu, 4),
        ("MEM", FleetSort::Mem, 4),
        ("HEALTH", FleetSort::Health, 0),
    ];
    let mut widths: Vec<Constraint> = vec![Constraint::Length(name_w), Constraint::Length(3)];
    let mut header: Vec<Cell> =
        vec![Cell::from(sorted("NODE", app, FleetSort::Name)), Cell::from("GPU")];
    for (title, key, w) in columns.iter().skip(1) {
        widths.push(if *w == 0 { Constraint::Min(8) } else { Constraint::Length(*w) });
        header.push(Cell::from(sorted(title, app, *key)));
    }
    let visible = usize::from(table_area.height.saturating_sub(1));
    let offset = scroll_to(app, app.fleet_sel, app.fleet_order.len(), visible);
    let rows: Vec<Row> = app
        .fleet_order
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .filter_map(|(pos, &i)| {
            let r = fleet.data.get(i)?;
            let row = row(r, now, usize::from(bar_w), usize::from(name_w));
            Some(if pos == app.fleet_sel { row.style(selected_style()) } else { row })
        })
        .collect();
    let table =
        Table::new(rows, widths).header(Row::new(header).style(header_style())).column_spacing(1);
    frame.render_widget(table, table_area);
}

fn sorted(title: &str, app: &App, key: FleetSort) -> String {
    if app.sort == key {
        format!("{title}{}", if app.sort_reversed { "▲" } else { "▼" })
    } else {
        title.to_owned()
    }
}

fn summary(rows: &[FleetRow], shown: usize, now: UnixNanos) -> Paragraph<'static> {
    let gpus: u32 = rows.iter().map(|r| r.gpus).sum();
    let busy: Vec<f64> = rows.iter().filter_map(|r| r.gpu_busy_mean).collect();
    let mean = (!busy.is_empty()).then(|| busy.iter().sum::<f64>() / busy.len() as f64);
    // Folded from +0: an empty f64 sum is -0, which prints as "-0W".
    let power = rows
        .iter()
        .filter_map(|r| r.power_w)
        .fold(None, |a: Option<f64>, w| Some(a.unwrap_or(0.0) + w));
    let lost: u32 = rows.iter().map(|r| r.health.gpus_lost).sum();
    let xid = rows.iter().filter(|r| r.health.last_xid.is_some()).count();
    let stale = rows.iter().filter(|r| is_stale(r, now)).count();
    let anomalous = rows.iter().filter(|r| r.health.anomalies > 0).count();
    let warn = |n: usize| {
        if n > 0 { Style::new().fg(Color::Red) } else { Style::new().fg(Color::DarkGray) }
    };
    let mut spans = vec![
        Span::raw(format!(" {} nodes", rows.len())),
        Span::styled(format!(" ({shown} shown)"), Style::new().fg(Color::DarkGray)),
    ];
    if gpus == 0 {
        // No GPU to be busy or draw power: say so rather than "0 GPUs busy - 0W".
        spans.push(Span::raw("  no GPU"));
    } else {
        spans.push(Span::raw(format!("  {gpus} GPUs  busy ")));
        spans.push(Span::styled(fmt::pct(mean), fmt::load_style(mean)));
        spans.push(Span::raw(format!("  {}", fmt::watts(power))));
    }
    spans.extend([
        Span::styled(format!("  lost {lost}"), warn(lost as usize)),
        Span::styled(format!("  xid {xid}"), warn(xid)),
        Span::styled(format!("  stale {stale}"), warn(stale)),
        Span::styled(format!("  anomalous {anomalous}"), warn(anomalous)),
    ]);
    Paragraph::new(Line::from(spans))
}

fn is_stale(r: &FleetRow, now: UnixNanos) -> bool {
    now.saturating_sub(r.health.last_seen) / NANOS_PER_SEC > NODE_STALE_SECS
}

/// The health cell: every problem, worst first, or `ok`.
pub fn health(r: &FleetRow, now: UnixNanos) -> Line<'static> {
    let mut spans = Vec::new();
    let red = Style::new().fg(Color::Red);
    let yellow = Style::new().fg(Color::Yellow);
    if r.health.gpus_lost > 0 {
        spans.push(Span::styled(format!("GPU lost {} ", r.health.gpus_lost), red));
    }
    if let Some(x) = r.health.last_xid {
        spans.push(Span::styled(format!("XID {} {} ago ", x.code, fmt::ago(now, x.at)), red));
    }
    if is_stale(r, now) {
        spans.push(Span::styled(format!("stale {} ", fmt::ago(now, r.health.last_seen)), yellow));
    }
    if r.health.gpus_degraded > 0 {
        spans.push(Span::styled(format!("degraded {} ", r.health.gpus_degraded), yellow));
    }
    if r.health.anomalies > 0 {
        spans.push(Span::styled(
            format!("anomaly {} ", r.health.anomalies),
            Style::new().fg(Color::Magenta),
        ));
    }
    if spans.is_empty() {
        spans.push(Span::styled("ok", Style::new().fg(Color::Green)));
    }
    Line::from(spans)
}

fn ratio(used: Option<u64>, total: Option<u64>) -> Option<f64> {
    match (used, total) {
        (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
        _ => None,
    }
}

fn row(r: &FleetRow, now: UnixNanos, bar_w: usize, name_w: usize) -> Row<'static> {
    let stale = is_stale(r, now);
    let gmem = ratio(r.gpu_mem_used, r.gpu_mem_total);
    let busy = if bar_w > 0 {
        Line::from(vec![
            Span::styled(fmt::bar(r.gpu_busy_mean, bar_w), fmt::load_style(r.gpu_busy_mean)),
            Span::raw(format!("{:>5}", fmt::pct(r.gpu_busy_mean))),
        ])
    } else {
        Line::styled(format!("{:>4}", fmt::pct(r.gpu_busy_mean)), fmt::load_style(r.gpu_busy_mean))
    };
    let mem_text = format!("{:>9}", fmt::mem_pair(r.gpu_mem_used, r.gpu_mem_total));
    let gpu_mem = if bar_w > 0 {
        Line::from(vec![
            Span::styled(fmt::bar(gmem, bar_w), fmt::load_style(gmem)),
            Span::raw(mem_text),
        ])
    } else {
        Line::raw(mem_text)
    };
    let name_style = if stale { Style::new().fg(Color::DarkGray) } else { Style::new() };
    // An anomalous node is marked before its name (the Node screen says why).
    let name = if r.health.anomalies > 0 {
        Line::from(vec![
            Span::styled(ANOMALY_MARK, Style::new().fg(Color::Magenta)),
            Span::styled(fmt::fit(&r.node, name_w.saturating_sub(1)), name_style),
        ])
    } else {
        Line::from(Span::styled(fmt::fit(&r.node, name_w), name_style))
    };
    if r.gpus == 0 {
        // A CPU-only node: its GPU columns say so once instead of a row of dashes.
        let gpu_w = if bar_w > 0 { bar_w + 9 } else { 9 };
        return Row::new(vec![
            Cell::from(name),
            Cell::from(format!("{:>3}", r.gpus)),
            Cell::from(""),
            Cell::from(""),
            Cell::from(Line::styled(
                format!("{:>gpu_w$}", "no GPU"),
                Style::new().fg(Color::DarkGray),
            )),
            Cell::from(""),
            Cell::from(""),
            Cell::from(format!("{:>4}", fmt::pct(r.cpu))),
            Cell::from(format!("{:>4}", fmt::pct(ratio(r.mem_used, r.mem_total)))),
            Cell::from(health(r, now)),
        ]);
    }
    Row::new(vec![
        Cell::from(name),
        Cell::from(format!("{:>3}", r.gpus)),
        Cell::from(busy),
        Cell::from(Line::styled(
            format!("{:>4}", fmt::pct(r.gpu_busy_max)),
            fmt::load_style(r.gpu_busy_max),
        )),
        Cell::from(gpu_mem),
        Cell::from(format!("{:>6}", fmt::watts(r.power_w))),
        Cell::from(Line::styled(
            format!("{:>4}", fmt::celsius(r.temp_max_c)),
            fmt::temp_style(r.temp_max_c),
        )),
        Cell::from(format!("{:>4}", fmt::pct(r.cpu))),
        Cell::from(format!("{:>4}", fmt::pct(ratio(r.mem_used, r.mem_total)))),
        Cell::from(health(r, now)),
    ])
}
