//! Dashboard state and its two pure transitions: [`App::apply`] folds an [`Update`] from the
//! fetch loop into the state, [`App::handle_key`] turns a key press into a state change and an
//! [`Effect`]. Neither does I/O or reads a clock, so tests drive them directly; the terminal
//! loop in [`crate::run`] only forwards events here and draws what results.

use std::cell::Cell;
use std::cmp::Ordering;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::client::{Need, Snapshot, Update};
use crate::model::{
    ClusterStatus, DecisionView, FleetRow, ModelVersionView, ModelView, NodeDetail, RuleView,
    UnixNanos,
};

/// History windows `+`/`-` step through.
pub const ZOOM_STEPS: [Duration; 5] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
];

/// Points per history series the screens ask for: wider than any chart draws, so the source
/// downsamples instead of shipping one point per sample (3600 per series at 60 min).
pub const HISTORY_POINTS: u32 = 240;

/// The step between history points for a window.
pub fn history_step(window: Duration) -> Duration {
    window / HISTORY_POINTS
}

/// How many decision records the Decisions screen asks for: one scrollable page of the log.
pub const DECISIONS_PAGE: usize = 200;

/// The screens, in the order of their number keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// `1`: a row per node.
    Fleet,
    /// `2`: one node's GPUs, processes and services.
    Node,
    /// `3`: models and versions.
    Models,
    /// `4`: policy rules.
    Policies,
    /// `5`: the decision log.
    Decisions,
}

impl Tab {
    /// All tabs in number-key order.
    pub const ALL: [Tab; 5] = [Tab::Fleet, Tab::Node, Tab::Models, Tab::Policies, Tab::Decisions];

    /// The title shown in the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Fleet => "Fleet",
            Tab::Node => "Node",
            Tab::Models => "Models",
            Tab::Policies => "Policies",
            Tab::Decisions => "Decisions",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// The Fleet screen's sort key, cycled with `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetSort {
    /// Node name, ascending.
    Name,
    /// Mean GPU busy, busiest first.
    GpuBusy,
    /// Max GPU busy, busiest first.
    GpuBusyMax,
    /// GPU memory in use (fraction), fullest first.
    GpuMem,
    /// Power, highest first.
    Power,
    /// Hottest GPU first.
    Temp,
    /// Host CPU, busiest first.
    Cpu,
    /// Host memory (fraction), fullest first.
    Mem,
    /// Worst health first.
    Health,
}

impl FleetSort {
    const CYCLE: [FleetSort; 9] = [
        FleetSort::Name,
        FleetSort::GpuBusy,
        FleetSort::GpuBusyMax,
        FleetSort::GpuMem,
        FleetSort::Power,
        FleetSort::Temp,
        FleetSort::Cpu,
        FleetSort::Mem,
        FleetSort::Health,
    ];

    /// The next key in the `s` cycle.
    pub fn next(self) -> FleetSort {
        let i = Self::CYCLE.iter().position(|s| *s == self).unwrap_or(0);
        Self::CYCLE[(i + 1) % Self::CYCLE.len()]
    }

    /// Short label for the status line and the column header.
    pub fn label(self) -> &'static str {
        match self {
            FleetSort::Name => "node",
            FleetSort::GpuBusy => "busy",
            FleetSort::GpuBusyMax => "max",
            FleetSort::GpuMem => "gmem",
            FleetSort::Power => "power",
            FleetSort::Temp => "temp",
            FleetSort::Cpu => "cpu",
            FleetSort::Mem => "mem",
            FleetSort::Health => "health",
        }
    }
}

/// What the terminal loop must do after a key press.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond redrawing.
    None,
    /// Leave the dashboard.
    Quit,
    /// The data the screen shows changed: tell the fetch loop.
    Need(Need),
}

/// The collector connection as the dashboard knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No answer yet.
    Connecting,
    /// The last fetch succeeded.
    Up {
        /// When it succeeded.
        last_ok: UnixNanos,
    },
    /// Fetches fail; the loop retries with backoff.
    Down {
        /// First failure of this outage.
        since: UnixNanos,
        /// Last success before the outage, if any.
        last_ok: Option<UnixNanos>,
        /// The last error, as a sentence.
        error: String,
        /// When the next attempt happens.
        retry_at: UnixNanos,
        /// Failed attempts in this outage.
        attempts: u32,
    },
}

