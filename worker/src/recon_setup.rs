//! Reconciliation wiring at start-up: the activities' settings from `[recon]` and the channels'
//! `fee_rate`, and the daily Temporal Schedules (`recon-daily/{channel}`, one per enabled
//! channel) when `[recon] schedule = true`.
//!
//! A schedule fires every day at `[recon] schedule_hour`, Beijing time, and starts the
//! `ReconDaily` workflow, which starts yesterday's `recon/{channel}/{date}` (once per day: a day
//! already started is left alone). The calendar is written in UTC (China keeps no daylight
//! saving time, so Beijing hour `h` is UTC hour `h - 8`), which needs no time zone database on
//! the server. Creating is idempotent: an existing schedule gets this configuration's calendar
//! and action. Days missed while nothing ran are reconciled by hand (`payflow recon run`).

use payflow_activities::ReconSettings;
use payflow_activities::recon::ChannelFeeRate;
use payflow_client::ReconDailyRequest;
use payflow_client::definitions::{ReconDailyWorkflow, task_queues};
use payflow_client::recon::recon_schedule_id;
use temporalio_client::Client;
use temporalio_client::schedules::{
    CreateScheduleOptions, ScheduleAction, ScheduleCalendarSpec, ScheduleError,
    ScheduleOverlapPolicy, ScheduleSpec,
};

use crate::config::Config;
use crate::startup::StartupError;

/// The reconciliation activities' settings.
pub fn settings(config: &Config) -> ReconSettings {
    let r = &config.recon;
    ReconSettings {
        statement_retry_ms: r.statement_retry_ms.clone(),
        statement_deadline_ms: r.statement_deadline_ms,
        page_size: r.page_size,
        check_concurrency: r.check_concurrency,
        fee_rates: config
            .channels
            .iter()
            .filter_map(|c| {
                // Validated with the configuration.
                let rate = ChannelFeeRate::new(c.fee_rate?).ok()?;
                Some((c.name.clone(), rate))
            })
            .collect(),
        ..ReconSettings::default()
    }
}

/// The UTC hour of Beijing hour `hour`.
pub fn utc_hour(beijing_hour: u32) -> u32 {
    (beijing_hour + 24 - 8) % 24
}

/// The daily calendar of `[recon] schedule_hour`.
pub fn daily_spec(beijing_hour: u32) -> ScheduleSpec {
    ScheduleSpec::from_calendar(
        ScheduleCalendarSpec::builder()
            .hour(utc_hour(beijing_hour).to_string())
            .minute("0")
            .second("0")
            .comment(format!(
                "daily at {beijing_hour:02}:00 Beijing time: yesterday's statement"
            ))
            .build(),
    )
}

fn action(channel: &str) -> ScheduleAction {
    ScheduleAction::start_workflow(
        ReconDailyWorkflow,
        ReconDailyRequest {
            channel: channel.to_string(),
        },
        task_queues::RECON,
        recon_schedule_id(channel),
    )
}

/// Creates or updates the daily schedule of every enabled channel; returns their ids.
pub async fn ensure_schedules(
    client: &Client,
    config: &Config,
) -> Result<Vec<String>, StartupError> {
    let err = |id: &str, e: ScheduleError| StartupError::Worker(format!("schedule {id}: {e}"));
    let mut ids = Vec::new();
    for c in config.channels.iter().filter(|c| c.enabled) {
        let id = recon_schedule_id(&c.name);
        let spec = daily_spec(config.recon.schedule_hour);
        let created = client
            .create_schedule(
                id.clone(),
                CreateScheduleOptions::builder()
                    .action(action(&c.name))
                    .spec(spec.clone())
                    .overlap_policy(ScheduleOverlapPolicy::Skip)
                    .note(format!("payflow: reconcile {} daily", c.name))
                    .build(),
            )
            .await;
        match created {
            Ok(_) => tracing::info!(schedule = %id, "reconciliation schedule created"),
            Err(ScheduleError::Rpc(status))
                if status.code() == temporalio_client::tonic::Code::AlreadyExists =>
            {
                let channel = c.name.clone();
                client
                    .get_schedule_handle(id.clone())
                    .update(
                        move |u| {
                            u.set_spec(spec)
                                .set_action(action(&channel))
                                .set_overlap_policy(ScheduleOverlapPolicy::Skip);
                        },
                        Default::default(),
                    )
                    .await
                    .map_err(|e| err(&id, e))?;
                tracing::info!(schedule = %id, "reconciliation schedule updated");
            }
            Err(e) => return Err(err(&id, e)),
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_hours_are_utc_hours_minus_eight() {
        assert_eq!(utc_hour(10), 2);
        assert_eq!(utc_hour(3), 19);
        assert_eq!(utc_hour(8), 0);
        let spec = daily_spec(10);
        assert_eq!(spec.calendars[0].hour, "2");
        assert!(spec.timezone_name.is_empty());
    }
}
