//! Policy-facing configuration: what a policy writes under `scale.forecast`.
//!
//! ```yaml
//! forecast: {horizon: 5m, history: 7d, minHistory: 1h, mode: floor, period: 24h}
//! ```
//!
//! Durations are humantime strings. The policy engine embeds [`ForecastSpec`] in its format and
//! turns it into a [`crate::forecast::ForecastConfig`] with the store's step.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One day: the default seasonal period.
pub const DAILY: Duration = Duration::from_secs(86_400);

/// How a policy uses the forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastMode {
    /// The forecast sets a floor under the reactive recommendation: it can scale out early,
    /// never scale in on its own.
    Floor,
    /// Forecasts are computed, recorded and scored (MAPE) but never change a decision.
    ForecastOnly,
}

/// `scale.forecast` in a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForecastSpec {
    /// How far ahead to forecast: the target's warm-up time.
    #[serde(with = "human_duration")]
    pub horizon: Duration,
    /// How much history each (re)fit reads from the store.
    #[serde(with = "human_duration")]
    pub history: Duration,
    /// Below this much observed history there is no forecast (the policy stays reactive).
    #[serde(with = "human_duration")]
    pub min_history: Duration,
    /// Floor or forecast-only.
    pub mode: ForecastMode,
    /// Seasonal period of the Fourier terms; daily when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "human_duration_opt")]
    pub period: Option<Duration>,
}

impl ForecastSpec {
    /// The seasonal period: `period`, or one day.
    pub fn period_or_daily(&self) -> Duration {
        self.period.unwrap_or(DAILY)
    }

    /// Every problem with the spec, all at once (empty when it is usable).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.horizon.is_zero() {
            out.push("horizon: must be greater than zero".to_owned());
        }
        if self.min_history.is_zero() {
            out.push("minHistory: must be greater than zero".to_owned());
        }
        if self.history < self.min_history {
            out.push(format!(
                "history: {} is shorter than minHistory {}",
                humantime::format_duration(self.history),
                humantime::format_duration(self.min_history)
            ));
        }
        if self.period.is_some_and(|p| p.is_zero()) {
            out.push("period: must be greater than zero".to_owned());
        }
        out
    }
}

/// serde for `Duration` as a humantime string (`"5m"`).
pub mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as `"5m"`, `"1h 30m"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Reads `"5m"`, `"1h30m"`, `"250ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (write it like 30s, 5m, 1h30m or 250ms)"
            ))
        })
    }
}

/// serde for `Option<Duration>` as an optional humantime string.
pub mod human_duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(d)` as a humantime string, `None` as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::human_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::human_duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ForecastSpec, String> {
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_camel_case_humantime_spec() {
        let spec = parse(
            r#"{"horizon":"5m","history":"7d","minHistory":"1h","mode":"floor","period":"12h"}"#,
        )
        .expect("valid");
        assert_eq!(spec.horizon, Duration::from_secs(300));
        assert_eq!(spec.history, Duration::from_secs(7 * 86_400));
        assert_eq!(spec.min_history, Duration::from_secs(3600));
        assert_eq!(spec.mode, ForecastMode::Floor);
        assert_eq!(spec.period_or_daily(), Duration::from_secs(12 * 3600));
        assert!(spec.problems().is_empty());
        let back = serde_json::to_string(&spec).expect("serialize");
        assert_eq!(parse(&back).expect("round trip"), spec);
    }

    #[test]
    fn period_defaults_to_daily_and_mode_is_kebab_case() {
        let spec =
            parse(r#"{"horizon":"5m","history":"2d","minHistory":"1h","mode":"forecast-only"}"#)
                .expect("valid");
        assert_eq!(spec.mode, ForecastMode::ForecastOnly);
        assert_eq!(spec.period, None);
        assert_eq!(spec.period_or_daily(), Duration::from_secs(86_400));
    }

    #[test]
    fn errors_name_the_key() {
        let err =
            parse(r#"{"horizon":"5m","history":"2d","minHistory":"1h","mode":"floor","lag":3}"#)
                .expect_err("unknown key");
        assert!(err.contains("unknown field `lag`"), "{err}");
        let err =
            parse(r#"{"horizon":"5 parsecs","history":"2d","minHistory":"1h","mode":"floor"}"#)
                .expect_err("bad duration");
        assert!(err.starts_with("horizon"), "{err}");
        assert!(err.contains("write it like 30s"), "{err}");
        let spec = parse(r#"{"horizon":"0s","history":"30m","minHistory":"1h","mode":"floor"}"#)
            .expect("parses");
        assert_eq!(spec.problems().len(), 2, "{:?}", spec.problems());
    }
}
