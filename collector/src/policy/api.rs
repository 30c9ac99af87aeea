//! HTTP API of the policy engine: `/api/v1/policies`, `/api/v1/decisions`, `/api/v1/actions`.
//! The types are public so the dashboard deserialises the same shapes.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::check::Diagnostic;
use super::engine::{DEFAULT_RETRAIN_COOLDOWN, Decision, RuleKind};
use super::forecast::ForecastPoint;
use super::format::{ForecastMode, Mode};
use super::persist::{ActionRecord, LedgerError};
use super::runtime::PolicyRuntime;
use super::signal::nanos;

/// A rule's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleState {
    /// Nothing pending.
    Ok,
    /// The condition holds, waiting for its `for`.
    Pending,
    /// Firing (acting, or panic mode for scaling).
    Firing,
    /// Cooling down after an action.
    CoolingDown,
    /// Dry run: records only.
    DryRun,
}

/// One rule in `/api/v1/policies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// Rule name (`scale` for scaling).
    pub rule: String,
    /// Scaling or retraining.
    pub kind: RuleKind,
    /// Mode.
    pub mode: Mode,
    /// State.
    pub state: RuleState,
    /// Since when the condition holds, Unix nanos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<u64>,
    /// Cooling down until, Unix nanos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooling_down_until: Option<u64>,
    /// The last recorded decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<Decision>,
    /// Why the rule cannot act now, e.g. "cannot read the current size: …" (a decision made
    /// without the target's size is not recorded, so this is the only place it shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Since when the problem holds, Unix nanos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_since: Option<u64>,
    /// Scaling rules: the target's provisioned replicas as its resizer last reported them
    /// (absent for a size read from a signal, or before the first read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<u32>,
    /// Scaling rules: of the provisioned replicas, the ready ones (absent where the resizer
    /// cannot tell). A dashboard shows `ready/provisioned`; the difference is warming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<u32>,
    /// Scaling rules with `scale.model`: the capacity model's fit and how well it predicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelStatus>,
}

/// A scaling rule's capacity model (`scale.model`), as the engine holds it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// The current fit (per-replica throughput, service time, when and on how many samples);
    /// absent until the model has seen enough load to fit, and the tracked metrics size the
    /// target meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<super::model::Fit>,
    /// Samples held now (not persisted: after a restart the model fills them again).
    pub samples: usize,
    /// Mean absolute percentage error of the predicted p95 against the observed one, as a
    /// fraction (decayed); absent before the first scored prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mape: Option<f64>,
}

/// One policy in `/api/v1/policies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// Name.
    pub name: String,
    /// Source file.
    pub file: String,
    /// Target name.
    pub target: String,
    /// Rules.
    pub rules: Vec<RuleStatus>,
    /// The load forecast of `scale.forecast`, with its error so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastStatus>,
}

/// The forecast of one target in `/api/v1/policies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForecastStatus {
    /// `floor` or `forecast-only`.
    pub mode: ForecastMode,
    /// The latest forecast (load, time forecast for, size asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<ForecastPoint>,
    /// Mean absolute percentage error of scored forecasts (fraction), recent-weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mape: Option<f64>,
    /// The same for the naive last-value forecast, for comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naive_mape: Option<f64>,
    /// (Decayed) number of scored forecasts.
    pub scored: f64,
    /// End of the history the model was fitted on, Unix nanos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_until: Option<u64>,
    /// Why there is no forecast, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `GET /api/v1/policies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoliciesResponse {
    /// Policies in force.
    pub policies: Vec<PolicyStatus>,
    /// Errors of the last refused reload (the set in force is the last good one).
    pub errors: Vec<Diagnostic>,
    /// Warnings of the set in force.
    pub warnings: Vec<Diagnostic>,
    /// Time of the last reload attempt, Unix nanos.
    pub last_reload: u64,
}

/// `GET /api/v1/decisions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionsResponse {
    /// Newest first.
    pub decisions: Vec<Decision>,
}

/// `GET /api/v1/actions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionsResponse {
    /// Newest first, with job lifecycle.
    pub actions: Vec<ActionRecord>,
}

/// Query of `/api/v1/decisions` and `/api/v1/actions`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Only this policy.
    pub policy: Option<String>,
    /// Only this rule.
    pub rule: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// The policy API routes, with the runtime as state.
pub fn router(runtime: PolicyRuntime) -> Router {
    Router::new()
        .route("/api/v1/policies", get(policies))
        .route("/api/v1/decisions", get(decisions))
        .route("/api/v1/actions", get(actions))
        .with_state(runtime)
}

