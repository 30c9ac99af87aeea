//! Number, time and bar formatting shared by the screens: short, fixed-width where a table
//! needs it, and `-` for a value that was not reported.

use ratatui::style::{Color, Style};

use crate::model::{NANOS_PER_SEC, Series, Unit, UnixNanos};

/// `62%`, or `-`.
pub fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

/// Bytes in the largest unit that keeps a short number: `512M`, `41G`, `1.9T`.
pub fn bytes(v: u64) -> String {
    const K: f64 = 1024.0;
    let v = v as f64;
    if v >= K * K * K * K {
        format!("{:.1}T", v / (K * K * K * K))
    } else if v >= K * K * K {
        format!("{:.0}G", v / (K * K * K))
    } else if v >= K * K {
        format!("{:.0}M", v / (K * K))
    } else {
        format!("{:.0}K", v / K)
    }
}

/// `used/total` in GiB, e.g. `41/80G`; `-` when either is missing.
pub fn mem_pair(used: Option<u64>, total: Option<u64>) -> String {
    const G: f64 = (1u64 << 30) as f64;
    match (used, total) {
        (Some(u), Some(t)) => format!("{:.0}/{:.0}G", u as f64 / G, t as f64 / G),
        (Some(u), None) => bytes(u),
        _ => "-".to_owned(),
    }
}

/// `350W`, `2.8kW`, or `-`.
pub fn watts(v: Option<f64>) -> String {
    // Adding +0 turns -0 (an empty float sum) into 0, which is what it means.
    match v.map(|w| w + 0.0) {
        Some(w) if w >= 1000.0 => format!("{:.1}kW", w / 1000.0),
        Some(w) => format!("{w:.0}W"),
        None => "-".to_owned(),
    }
}

/// `66C`, or `-`.
pub fn celsius(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |c| format!("{c:.0}C"))
}

/// A latency in seconds: `850µs`, `12ms`, `1.2s`, or `-`.
pub fn latency(v: Option<f64>) -> String {
    match v {
        Some(s) if s < 0.001 => format!("{:.0}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1e3),
        Some(s) => format!("{s:.1}s"),
        None => "-".to_owned(),
    }
}

/// A rate: `1.2k/s`, `312/s`, `0.5/s`, or `-`.
pub fn rate(v: Option<f64>) -> String {
    match v {
        Some(r) if r >= 1000.0 => format!("{:.1}k/s", r / 1000.0),
        Some(r) if r >= 10.0 => format!("{r:.0}/s"),
        Some(r) => format!("{r:.1}/s"),
        None => "-".to_owned(),
    }
}

/// A value in a unit.
pub fn value(v: Option<f64>, unit: Unit) -> String {
    match unit {
        Unit::Ratio => pct(v),
        Unit::Seconds => latency(v),
        Unit::Plain => match v {
            Some(v) if v.fract() == 0.0 && v.abs() < 1e9 => format!("{v:.0}"),
            Some(v) => format!("{v:.2}"),
            None => "-".to_owned(),
        },
    }
}

/// A duration in seconds as `42s`, `3m20s`, `19h59m`, `3d4h`.
pub fn span(secs: u64) -> String {
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d{}h", secs / 86_400, (secs % 86_400) / 3600)
    }
}

/// How long ago `t` was at `now`, e.g. `42s`.
pub fn ago(now: UnixNanos, t: UnixNanos) -> String {
    span(now.saturating_sub(t) / NANOS_PER_SEC)
}

/// How long from `now` until `t`, e.g. `18s`.
pub fn until(now: UnixNanos, t: UnixNanos) -> String {
    span(t.saturating_sub(now) / NANOS_PER_SEC)
}