/// Data of one screen with the time it was fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched<T> {
    /// The data.
    pub data: T,
    /// When the source answered.
    pub at: UnixNanos,
}

/// The whole dashboard state.
#[derive(Debug)]
pub struct App {
    /// Screen on show.
    pub tab: Tab,
    /// Help overlay open.
    pub help: bool,
    /// History window for charts.
    pub zoom: Duration,
    /// Collector URL, shown in the title.
    pub collector: String,
    /// Connection status.
    pub connection: Connection,
    /// The collector's place in its cluster, for the header; `None` while unknown (or for a
    /// collector from before clustering).
    pub cluster: Option<ClusterStatus>,
    /// Fleet rows as received.
    pub fleet: Option<Fetched<Vec<FleetRow>>>,
    /// Indices into `fleet` after filter and sort.
    pub fleet_order: Vec<usize>,
    /// Fleet sort key.
    pub sort: FleetSort,
    /// Reverse the sort.
    pub sort_reversed: bool,
    /// Fleet filter text (case-insensitive substring of name or health).
    pub filter: String,
    /// The filter line has the keyboard.
    pub filter_editing: bool,
    /// Selected position in `fleet_order`.
    pub fleet_sel: usize,
    /// The node the Node screen shows.
    pub detail_node: Option<String>,
    /// Its data, when it has arrived.
    pub node: Option<Fetched<NodeDetail>>,
    /// The source said the chosen node does not exist.
    pub node_missing: Option<String>,
    /// Selected GPU on the Node screen.
    pub gpu_sel: usize,
    /// Models.
    pub models: Option<Fetched<Vec<ModelView>>>,
    /// Selected (model, version) row on the Models screen, as a position in [`App::model_rows`].
    pub model_sel: usize,
    /// Policy rules.
    pub policies: Option<Fetched<Vec<RuleView>>>,
    /// Selected rule.
    pub policy_sel: usize,
    /// Decisions, newest first.
    pub decisions: Option<Fetched<Vec<DecisionView>>>,
    /// Selected decision.
    pub decision_sel: usize,
    /// The selected decision's explanation fills the screen.
    pub decision_expanded: bool,
    /// First visible row of the current list; kept by the view so the selection stays in sight.
    pub scroll: Cell<usize>,
}

impl App {
    /// A fresh dashboard pointed at `collector`, on the Fleet screen, 15-minute window.
    pub fn new(collector: impl Into<String>) -> App {
        App {
            tab: Tab::Fleet,
            help: false,
            zoom: ZOOM_STEPS[2],
            collector: collector.into(),
            connection: Connection::Connecting,
            cluster: None,
            fleet: None,
            fleet_order: Vec::new(),
            sort: FleetSort::Name,
            sort_reversed: false,
            filter: String::new(),
            filter_editing: false,
            fleet_sel: 0,
            detail_node: None,
            node: None,
            node_missing: None,
            gpu_sel: 0,
            models: None,
            model_sel: 0,
            policies: None,
            policy_sel: 0,
            decisions: None,
            decision_sel: 0,
            decision_expanded: false,
            scroll: Cell::new(0),
        }
    }

    /// What the current screen shows, and so what the fetch loop should ask for.
    pub fn need(&self) -> Need {
        match self.tab {
            Tab::Fleet => Need::Fleet,
            Tab::Node => match &self.detail_node {
                Some(node) => Need::Node {
                    node: node.clone(),
                    window: self.zoom,
                    step: history_step(self.zoom),
                },
                // Nothing chosen yet: the screen offers the fleet list to choose from.
                None => Need::Fleet,
            },
            Tab::Models => Need::Models { window: self.zoom, step: history_step(self.zoom) },
            Tab::Policies => Need::Policies,
            Tab::Decisions => Need::Decisions { limit: DECISIONS_PAGE },
        }
    }