/// The `/api/v1/policies` body at `now`.
pub fn policies_status(rt: &PolicyRuntime, now: u64) -> PoliciesResponse {
    let snap = rt.snapshot();
    let mut out = Vec::new();
    for p in &snap.policies {
        let st = snap.states.get(p.name()).cloned().unwrap_or_default();
        let mut rules = Vec::new();
        if let Some(scale) = &p.doc.spec.scale {
            let mode = scale.mode.unwrap_or(p.doc.spec.mode);
            let pending_since = st.scale.steps.values().filter_map(|c| c.pending_since).min();
            let firing = st.scale.steps.values().any(|c| c.firing)
                || st.scale.panic_until.is_some_and(|u| now < u);
            let cd = scale.cooldown.clone().unwrap_or_default();
            let longest = cd.scale_up.max(cd.scale_down).map(|d| d.get()).unwrap_or_default();
            let until = st
                .scale
                .events
                .last()
                .map(|e| e.time + nanos(longest))
                .filter(|u| *u > now && !longest.is_zero());
            let state = if mode == Mode::DryRun {
                RuleState::DryRun
            } else if firing {
                RuleState::Firing
            } else if until.is_some() {
                RuleState::CoolingDown
            } else if pending_since.is_some() {
                RuleState::Pending
            } else {
                RuleState::Ok
            };
            rules.push(RuleStatus {
                rule: "scale".into(),
                kind: RuleKind::Scale,
                mode,
                state,
                pending_since,
                cooling_down_until: until,
                last_decision: snap.last.get(&(p.name().to_owned(), "scale".to_owned())).cloned(),
                problem: snap.problems.get(p.name()).map(|(why, _)| why.clone()),
                problem_since: snap.problems.get(p.name()).map(|(_, since)| *since),
                provisioned: snap.sizes.get(p.name()).map(|s| s.provisioned),
                ready: snap.sizes.get(p.name()).and_then(|s| s.ready),
                model: scale.model.as_ref().map(|_| ModelStatus {
                    fit: st.scale.model.fit,
                    samples: st.scale.model.samples.len(),
                    mape: st.scale.model.mape(),
                }),
            });
        }
        for r in &p.doc.spec.retrain {
            let mode = r.mode.unwrap_or(p.doc.spec.mode);
            let rs = st.retrain.get(&r.name).cloned().unwrap_or_default();
            let cooldown = r.cooldown.map(|c| c.get()).unwrap_or(DEFAULT_RETRAIN_COOLDOWN);
            let until = rs.runs.last().map(|t| t + nanos(cooldown)).filter(|u| *u > now);
            let state = if mode == Mode::DryRun {
                RuleState::DryRun
            } else if until.is_some() {
                RuleState::CoolingDown
            } else if rs.condition.firing {
                RuleState::Firing
            } else if rs.condition.pending_since.is_some() {
                RuleState::Pending
            } else {
                RuleState::Ok
            };
            rules.push(RuleStatus {
                rule: r.name.clone(),
                kind: RuleKind::Retrain,
                mode,
                state,
                pending_since: rs.condition.pending_since,
                cooling_down_until: until,
                last_decision: snap.last.get(&(p.name().to_owned(), r.name.clone())).cloned(),
                problem: None,
                problem_since: None,
                provisioned: None,
                ready: None,
                model: None,
            });
        }
        out.push(PolicyStatus {
            name: p.name().to_owned(),
            file: p.file.display().to_string(),
            target: p.doc.spec.target.name.clone(),
            rules,
            forecast: p.doc.spec.scale.as_ref().and_then(|s| s.forecast.as_ref()).map(|fc| {
                let f = &st.scale.forecast;
                ForecastStatus {
                    mode: fc.mode,
                    last: f.last,
                    mape: f.score.mape(),
                    naive_mape: f.score.naive_mape(),
                    scored: f.score.scored,
                    fitted_until: f.fitted_until,
                    problem: f.problem.clone(),
                }
            }),
        });
    }
    PoliciesResponse {
        policies: out,
        errors: snap.errors,
        warnings: snap.warnings,
        last_reload: snap.last_reload,
    }
}

async fn policies(State(rt): State<PolicyRuntime>) -> Json<PoliciesResponse> {
    let now = rt.now();
    Json(policies_status(&rt, now))
}

async fn decisions(
    State(rt): State<PolicyRuntime>,
    Query(q): Query<ListQuery>,
) -> Result<Json<DecisionsResponse>, (StatusCode, String)> {
    let limit = q.limit.unwrap_or(100).min(1000);
    // Off the async workers: the ledger may be a round trip away (etcd) or wait on a disk.
    blocking(move || rt.store().decisions(q.policy.as_deref(), q.rule.as_deref(), limit))
        .await
        .map(|decisions| Json(DecisionsResponse { decisions }))
}

/// Runs a ledger read on the blocking pool; its error as a 500.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, (StatusCode, String)> {
    let failed = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| failed(format!("ledger read task: {e}")))?
        .map_err(|e| failed(e.to_string()))
}

async fn actions(
    State(rt): State<PolicyRuntime>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ActionsResponse>, (StatusCode, String)> {
    let limit = q.limit.unwrap_or(100).min(1000);
    blocking(move || rt.store().actions()).await.map(|mut actions| {
        actions.retain(|a| {
            q.policy.as_ref().is_none_or(|p| *p == a.policy)
                && q.rule.as_ref().is_none_or(|r| *r == a.rule)
        });
        actions.truncate(limit);
        Json(ActionsResponse { actions })
    })
}
