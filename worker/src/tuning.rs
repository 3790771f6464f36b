//! `[worker]`: how many tasks each of payflow's SDK workers (one per task queue) takes at once,
//! how many polls it keeps open and how many workflows it caches.
//!
//! The defaults are the SDK's: 100 slots of each kind, 1000 cached workflows, 5 polls per
//! queue. The pollers are set explicitly because the SDK, left alone, enrolls into poller
//! autoscaling (up to 100 polls) on a server whose namespace asks for it, and every open poll
//! holds a workflow-task slot, slots that eager starts (callbacks started by the worker) need.
//! The dev server offers autoscaling without enrolling workers, so `"auto"` and 5 measured the
//! same there (`payflow bench notify`, docs/BENCHMARKS.md); `"auto"` is there for clusters
//! where it pays.

use serde::Deserialize;
use temporalio_sdk::WorkerOptions;
use temporalio_sdk::runtime::PollerBehavior;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder, WorkerTuner};

use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerTuningConfig {
    /// Workflow-task polls per queue: a number (at least 2: a sticky and a normal one), or
    /// `"auto"` for the SDK's choice (autoscaling when the server offers it).
    pub workflow_pollers: Pollers,
    /// Activity-task polls per queue: a number, or `"auto"`.
    pub activity_pollers: Pollers,
    pub workflow_slots: usize,
    pub activity_slots: usize,
    pub local_activity_slots: usize,
    /// Workflows kept in memory between their tasks (0: no sticky cache).
    pub max_cached_workflows: usize,
}

impl Default for WorkerTuningConfig {
    fn default() -> Self {
        WorkerTuningConfig {
            workflow_pollers: Pollers::Fixed(5),
            activity_pollers: Pollers::Fixed(5),
            workflow_slots: 100,
            activity_slots: 100,
            local_activity_slots: 100,
            max_cached_workflows: 1000,
        }
    }
}

/// A poller setting: a fixed number of concurrent polls, or the SDK's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pollers {
    Fixed(usize),
    Auto,
}

impl<'de> Deserialize<'de> for Pollers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Pollers::Fixed(n)),
            Raw::Word(w) if w == "auto" => Ok(Pollers::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a number of polls or \"auto\", got {w:?}"
            ))),
        }
    }
}

impl Pollers {
    /// `None` leaves the choice to the SDK.
    pub fn sdk(self) -> Option<PollerBehavior> {
        match self {
            Pollers::Fixed(n) => Some(PollerBehavior::SimpleMaximum(n)),
            Pollers::Auto => None,
        }
    }
}

impl WorkerTuningConfig {
    /// The body of a `[worker]` table (e.g. `workflow_pollers = "auto"`), as the benches take it
    /// on their command line.
    pub fn from_table(body: &str) -> Result<Self, ConfigError> {
        let t: WorkerTuningConfig = toml::from_str(body).map_err(|e| ConfigError::Key {
            key: "worker".into(),
            message: e.message().to_string(),
        })?;
        t.validate()?;
        Ok(t)
    }

    /// A one-line description for the benches' reports.
    pub fn describe(&self) -> String {
        let pollers = |p: Pollers| match p {
            Pollers::Fixed(n) => n.to_string(),
            Pollers::Auto => "auto".into(),
        };
        format!(
            "{} workflow / {} activity / {} local activity slots per task queue, {} workflow and {} \
             activity pollers, {} cached workflows",
            self.workflow_slots,
            self.activity_slots,
            self.local_activity_slots,
            pollers(self.workflow_pollers),
            pollers(self.activity_pollers),
            self.max_cached_workflows
        )
    }

    /// Sets this tuning on a worker's options (payflow's workers and the bench's no-op worker
    /// alike).
    pub fn apply(&self, options: &mut WorkerOptions) {
        options.tuner = self.tuner();
        options.max_cached_workflows = self.max_cached_workflows;
        options.workflow_task_poller_behavior = self.workflow_pollers.sdk();
        options.activity_task_poller_behavior = self.activity_pollers.sdk();
    }

    fn tuner(&self) -> WorkerTuner {
        TunerHolder::builder()
            .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(self.workflow_slots))
            .activity_task_slot_supplier(FixedSizeSlotSupplier::new(self.activity_slots))
            .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(
                self.local_activity_slots,
            ))
            // payflow runs no Nexus operations; the SDK's default size.
            .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(100))
            .build()
            .into()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, message: &str| ConfigError::Key {
            key: format!("worker.{key}"),
            message: message.to_string(),
        };
        for (key, n) in [
            ("workflow_slots", self.workflow_slots),
            ("activity_slots", self.activity_slots),
            ("local_activity_slots", self.local_activity_slots),
        ] {
            if n == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        if let Pollers::Fixed(n) = self.workflow_pollers {
            // The SDK polls the sticky and the normal queue apart when it caches workflows.
            let least = if self.max_cached_workflows > 0 { 2 } else { 1 };
            if n < least || n > self.workflow_slots {
                return Err(err(
                    "workflow_pollers",
                    &format!(
                        "must be between {least} and worker.workflow_slots ({}), or \"auto\"",
                        self.workflow_slots
                    ),
                ));
            }
        }
        if let Pollers::Fixed(n) = self.activity_pollers
            && (n == 0 || n > self.activity_slots)
        {
            return Err(err(
                "activity_pollers",
                &format!(
                    "must be between 1 and worker.activity_slots ({}), or \"auto\"",
                    self.activity_slots
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<WorkerTuningConfig, String> {
        WorkerTuningConfig::from_table(toml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_five_polls_and_the_sdk_slots() {
        let t = parse("").expect("empty is valid");
        assert_eq!(t, WorkerTuningConfig::default());
        assert_eq!(
            t.workflow_pollers.sdk(),
            Some(PollerBehavior::SimpleMaximum(5))
        );
    }

    #[test]
    fn pollers_are_a_number_or_auto() {
        let t = parse("workflow_pollers = \"auto\"\nactivity_pollers = 8").expect("valid");
        assert_eq!(t.workflow_pollers, Pollers::Auto);
        assert_eq!(t.workflow_pollers.sdk(), None);
        assert_eq!(t.activity_pollers, Pollers::Fixed(8));
        let e = parse("workflow_pollers = \"many\"").unwrap_err();
        assert!(e.contains("\"auto\""), "{e}");
    }

    #[test]
    fn impossible_settings_are_refused_with_their_key() {
        let e = parse("workflow_pollers = 1").unwrap_err();
        assert!(e.contains("worker.workflow_pollers"), "{e}");
        assert!(parse("workflow_pollers = 1\nmax_cached_workflows = 0").is_ok());
        let e = parse("activity_slots = 4\nactivity_pollers = 5").unwrap_err();
        assert!(e.contains("worker.activity_pollers"), "{e}");
        let e = parse("local_activity_slots = 0").unwrap_err();
        assert!(e.contains("worker.local_activity_slots"), "{e}");
        assert!(parse("slots = 3").is_err(), "unknown keys are refused");
    }
}