    /// Fold one update from the fetch loop into the state.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Data { at, snapshot } => {
                self.connection = Connection::Up { last_ok: at };
                self.apply_snapshot(at, snapshot);
            }
            Update::Connected { at } => self.connection = Connection::Up { last_ok: at },
            Update::NotFound { at, what } => {
                self.connection = Connection::Up { last_ok: at };
                if self.tab == Tab::Node {
                    self.node_missing = Some(what);
                }
            }
            Update::Disconnected { at, error, retry_at } => {
                self.connection = match &self.connection {
                    Connection::Down { since, last_ok, attempts, .. } => Connection::Down {
                        since: *since,
                        last_ok: *last_ok,
                        error,
                        retry_at,
                        attempts: attempts.saturating_add(1),
                    },
                    Connection::Up { last_ok } => Connection::Down {
                        since: at,
                        last_ok: Some(*last_ok),
                        error,
                        retry_at,
                        attempts: 1,
                    },
                    Connection::Connecting => {
                        Connection::Down { since: at, last_ok: None, error, retry_at, attempts: 1 }
                    }
                };
            }
            // Says nothing of the connection: only the screen's fetches judge that.
            Update::Cluster(view) => self.cluster = view,
        }
    }

    fn apply_snapshot(&mut self, at: UnixNanos, snapshot: Snapshot) {
        match snapshot {
            Snapshot::Fleet(rows) => {
                let keep = self.selected_node_name().map(str::to_owned);
                self.fleet = Some(Fetched { data: rows, at });
                self.reorder_fleet(keep.as_deref());
            }
            Snapshot::Node(detail) => {
                // A late answer for a node we left is dropped, not shown under the wrong name.
                if self.detail_node.as_deref() == Some(detail.node.as_str()) {
                    self.node_missing = None;
                    self.gpu_sel = self.gpu_sel.min(detail.gpus.len().saturating_sub(1));
                    self.node = Some(Fetched { data: detail, at });
                }
            }
            Snapshot::Models(models) => {
                self.models = Some(Fetched { data: models, at });
                self.model_sel = self.model_sel.min(self.model_rows().len().saturating_sub(1));
            }
            Snapshot::Policies(rules) => {
                self.policy_sel = self.policy_sel.min(rules.len().saturating_sub(1));
                self.policies = Some(Fetched { data: rules, at });
            }
            Snapshot::Decisions(list) => {
                let keep = self.selected_decision().map(|d| d.id.clone());
                self.decision_sel = keep
                    .and_then(|id| list.iter().position(|d| d.id == id))
                    .unwrap_or(self.decision_sel)
                    .min(list.len().saturating_sub(1));
                self.decisions = Some(Fetched { data: list, at });
            }
        }
    }

    /// Turn a key press into a state change and what the loop must do about it.
    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        if key.kind == KeyEventKind::Release {
            return Effect::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        let before = self.need();
        if self.filter_editing {
            self.filter_key(key);
            return Effect::None;
        }
        if self.help {
            match key.code {
                KeyCode::Char('q') => return Effect::Quit,
                KeyCode::Char('?') | KeyCode::Esc | KeyCode::Enter => self.help = false,
                _ => {}
            }
            return Effect::None;
        }
        match key.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(c @ '1'..='5') => {
                let i = usize::from(c as u8 - b'1');
                self.switch_to(Tab::ALL[i]);
            }
            KeyCode::Tab => self.switch_to(Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()]),
            KeyCode::BackTab => {
                self.switch_to(Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()])
            }
            KeyCode::Char('/') if self.tab == Tab::Fleet => self.filter_editing = true,
            KeyCode::Char('s') if self.tab == Tab::Fleet => {
                self.sort = self.sort.next();
                self.sort_reversed = false;
                self.reorder_keep_selection();
            }
            KeyCode::Char('r') if self.tab == Tab::Fleet => {
                self.sort_reversed = !self.sort_reversed;
                self.reorder_keep_selection();
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(isize::MAX / 2),
            KeyCode::Enter => self.enter(),
            KeyCode::Esc => self.escape(),
            KeyCode::Char('+') | KeyCode::Char('=') => self.zoom_step(-1),
            KeyCode::Char('-') | KeyCode::Char('_') => self.zoom_step(1),
            _ => {}
        }
        let after = self.need();
        if after != before { Effect::Need(after) } else { Effect::None }
    }

    fn filter_key(&mut self, key: KeyEvent) {
        let keep = self.selected_node_name().map(str::to_owned);
        match key.code {
            KeyCode::Enter => self.filter_editing = false,
            KeyCode::Esc => {
                self.filter.clear();
                self.filter_editing = false;
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
            _ => return,
        }
        self.reorder_fleet(keep.as_deref());
    }

    fn switch_to(&mut self, tab: Tab) {
        if tab == Tab::Node && self.detail_node.is_none() {
            self.detail_node = self.selected_node_name().map(str::to_owned);
        }
        if tab != self.tab {
            self.scroll.set(0);
        }
        self.tab = tab;
    }

    fn enter(&mut self) {
        match self.tab {
            Tab::Fleet => {
                if let Some(name) = self.selected_node_name().map(str::to_owned) {
                    if self.detail_node.as_deref() != Some(name.as_str()) {
                        self.node = None;
                        self.node_missing = None;
                        self.gpu_sel = 0;
                    }
                    self.detail_node = Some(name);
                    self.switch_to(Tab::Node);
                }
            }
            Tab::Decisions => {
                if self.selected_decision().is_some() {
                    self.decision_expanded = !self.decision_expanded;
                }
            }
            Tab::Node | Tab::Models | Tab::Policies => {}
        }
    }

    fn escape(&mut self) {
        match self.tab {
            Tab::Node => self.switch_to(Tab::Fleet),
            Tab::Decisions => self.decision_expanded = false,
            Tab::Fleet if !self.filter.is_empty() => {
                let keep = self.selected_node_name().map(str::to_owned);
                self.filter.clear();
                self.reorder_fleet(keep.as_deref());
            }
            _ => {}
        }
    }

    fn zoom_step(&mut self, dir: isize) {
        let i = ZOOM_STEPS.iter().position(|z| *z >= self.zoom).unwrap_or(ZOOM_STEPS.len() - 1);
        let j = i.saturating_add_signed(dir).min(ZOOM_STEPS.len() - 1);
        self.zoom = ZOOM_STEPS[j];
    }

    fn move_selection(&mut self, delta: isize) {
        let (sel, len) = match self.tab {
            Tab::Fleet => (&mut self.fleet_sel, self.fleet_order.len()),
            Tab::Node => (&mut self.gpu_sel, self.node.as_ref().map_or(0, |n| n.data.gpus.len())),
            Tab::Models => {
                let len = self.model_rows().len();
                (&mut self.model_sel, len)
            }
            Tab::Policies => {
                (&mut self.policy_sel, self.policies.as_ref().map_or(0, |p| p.data.len()))
            }
            Tab::Decisions => {
                (&mut self.decision_sel, self.decisions.as_ref().map_or(0, |d| d.data.len()))
            }
        };
        *sel = sel.saturating_add_signed(delta).min(len.saturating_sub(1));
    }

    /// The node under the Fleet cursor.
    pub fn selected_node_name(&self) -> Option<&str> {
        let fleet = self.fleet.as_ref()?;
        let i = *self.fleet_order.get(self.fleet_sel)?;
        fleet.data.get(i).map(|r| r.node.as_str())
    }

    /// The decision under the cursor.
    pub fn selected_decision(&self) -> Option<&DecisionView> {
        self.decisions.as_ref()?.data.get(self.decision_sel)
    }

    /// The Models screen's rows: every (model, version) pair, models in received order.
    pub fn model_rows(&self) -> Vec<(&ModelView, &ModelVersionView)> {
        self.models
            .as_ref()
            .map(|m| {
                m.data
                    .iter()
                    .flat_map(|model| model.versions.iter().map(move |v| (model, v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn reorder_keep_selection(&mut self) {
        let keep = self.selected_node_name().map(str::to_owned);
        self.reorder_fleet(keep.as_deref());
    }

    /// Recompute the filtered, sorted order and put the cursor back on `keep` if still shown.
    fn reorder_fleet(&mut self, keep: Option<&str>) {
        let Some(fleet) = &self.fleet else {
            self.fleet_order.clear();
            self.fleet_sel = 0;
            return;
        };
        let rows = &fleet.data;
        let needle = self.filter.to_lowercase();
        let mut order: Vec<usize> = (0..rows.len())
            .filter(|&i| needle.is_empty() || row_matches(&rows[i], &needle))
            .collect();
        let sort = self.sort;
        order.sort_by(|&a, &b| {
            let o = compare_rows(&rows[a], &rows[b], sort);
            // Ties fall back to the name so the order is stable between refreshes.
            o.then_with(|| rows[a].node.cmp(&rows[b].node))
        });
        if self.sort_reversed {
            order.reverse();
        }
        self.fleet_sel = keep
            .and_then(|name| order.iter().position(|&i| rows[i].node == name))
            .unwrap_or(self.fleet_sel)
            .min(order.len().saturating_sub(1));
        self.fleet_order = order;
    }
}

/// Words a filter can match besides the node name.
pub fn health_keywords(row: &FleetRow) -> String {
    let mut words = String::new();
    if row.health.gpus_lost > 0 {
        words.push_str("lost ");
    }
    if row.health.gpus_degraded > 0 {
        words.push_str("degraded ");
    }
    if let Some(x) = row.health.last_xid {
        words.push_str(&format!("xid xid{} ", x.code));
    }
    if row.health.anomalies > 0 {
        words.push_str("anomaly ");
    }
    if words.is_empty() {
        words.push_str("ok");
    }
    words
}

fn row_matches(row: &FleetRow, needle: &str) -> bool {
    row.node.to_lowercase().contains(needle) || health_keywords(row).contains(needle)
}

/// Descending by a value, `None` last.
fn desc<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn fraction(used: Option<u64>, total: Option<u64>) -> Option<f64> {
    match (used, total) {
        (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
        _ => None,
    }
}

/// How bad a node's health is, for sorting: lost GPUs, then XIDs, then degraded, then
/// anomalies, then age.
fn severity(row: &FleetRow) -> (u32, u8, u32, u32, std::cmp::Reverse<UnixNanos>) {
    (
        row.health.gpus_lost,
        u8::from(row.health.last_xid.is_some()),
        row.health.gpus_degraded,
        row.health.anomalies,
        std::cmp::Reverse(row.health.last_seen),
    )
}

fn compare_rows(a: &FleetRow, b: &FleetRow, sort: FleetSort) -> Ordering {
    match sort {
        FleetSort::Name => a.node.cmp(&b.node),
        FleetSort::GpuBusy => desc(a.gpu_busy_mean, b.gpu_busy_mean),
        FleetSort::GpuBusyMax => desc(a.gpu_busy_max, b.gpu_busy_max),
        FleetSort::GpuMem => desc(
            fraction(a.gpu_mem_used, a.gpu_mem_total),
            fraction(b.gpu_mem_used, b.gpu_mem_total),
        ),
        FleetSort::Power => desc(a.power_w, b.power_w),
        FleetSort::Temp => desc(a.temp_max_c, b.temp_max_c),
        FleetSort::Cpu => desc(a.cpu, b.cpu),
        FleetSort::Mem => {
            desc(fraction(a.mem_used, a.mem_total), fraction(b.mem_used, b.mem_total))
        }
        FleetSort::Health => severity(b).cmp(&severity(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeFleet;
    use crate::model::NANOS_PER_SEC;
    use crossterm::event::KeyModifiers;

    const NOW: UnixNanos = 1_700_000_000 * NANOS_PER_SEC;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    fn code(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    /// An app that has received what its screen needs from a 12×4 fake fleet.
    fn fed() -> (App, FakeFleet) {
        let fleet = FakeFleet::new(12, 4);
        let mut app = App::new("http://127.0.0.1:7700");
        feed(&mut app, &fleet);
        (app, fleet)
    }

    fn feed(app: &mut App, fleet: &FakeFleet) {
        let snapshot = fleet.answer(&app.need(), NOW).unwrap();
        app.apply(Update::Data { at: NOW, snapshot });
    }

    fn shown(app: &App) -> Vec<String> {
        let rows = &app.fleet.as_ref().unwrap().data;
        app.fleet_order.iter().map(|&i| rows[i].node.clone()).collect()
    }

    #[test]
    fn number_keys_switch_tabs_and_ask_for_that_screen() {
        let (mut app, _) = fed();
        assert_eq!(
            app.handle_key(key('3')),
            Effect::Need(Need::Models { window: ZOOM_STEPS[2], step: history_step(ZOOM_STEPS[2]) })
        );
        assert_eq!(app.tab, Tab::Models);
        assert_eq!(app.handle_key(key('4')), Effect::Need(Need::Policies));
        assert_eq!(
            app.handle_key(key('5')),
            Effect::Need(Need::Decisions { limit: DECISIONS_PAGE })
        );
        assert_eq!(app.handle_key(key('1')), Effect::Need(Need::Fleet));
        // Same tab again: nothing new to fetch.
        assert_eq!(app.handle_key(key('1')), Effect::None);
        assert_eq!(
            app.handle_key(code(KeyCode::Tab)),
            Effect::Need(Need::Node {
                node: "gpu-node-001".into(),
                window: ZOOM_STEPS[2],
                step: history_step(ZOOM_STEPS[2])
            })
        );
        assert_eq!(app.tab, Tab::Node);
    }

    #[test]
    fn enter_opens_the_selected_node_and_esc_returns() {
        let (mut app, _) = fed();
        app.handle_key(key('j'));
        app.handle_key(code(KeyCode::Down));
        app.handle_key(key('k'));
        assert_eq!(app.selected_node_name(), Some("gpu-node-002"));
        let effect = app.handle_key(code(KeyCode::Enter));
        assert_eq!(app.tab, Tab::Node);
        assert!(
            matches!(effect, Effect::Need(Need::Node { ref node, .. }) if node == "gpu-node-002")
        );
        assert_eq!(app.handle_key(code(KeyCode::Esc)), Effect::Need(Need::Fleet));
        assert_eq!(app.tab, Tab::Fleet);
    }

    #[test]
    fn selection_stops_at_the_ends() {
        let (mut app, _) = fed();
        app.handle_key(key('k'));
        assert_eq!(app.fleet_sel, 0);
        app.handle_key(key('G'));
        assert_eq!(app.fleet_sel, 11);
        app.handle_key(code(KeyCode::PageDown));
        assert_eq!(app.fleet_sel, 11);
        app.handle_key(key('g'));
        assert_eq!(app.fleet_sel, 0);
    }

    #[test]
    fn filter_narrows_by_name_and_health_and_esc_clears() {
        let (mut app, _) = fed();
        assert_eq!(app.handle_key(key('/')), Effect::None);
        assert!(app.filter_editing);
        for c in "node-01".chars() {
            app.handle_key(key(c));
        }
        // While typing, q is text, not quit.
        assert_eq!(shown(&app), ["gpu-node-010", "gpu-node-011", "gpu-node-012"]);
        app.handle_key(code(KeyCode::Enter));
        assert!(!app.filter_editing);
        assert_eq!(app.filter, "node-01");
        app.handle_key(code(KeyCode::Esc));
        assert_eq!(shown(&app).len(), 12);

        app.handle_key(key('/'));
        for c in "xid".chars() {
            app.handle_key(key(c));
        }
        assert_eq!(shown(&app), ["gpu-node-005"]);
        app.handle_key(code(KeyCode::Backspace));
        app.handle_key(code(KeyCode::Backspace));
        app.handle_key(code(KeyCode::Backspace));
        app.handle_key(key('q'));
        assert!(app.filter_editing, "q while filtering is a character");
        assert_eq!(app.filter, "q");
    }

    #[test]
    fn sort_cycles_and_keeps_the_cursor_on_the_same_node() {
        let (mut app, _) = fed();
        app.handle_key(key('j'));
        app.handle_key(key('j'));
        let before = app.selected_node_name().map(str::to_owned);
        assert_eq!(app.handle_key(key('s')), Effect::None);
        assert_eq!(app.sort, FleetSort::GpuBusy);
        assert_eq!(app.selected_node_name().map(str::to_owned), before);
        let rows = &app.fleet.as_ref().unwrap().data;
        let busy: Vec<f64> =
            app.fleet_order.iter().map(|&i| rows[i].gpu_busy_mean.unwrap()).collect();
        assert!(busy.windows(2).all(|w| w[0] >= w[1]), "busiest first: {busy:?}");
        app.handle_key(key('r'));
        let rows = &app.fleet.as_ref().unwrap().data;
        let busy: Vec<f64> =
            app.fleet_order.iter().map(|&i| rows[i].gpu_busy_mean.unwrap()).collect();
        assert!(busy.windows(2).all(|w| w[0] <= w[1]), "reversed: {busy:?}");
        for _ in 0..8 {
            app.handle_key(key('s'));
        }
        assert_eq!(app.sort, FleetSort::Name, "the cycle comes back round");
    }

    #[test]
    fn health_sort_puts_the_worst_first() {
        let (mut app, _) = fed();
        while app.sort != FleetSort::Health {
            app.handle_key(key('s'));
        }
        // gpu-node-008 lost a GPU, gpu-node-005 saw an XID, gpu-node-012 has a degraded GPU.
        assert_eq!(&shown(&app)[..3], ["gpu-node-008", "gpu-node-005", "gpu-node-012"]);
    }

    #[test]
    fn zoom_steps_between_5_and_60_minutes_and_refetches_histories() {
        let (mut app, _) = fed();
        assert_eq!(app.handle_key(key('-')), Effect::None, "the fleet shows no history");
        assert_eq!(app.zoom, ZOOM_STEPS[3]);
        app.handle_key(code(KeyCode::Enter));
        let e = app.handle_key(key('-'));
        assert_eq!(app.zoom, Duration::from_secs(3600));
        assert!(
            matches!(e, Effect::Need(Need::Node { window, .. }) if window == Duration::from_secs(3600))
        );
        assert_eq!(app.handle_key(key('-')), Effect::None, "60 minutes is the widest");
        for _ in 0..6 {
            app.handle_key(key('+'));
        }
        assert_eq!(app.zoom, Duration::from_secs(300));
    }

    #[test]
    fn help_overlay_swallows_keys_until_closed() {
        let (mut app, _) = fed();
        app.handle_key(key('?'));
        assert!(app.help);
        assert_eq!(app.handle_key(key('3')), Effect::None);
        assert_eq!(app.tab, Tab::Fleet);
        app.handle_key(code(KeyCode::Esc));
        assert!(!app.help);
        app.handle_key(key('?'));
        assert_eq!(app.handle_key(key('q')), Effect::Quit);
        assert_eq!(
            app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Effect::Quit
        );
    }

    #[test]
    fn a_late_answer_for_another_node_is_dropped() {
        let (mut app, fleet) = fed();
        app.handle_key(code(KeyCode::Enter));
        let other = fleet
            .node_detail("gpu-node-003", NOW, ZOOM_STEPS[2], history_step(ZOOM_STEPS[2]))
            .unwrap();
        app.apply(Update::Data { at: NOW, snapshot: Snapshot::Node(other) });
        assert!(app.node.is_none());
        feed(&mut app, &fleet);
        assert_eq!(app.node.as_ref().unwrap().data.node, "gpu-node-001");
    }

    #[test]
    fn outage_keeps_its_start_and_counts_attempts() {
        let (mut app, _) = fed();
        let s = NANOS_PER_SEC;
        app.apply(Update::Disconnected {
            at: NOW + s,
            error: "refused".into(),
            retry_at: NOW + 2 * s,
        });
        app.apply(Update::Disconnected {
            at: NOW + 2 * s,
            error: "refused again".into(),
            retry_at: NOW + 4 * s,
        });
        assert_eq!(
            app.connection,
            Connection::Down {
                since: NOW + s,
                last_ok: Some(NOW),
                error: "refused again".into(),
                retry_at: NOW + 4 * s,
                attempts: 2
            }
        );
        app.apply(Update::Connected { at: NOW + 5 * s });
        assert_eq!(app.connection, Connection::Up { last_ok: NOW + 5 * s });
        // The data kept through the outage is still there to show.
        assert!(app.fleet.is_some());
    }

    #[test]
    fn a_cluster_update_sets_the_header_view_and_leaves_the_connection_alone() {
        use crate::model::{ClusterRole, ClusterStatus};
        let (mut app, _) = fed();
        let before = app.connection.clone();
        let view = ClusterStatus {
            member: "collector-a".into(),
            role: ClusterRole::Leader,
            leader: Some("collector-a".into()),
            members: vec!["collector-a".into(), "collector-b".into()],
            term: 12,
            lease_ttl_s: 10,
            backend: "etcd".into(),
        };
        app.apply(Update::Cluster(Some(view.clone())));
        assert_eq!(app.cluster, Some(view));
        assert_eq!(app.connection, before);
        // Unknown again (the ask failed): no view, and still no outage.
        app.apply(Update::Cluster(None));
        assert_eq!(app.cluster, None);
        assert_eq!(app.connection, before);
        assert!(app.fleet.is_some());
    }

    #[test]
    fn decision_selection_follows_the_record_as_new_ones_arrive() {
        let (mut app, fleet) = fed();
        app.handle_key(key('5'));
        feed(&mut app, &fleet);
        app.handle_key(key('j'));
        let id = app.selected_decision().unwrap().id.clone();
        // Thirty seconds later a new decision is on top; the cursor stays on the same record.
        let later = fleet.decisions(NOW + 30 * NANOS_PER_SEC, DECISIONS_PAGE);
        app.apply(Update::Data {
            at: NOW + 30 * NANOS_PER_SEC,
            snapshot: Snapshot::Decisions(later),
        });
        assert_eq!(app.selected_decision().unwrap().id, id);
        assert_eq!(app.decision_sel, 2);
        app.handle_key(code(KeyCode::Enter));
        assert!(app.decision_expanded);
        app.handle_key(code(KeyCode::Esc));
        assert!(!app.decision_expanded);
    }
}