/// Wall-clock time of day, UTC: `14:03:27`.
pub fn clock(t: UnixNanos) -> String {
    let s = t / NANOS_PER_SEC;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// A horizontal bar `width` cells wide filled to `ratio`, in eighths.
pub fn bar(ratio: Option<f64>, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let Some(r) = ratio else {
        return " ".repeat(width);
    };
    let eighths = (r.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let full = eighths / 8;
    let mut s = "█".repeat(full.min(width));
    if full < width {
        s.push(PARTS[eighths % 8]);
        s.push_str(&" ".repeat(width - full - 1));
    }
    s
}

/// A text sparkline `width` cells wide of `series` scaled to `0..=max` (bucket maxima, so a
/// spike never disappears when many points share a cell).
pub fn spark(series: &Series, width: usize, max: f64) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let pts = &series.points;
    if pts.is_empty() || width == 0 || max <= 0.0 {
        return " ".repeat(width);
    }
    let n = pts.len();
    let cells = width.min(n);
    let mut out = String::with_capacity(width * 3);
    // Right-align so the newest point is always at the right edge.
    out.push_str(&" ".repeat(width - cells));
    for c in 0..cells {
        let lo = c * n / cells;
        let hi = ((c + 1) * n / cells).max(lo + 1);
        let m = pts[lo..hi].iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let i = ((m / max).clamp(0.0, 1.0) * 7.0).round() as usize;
        out.push(LEVELS[i]);
    }
    out
}

/// Green, yellow, red by thresholds on a ratio.
pub fn load_style(v: Option<f64>) -> Style {
    match v {
        Some(v) if v >= 0.9 => Style::new().fg(Color::Red),
        Some(v) if v >= 0.7 => Style::new().fg(Color::Yellow),
        Some(_) => Style::new().fg(Color::Green),
        None => Style::new().fg(Color::DarkGray),
    }
}

/// Green, yellow, red by GPU temperature.
pub fn temp_style(v: Option<f64>) -> Style {
    match v {
        Some(v) if v >= 85.0 => Style::new().fg(Color::Red),
        Some(v) if v >= 75.0 => Style::new().fg(Color::Yellow),
        Some(_) => Style::new(),
        None => Style::new().fg(Color::DarkGray),
    }
}

/// Cut `s` to `width` characters, marking the cut with `…`.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else if width == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

/// `s` broken into lines of at most `width` characters, at spaces where it can be and inside
/// a word only when the word alone is wider.
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() <= width {
            line.push(' ');
            line.extend(word.iter());
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            let rest = word.split_off(width);
            lines.push(word.into_iter().collect());
            word = rest;
        }
        line = word.into_iter().collect();
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_eighths() {
        assert_eq!(bar(Some(0.0), 4), "    ");
        assert_eq!(bar(Some(1.0), 4), "████");
        assert_eq!(bar(Some(0.5), 4), "██  ");
        assert_eq!(bar(Some(0.5625), 4), "██▎ ");
        assert_eq!(bar(Some(7.0), 3), "███");
        assert_eq!(bar(None, 2), "  ");
    }

    #[test]
    fn spark_keeps_spikes_and_right_aligns() {
        let s = Series { points: (0..100).map(|i| (i, if i == 37 { 1.0 } else { 0.0 })).collect() };
        let line = spark(&s, 10, 1.0);
        assert_eq!(line.chars().count(), 10);
        assert_eq!(line.chars().filter(|c| *c == '█').count(), 1);
        let short = Series { points: vec![(0, 0.5), (1, 1.0)] };
        assert_eq!(spark(&short, 5, 1.0), "   ▅█");
    }

    #[test]
    fn units_read_short() {
        assert_eq!(latency(Some(0.0123)), "12ms");
        assert_eq!(latency(Some(0.0004)), "400µs");
        assert_eq!(watts(Some(2800.0)), "2.8kW");
        assert_eq!(watts(Some(-0.0)), "0W");
        assert_eq!(mem_pair(Some(41 << 30), Some(80 << 30)), "41/80G");
        assert_eq!(span(72_000), "20h00m");
        assert_eq!(clock(3_723 * NANOS_PER_SEC), "01:02:03");
        assert_eq!(fit("gpu-node-001", 6), "gpu-n…");
        assert_eq!(wrap("cannot read the size", 10), ["cannot", "read the", "size"]);
        assert_eq!(wrap("abcdefghij-kl x", 5), ["abcde", "fghij", "-kl x"]);
        assert_eq!(wrap("", 5), [""]);
        assert_eq!(value(Some(6.0), Unit::Plain), "6");
        assert_eq!(value(Some(0.26), Unit::Plain), "0.26");
    }
}
