//! Reconciliation (对账) tables and the comparison, done in SQL so a statement of any size is
//! compared without holding it in memory (API and flow: `recon::compare`).
//!
//! # Tables (migration 0005)
//!
//! - `recon_runs`: one row per channel and business day (`run_id = {channel}/{yyyy-mm-dd}`):
//!   its state, the number of its current statement load (`load_no`) and comparison
//!   (`pass_no`), whether its statement itemises refunds, and the counts of its last finish.
//! - `recon_lines`: the statement in the standard form, unique per run, load, channel trade
//!   no, kind and refund no (`''` for payments and for a trade's refunded total). Inserted in
//!   batches with `ON CONFLICT DO NOTHING`, so inserting a batch again changes nothing and a
//!   line repeated in the file is stored once.
//! - `recon_candidates`: the differences of the run's current comparison, each waiting for (or
//!   holding) the channel's answer and its verdict (`Recorded` or `Dismissed`).
//! - `recon_discrepancies`: what was recorded, keyed by run and the candidate's key; `resolved`
//!   with how (`FoundInStatement` / `GoneOnRerun`) and by which run.
//! - `recon_totals`: count and sums per side, kind and currency, stored by the finish.
//!
//! # Loading
//!
//! Each load of a run's statement gets the next `load_no`; its lines are inserted under it and,
//! when the whole statement is in, the run points at it and older loads' lines are deleted. A
//! load that dies half-way is simply superseded by the next one; queries only ever read the
//! lines of each run's current load.
//!
//! # Comparing (set-based, both ways)
//!
//! Statement -> ours, for every line of the run: the order (by our order id, on this channel)
//! or the refund (by our refund id) must exist, with an agreeing status (one table in
//! `recon::compare`), the same amount and currency (a payment: what was paid, else what was
//! asked), and, when the statement gives a fee and the channel has a configured rate
//! (`recon::ChannelFeeRate`), the fee that rate gives: the channel's cost to us on what was
//! collected for a payment, and the part it gives back on a succeeded refund, each rounded
//! half-up per line as channels do. (The fee we charge merchants, credited to
//! `platform:fees`, is our revenue and has nothing to do with the channel's statement.)
//! A line with a trade's refunded total (formats without itemised refunds) is compared with the
//! sum of our succeeded refunds of the order. Our orders are looked up whatever day we recorded
//! them, so a trade the channel dates a day earlier than we do still matches.
//!
//! Ours -> statement, for our records of the business day: every order first paid that day
//! (the first transition to `Succeeded` or `Exception` in `order_transitions`) and, when the
//! statement itemises refunds, every refund created that day that succeeded, must appear in the
//! statement of **any** run of the channel (current loads). For a statement that only carries
//! refunded totals, each of its trades with succeeded refunds must have such a total.
//!
//! # Cross-day transactions
//!
//! A trade paid at 23:59:59 by our clock may be in the channel's statement of the next day.
//! Reconciling day D records it `MissingAtChannel` (open). It is resolved, with
//! `resolution = FoundInStatement` and `resolved_by_run` = the finding run, in two places: when
//! a later run's comparison finds the record in its own statement (every open
//! `MissingAtChannel` of another run of the channel whose order, kind and refund no are in the
//! statement just loaded), and when D's run finishes and the record has meanwhile appeared in
//! any other run's statement (the order of runs does not matter). A trade the channel dates a
//! day earlier than we do is matched from the statement's side of that earlier day, and from
//! ours it is found in that earlier statement, so it raises nothing.
//!
//! # Reruns and idempotency
//!
//! Comparing again starts a new pass: the candidates are replaced. Recording upserts the
//! discrepancy under the same key, so the same difference found again is the same row (an
//! operator's or a later statement's resolution stays). When the pass finishes, open
//! discrepancies of the run that this pass did not record again are resolved as `GoneOnRerun`.
//! Totals and counts are recomputed by every finish. Running a day twice over the same
//! statement and records therefore yields the same report.

use chrono::NaiveDate;
use payflow_client::Currency;
use rust_decimal::Decimal;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};
use crate::recon::compare::{
    self, Candidate, ChannelFeeRate, ChannelView, Checked, CompareSummary, Discrepancy,
    DiscrepancyKind, KindCount, LoadSummary, ReconReport, ReconRun, RecordSummary, Resolution,
    RunState, Side, Subject, Totals, Values, Verdict,
};
use crate::recon::line::{LineStatus, StatementLine};

const RUN_COLUMNS: &str = "run_id, channel, business_date, day_start_ms, day_end_ms, state, \
    load_no, pass_no, itemised_refunds, lines_read, lines_stored, matched_lines, our_records, \
    matched_records";

const LINE_COLUMNS: &str = "run_id, load_no, line_no, channel, channel_trade_no, \
    channel_refund_no, order_no, kind, refund_no, currency, amount_minor, fee_minor, \
    occurred_at_ms, status";
const LINE_COLUMN_COUNT: usize = 14;

/// The values both candidates and discrepancies carry.
const COMPARED_COLUMNS: &str = "kind, subject, order_no, refund_no, channel_trade_no, line_no, \
    ours_currency, ours_amount_minor, ours_fee_minor, ours_status, theirs_currency, \
    theirs_amount_minor, theirs_fee_minor, theirs_status";

const NULL_TEXT: &str = "CAST(NULL AS TEXT)";
const NULL_INT: &str = "CAST(NULL AS BIGINT)";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// SQL building blocks
// ---------------------------------------------------------------------------------------------

/// `('A', 'B')` from fixed state names (never user input).
fn sql_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|i| format!("'{i}'")).collect();
    format!("({})", quoted.join(", "))
}

/// The states in which an order has collected money (payment first recorded).
fn paying_transition_states() -> String {
    sql_list(["Succeeded", "Exception"])
}

/// The channel's fee we expect on order `o`'s payment (on what was collected, at `rate`), NULL
/// without a rate: a NULL never differs, so no fee is then compared.
fn payment_fee(rate: Option<ChannelFeeRate>) -> String {
    rate.map_or_else(
        || NULL_INT.to_string(),
        |r| r.fee_sql("COALESCE(o.paid_amount_minor, o.amount_minor)"),
    )
}

/// The channel's fee we expect back on refund `r` (at `rate`), NULL without a rate.
fn refund_fee(rate: Option<ChannelFeeRate>) -> String {
    rate.map_or_else(|| NULL_INT.to_string(), |r| r.fee_sql("r.amount_minor"))
}

/// Sum of the channel's fees given back on order `o`'s succeeded refunds (NULL when there are
/// none, or without a rate).
fn refund_fee_sum(rate: Option<ChannelFeeRate>) -> String {
    match rate {
        Some(r) => format!(
            "(SELECT CAST(SUM({}) AS BIGINT) FROM refunds sr \
             WHERE sr.order_id = o.order_id AND sr.state = 'Succeeded')",
            r.fee_sql("sr.amount_minor")
        ),
        None => NULL_INT.to_string(),
    }
}

/// Sum of `column` over order `o`'s succeeded refunds (NULL when there are none).
fn refund_sum(column: &str) -> String {
    format!(
        "(SELECT CAST(SUM(sr.{column}) AS BIGINT) FROM refunds sr \
         WHERE sr.order_id = o.order_id AND sr.state = 'Succeeded')"
    )
}

/// `l.status` agrees with order `o`'s state.
fn order_status_agrees() -> String {
    let late = "(o.state = 'Closed' AND EXISTS (SELECT 1 FROM refunds lr WHERE \
                lr.order_id = o.order_id AND lr.kind = 'LatePayment' AND lr.state <> 'Failed'))";
    let mut arms = Vec::new();
    for status in LineStatus::ALL {
        let states = compare::order_states_agreeing(status);
        if states.is_empty() {
            continue;
        }
        let list = sql_list(states.iter().map(|s| s.as_str()));
        let extra = if status == LineStatus::Paid {
            format!(" OR {late}")
        } else {
            String::new()
        };
        arms.push(format!(
            "(l.status = '{}' AND (o.state IN {list}{extra}))",
            status.as_str()
        ));
    }
    format!("({})", arms.join(" OR "))
}

/// `l.status` agrees with refund `r`'s state.
fn refund_status_agrees() -> String {
    let mut arms = Vec::new();
    for status in LineStatus::ALL {
        let states = compare::refund_states_agreeing(status);
        if states.is_empty() {
            continue;
        }
        let list = sql_list(states.iter().map(|s| s.as_str()));
        arms.push(format!(
            "(l.status = '{}' AND r.state IN {list})",
            status.as_str()
        ));
    }
    format!("({})", arms.join(" OR "))
}

/// Orders `o` of channel `?` first paid in `[?, ?)` (3 arguments).
fn paid_on_day() -> String {
    let paying = paying_transition_states();
    format!(
        "payment_orders o JOIN order_transitions t ON t.order_id = o.order_id \
         WHERE o.channel = ? AND t.to_state IN {paying} AND t.at_ms >= ? AND t.at_ms < ? \
         AND NOT EXISTS (SELECT 1 FROM order_transitions e WHERE e.order_id = t.order_id \
                         AND e.to_state IN {paying} AND e.id < t.id)"
    )
}

/// Succeeded refunds `r` (with order `o`) of channel `?` created in `[?, ?)` (3 arguments).
fn refunded_on_day() -> &'static str {
    "refunds r JOIN payment_orders o ON o.order_id = r.order_id \
     WHERE o.channel = ? AND r.state = 'Succeeded' AND r.created_at_ms >= ? AND r.created_at_ms < ?"
}

/// A line of the current load of any run of channel `?` (1 argument) about the record.
fn line_in_any_run(order: &str, kind: Subject, refund_no: &str) -> String {
    format!(
        "SELECT 1 FROM recon_lines x JOIN recon_runs xr \
         ON xr.run_id = x.run_id AND xr.load_no = x.load_no \
         WHERE x.channel = ? AND x.order_no = {order} AND x.kind = '{}' AND x.refund_no = {refund_no}",
        kind.as_str()
    )
}

/// A rule comparing the run's lines `l` with our records: inserts one candidate of `kind` per
/// line meeting `cond`. Arguments: run id, run id, load no.
fn statement_rule(kind: DiscrepancyKind, joins: &str, ours: [&str; 4], cond: &str) -> String {
    let k = kind.as_str();
    format!(
        "INSERT INTO recon_candidates (run_id, candidate_key, {COMPARED_COLUMNS}) \
         SELECT ?, '{k}|' || l.kind || '|' || l.order_no || '|' || l.refund_no || '|' || l.channel_trade_no, \
                '{k}', l.kind, l.order_no, l.refund_no, l.channel_trade_no, l.line_no, \
                {}, {}, {}, {}, l.currency, l.amount_minor, l.fee_minor, l.status \
         FROM recon_lines l {joins} \
         WHERE l.run_id = ? AND l.load_no = ? AND {cond} \
         ON CONFLICT (run_id, candidate_key) DO NOTHING",
        ours[0], ours[1], ours[2], ours[3]
    )
}

fn run_from_row(row: &AnyRow) -> Result<(ReconRun, RunCounters), StoreError> {
    let date: String = row.try_get("business_date")?;
    let state: String = row.try_get("state")?;
    let itemised: i64 = row.try_get("itemised_refunds")?;
    let run = ReconRun {
        run_id: row.try_get("run_id")?,
        channel: row.try_get("channel")?,
        date: NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(corrupt)?,
        day_start_ms: row.try_get("day_start_ms")?,
        day_end_ms: row.try_get("day_end_ms")?,
        state: RunState::parse(&state).ok_or_else(|| corrupt(format!("run state {state}")))?,
        itemised_refunds: itemised != 0,
    };
    let counters = RunCounters {
        load_no: row.try_get("load_no")?,
        pass_no: row.try_get("pass_no")?,
        lines_read: row.try_get("lines_read")?,
        lines_stored: row.try_get("lines_stored")?,
        matched_lines: row.try_get("matched_lines")?,
        our_records: row.try_get("our_records")?,
        matched_records: row.try_get("matched_records")?,
    };
    Ok((run, counters))
}

struct RunCounters {
    load_no: i64,
    pass_no: i64,
    lines_read: i64,
    lines_stored: i64,
    matched_lines: i64,
    our_records: i64,
    matched_records: i64,
}

fn values_from_row(row: &AnyRow, side: &str) -> Result<Values, StoreError> {
    let currency: Option<String> = row.try_get(format!("{side}_currency").as_str())?;
    let currency: Option<Currency> = currency.map(|c| c.parse().map_err(corrupt)).transpose()?;
    let scale = currency.map_or(2, |c| c.minor_units());
    let amount: Option<i64> = row.try_get(format!("{side}_amount_minor").as_str())?;
    let fee: Option<i64> = row.try_get(format!("{side}_fee_minor").as_str())?;
    Ok(Values {
        currency,
        amount: amount.map(|m| Decimal::new(m, scale)),
        fee: fee.map(|m| Decimal::new(m, scale)),
        status: row.try_get(format!("{side}_status").as_str())?,
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn candidate_from_row(row: &AnyRow) -> Result<Candidate, StoreError> {
    let kind: String = row.try_get("kind")?;
    let subject: String = row.try_get("subject")?;
    let line_no: Option<i64> = row.try_get("line_no")?;
    Ok(Candidate {
        key: row.try_get("candidate_key")?,
        kind: DiscrepancyKind::parse(&kind).ok_or_else(|| corrupt(format!("kind {kind}")))?,
        subject: Subject::parse(&subject).ok_or_else(|| corrupt(format!("subject {subject}")))?,
        order_no: row.try_get("order_no")?,
        refund_no: non_empty(row.try_get("refund_no")?),
        channel_trade_no: non_empty(row.try_get("channel_trade_no")?),
        line_no: line_no.map(to_u64),
        ours: values_from_row(row, "ours")?,
        channel: values_from_row(row, "theirs")?,
    })
}

fn discrepancy_from_row(row: &AnyRow) -> Result<Discrepancy, StoreError> {
    let kind: String = row.try_get("kind")?;
    let subject: String = row.try_get("subject")?;
    let line_no: Option<i64> = row.try_get("line_no")?;
    let channel_now: Option<String> = row.try_get("channel_now")?;
    let channel_now: Option<ChannelView> = channel_now
        .map(|j| serde_json::from_str(&j).map_err(corrupt))
        .transpose()?;
    let resolved: i64 = row.try_get("resolved")?;
    let resolution: Option<String> = row.try_get("resolution")?;
    let by: Option<String> = row.try_get("resolved_by_run")?;
    let resolution = if resolved == 0 {
        None
    } else {
        let run_id = by.unwrap_or_default();
        Some(match resolution.as_deref() {
            Some("FoundInStatement") => Resolution::FoundInStatement { run_id },
            Some("GoneOnRerun") => Resolution::GoneOnRerun { run_id },
            other => return Err(corrupt(format!("resolution {other:?}"))),
        })
    };
    Ok(Discrepancy {
        run_id: row.try_get("run_id")?,
        key: row.try_get("discrepancy_key")?,
        kind: DiscrepancyKind::parse(&kind).ok_or_else(|| corrupt(format!("kind {kind}")))?,
        subject: Subject::parse(&subject).ok_or_else(|| corrupt(format!("subject {subject}")))?,
        order_no: row.try_get("order_no")?,
        refund_no: non_empty(row.try_get("refund_no")?),
        channel_trade_no: non_empty(row.try_get("channel_trade_no")?),
        line_no: line_no.map(to_u64),
        ours: values_from_row(row, "ours")?,
        channel: values_from_row(row, "theirs")?,
        channel_now,
        resolution,
    })
}

impl Store {
    /// Creates the run of `channel` for `date` (`[day_start_ms, day_end_ms)`), or returns the
    /// existing one.
    pub async fn recon_open(
        &self,
        channel: &str,
        date: NaiveDate,
        day_start_ms: i64,
        day_end_ms: i64,
    ) -> Result<ReconRun, StoreError> {
        let run_id = compare::run_id(channel, date);
        let now = now_ms();
        let q = self.sql(
            "INSERT INTO recon_runs (run_id, channel, business_date, day_start_ms, day_end_ms, \
             state, load_no, pass_no, itemised_refunds, lines_read, lines_stored, matched_lines, \
             our_records, matched_records, created_at_ms, updated_at_ms) \
             VALUES (?, ?, ?, ?, ?, 'Created', 0, 0, 1, 0, 0, 0, 0, 0, ?, ?) \
             ON CONFLICT (run_id) DO NOTHING",
        );
        sqlx::query(&q)
            .bind(&run_id)
            .bind(channel)
            .bind(date.format("%Y-%m-%d").to_string())
            .bind(day_start_ms)
            .bind(day_end_ms)
            .bind(now)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(self.recon_run_row(&run_id).await?.0)
    }

    /// The run, if it exists.
    pub async fn recon_run(&self, run_id: &str) -> Result<Option<ReconRun>, StoreError> {
        let q = self.sql(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE run_id = ?"
        ));
        let row = sqlx::query(&q)
            .bind(run_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref()
            .map(|r| run_from_row(r).map(|(run, _)| run))
            .transpose()
    }

    async fn recon_run_row(&self, run_id: &str) -> Result<(ReconRun, RunCounters), StoreError> {
        let q = self.sql(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE run_id = ?"
        ));
        let row = sqlx::query(&q)
            .bind(run_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("recon run {run_id}")))?;
        run_from_row(&row)
    }

    /// Starts a new load of the run's statement; returns its number.
    pub async fn recon_begin_load(&self, run_id: &str) -> Result<i64, StoreError> {
        let q = self.sql(
            "UPDATE recon_runs SET load_no = load_no + 1, state = 'Loading', updated_at_ms = ? \
             WHERE run_id = ? RETURNING load_no",
        );
        let row = sqlx::query(&q)
            .bind(now_ms())
            .bind(run_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("recon run {run_id}")))?;
        Ok(row.try_get("load_no")?)
    }

    /// Stores a batch of lines under load `load_no`; returns how many were new (a line already
    /// there, from a retried batch or repeated in the statement, is skipped).
    pub async fn recon_insert_lines(
        &self,
        run_id: &str,
        load_no: i64,
        lines: &[StatementLine],
    ) -> Result<u64, StoreError> {
        if lines.is_empty() {
            return Ok(0);
        }
        let row = format!("({})", vec!["?"; LINE_COLUMN_COUNT].join(", "));
        let q = self.sql(&format!(
            "INSERT INTO recon_lines ({LINE_COLUMNS}) VALUES {} \
             ON CONFLICT (run_id, load_no, channel_trade_no, kind, refund_no) DO NOTHING",
            vec![row; lines.len()].join(", ")
        ));
        let mut query = sqlx::query(&q);
        for l in lines {
            query = query
                .bind(run_id)
                .bind(load_no)
                .bind(to_i64(l.line_no))
                .bind(&l.channel)
                .bind(&l.channel_trade_no)
                .bind(l.channel_refund_no.clone())
                .bind(&l.order_no)
                .bind(l.kind.as_str())
                .bind(l.kind.refund_no().unwrap_or_default())
                .bind(l.amount.currency().code())
                .bind(l.amount.minor_units())
                .bind(l.fee_minor())
                .bind(l.occurred_at_ms)
                .bind(l.status.as_str());
        }
        Ok(query.execute(self.pool()).await?.rows_affected())
    }

    /// Makes load `load_no` (`lines_read` lines parsed) the run's statement and drops older
    /// loads. A conflict when a newer load has started meanwhile.
    pub async fn recon_end_load(
        &self,
        run_id: &str,
        load_no: i64,
        lines_read: u64,
        itemised_refunds: bool,
    ) -> Result<LoadSummary, StoreError> {
        let mut tx = self.pool().begin().await?;
        let q = self.sql(
            "UPDATE recon_runs SET state = 'Loaded', itemised_refunds = ?, lines_read = ?, \
             lines_stored = (SELECT COUNT(*) FROM recon_lines WHERE run_id = ? AND load_no = ?), \
             updated_at_ms = ? WHERE run_id = ? AND load_no = ? RETURNING lines_stored",
        );
        let row = sqlx::query(&q)
            .bind(i64::from(itemised_refunds))
            .bind(to_i64(lines_read))
            .bind(run_id)
            .bind(load_no)
            .bind(now_ms())
            .bind(run_id)
            .bind(load_no)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "run {run_id}: load {load_no} is no longer the current load"
                ))
            })?;
        let stored: i64 = row.try_get("lines_stored")?;
        let q = self.sql("DELETE FROM recon_lines WHERE run_id = ? AND load_no < ?");
        sqlx::query(&q)
            .bind(run_id)
            .bind(load_no)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // A fresh statement has no planner statistics on PostgreSQL, which then picks a
        // nested-loop anti-join for the compare (52.6 s instead of 3.0 s at 100k lines,
        // docs/BENCHMARKS.md). SQLite plans well without them.
        if self.backend() == super::Backend::Postgres {
            sqlx::query("ANALYZE recon_lines")
                .execute(self.pool())
                .await?;
        }
        let stored = to_u64(stored);
        Ok(LoadSummary {
            lines_read,
            lines_stored: stored,
            duplicates: lines_read.saturating_sub(stored),
            itemised_refunds,
        })
    }

    /// Compares the run's current statement with our records both ways (see the module
    /// comment), replacing its candidates, and resolves other runs' `MissingAtChannel`
    /// discrepancies its statement contains. Fees are compared at `fee_rate` (none: not at all).
    pub async fn recon_compare(
        &self,
        run_id: &str,
        fee_rate: Option<ChannelFeeRate>,
    ) -> Result<CompareSummary, StoreError> {
        let mut tx = self.pool().begin().await?;
        let q = self.sql(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE run_id = ?{}",
            self.for_update()
        ));
        let row = sqlx::query(&q)
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("recon run {run_id}")))?;
        let (run, counters) = run_from_row(&row)?;
        if !matches!(
            run.state,
            RunState::Loaded | RunState::Compared | RunState::Completed
        ) {
            return Err(StoreError::Invalid(format!(
                "run {run_id} is {}: load its statement first",
                run.state.as_str()
            )));
        }
        let load_no = counters.load_no;
        let pass_no = counters.pass_no + 1;
        let now = now_ms();
        let q = self.sql(
            "UPDATE recon_runs SET pass_no = ?, state = 'Compared', updated_at_ms = ? \
             WHERE run_id = ?",
        );
        sqlx::query(&q)
            .bind(pass_no)
            .bind(now)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let q = self.sql("DELETE FROM recon_candidates WHERE run_id = ?");
        sqlx::query(&q).bind(run_id).execute(&mut *tx).await?;

        use DiscrepancyKind::*;
        let none = [NULL_TEXT, NULL_INT, NULL_INT, NULL_TEXT];
        let fee = payment_fee(fee_rate);
        let rfee = refund_fee(fee_rate);
        let order = [
            "o.currency",
            "COALESCE(o.paid_amount_minor, o.amount_minor)",
            fee.as_str(),
            "o.state",
        ];
        let refund = ["r.currency", "r.amount_minor", rfee.as_str(), "r.state"];
        let (sum_amount, sum_fee) = (refund_sum("amount_minor"), refund_fee_sum(fee_rate));
        let refund_total = [
            "o.currency",
            sum_amount.as_str(),
            sum_fee.as_str(),
            NULL_TEXT,
        ];
        let join_order =
            "JOIN payment_orders o ON o.order_id = l.order_no AND o.channel = l.channel";
        let join_refund = "JOIN refunds r ON r.refund_id = l.refund_no AND r.order_id = l.order_no \
                           JOIN payment_orders o ON o.order_id = r.order_id AND o.channel = l.channel";
        let payment = "l.kind = 'Payment'";
        let itemised = "l.kind = 'Refund' AND l.refund_no <> ''";
        let total = "l.kind = 'Refund' AND l.refund_no = ''";

        let statement_rules = [
            // Payments.
            statement_rule(
                MissingLocally,
                "",
                none,
                &format!(
                    "{payment} AND NOT EXISTS (SELECT 1 FROM payment_orders o \
                     WHERE o.order_id = l.order_no AND o.channel = l.channel)"
                ),
            ),
            statement_rule(
                StatusMismatch,
                join_order,
                order,
                &format!("{payment} AND NOT {}", order_status_agrees()),
            ),
            statement_rule(
                AmountMismatch,
                join_order,
                order,
                &format!(
                    "{payment} AND (l.amount_minor <> COALESCE(o.paid_amount_minor, o.amount_minor) \
                     OR l.currency <> o.currency)"
                ),
            ),
            statement_rule(
                FeeMismatch,
                join_order,
                order,
                &format!("{payment} AND l.fee_minor IS NOT NULL AND l.fee_minor <> {fee}"),
            ),
            // Refunds listed one by one.
            statement_rule(
                MissingLocally,
                "",
                none,
                &format!(
                    "{itemised} AND NOT EXISTS (SELECT 1 FROM refunds r JOIN payment_orders o \
                     ON o.order_id = r.order_id WHERE r.refund_id = l.refund_no \
                     AND r.order_id = l.order_no AND o.channel = l.channel)"
                ),
            ),
            statement_rule(
                StatusMismatch,
                join_refund,
                refund,
                &format!("{itemised} AND NOT {}", refund_status_agrees()),
            ),
            statement_rule(
                AmountMismatch,
                join_refund,
                refund,
                &format!(
                    "{itemised} AND (l.amount_minor <> r.amount_minor OR l.currency <> r.currency)"
                ),
            ),
            statement_rule(
                FeeMismatch,
                join_refund,
                refund,
                &format!(
                    "{itemised} AND l.fee_minor IS NOT NULL AND r.state = 'Succeeded' \
                     AND l.fee_minor <> {rfee}"
                ),
            ),
            // A trade's refunded total.
            statement_rule(
                MissingLocally,
                "",
                none,
                &format!(
                    "{total} AND NOT EXISTS (SELECT 1 FROM refunds r JOIN payment_orders o \
                     ON o.order_id = r.order_id WHERE r.order_id = l.order_no \
                     AND r.state = 'Succeeded' AND o.channel = l.channel)"
                ),
            ),
            statement_rule(
                AmountMismatch,
                join_order,
                refund_total,
                &format!(
                    "{total} AND {sum_amount} IS NOT NULL \
                     AND ({sum_amount} <> l.amount_minor OR l.currency <> o.currency)"
                ),
            ),
            statement_rule(
                FeeMismatch,
                join_order,
                refund_total,
                &format!(
                    "{total} AND l.fee_minor IS NOT NULL AND {sum_amount} IS NOT NULL \
                     AND {sum_fee} <> l.fee_minor"
                ),
            ),
        ];
        let mut rules: Vec<&str> = statement_rules.iter().map(String::as_str).collect();
        // Our refunds of a trade the statement lists without any refunded total (only for a
        // format without itemised refunds; with one, our refunds are looked for one by one).
        let missing_total = format!(
            "INSERT INTO recon_candidates (run_id, candidate_key, {COMPARED_COLUMNS}) \
                 SELECT ?, 'MissingAtChannel|Refund|' || l.order_no || '||', 'MissingAtChannel', \
                        'Refund', l.order_no, '', l.channel_trade_no, {NULL_INT}, \
                        o.currency, {sum_amount}, {sum_fee}, {NULL_TEXT}, \
                        {NULL_TEXT}, {NULL_INT}, {NULL_INT}, {NULL_TEXT} \
                 FROM recon_lines l {join_order} \
                 WHERE l.run_id = ? AND l.load_no = ? AND {payment} AND {sum_amount} IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM recon_lines a WHERE a.channel = l.channel \
                     AND a.order_no = l.order_no AND a.kind = 'Refund' AND a.refund_no = '' \
                     AND a.run_id = l.run_id AND a.load_no = l.load_no) \
                 ON CONFLICT (run_id, candidate_key) DO NOTHING"
        );
        if !run.itemised_refunds {
            rules.push(&missing_total);
        }
        for rule in rules {
            let q = self.sql(rule);
            sqlx::query(&q)
                .bind(run_id)
                .bind(run_id)
                .bind(load_no)
                .execute(&mut *tx)
                .await?;
        }

        // Ours -> statements: our payments of the day.
        let q = self.sql(&format!(
            "INSERT INTO recon_candidates (run_id, candidate_key, {COMPARED_COLUMNS}) \
             SELECT ?, 'MissingAtChannel|Payment|' || o.order_id || '||', 'MissingAtChannel', \
                    'Payment', o.order_id, '', COALESCE(o.channel_trade_no, ''), {NULL_INT}, \
                    o.currency, COALESCE(o.paid_amount_minor, o.amount_minor), {fee}, o.state, \
                    {NULL_TEXT}, {NULL_INT}, {NULL_INT}, {NULL_TEXT} \
             FROM {} AND NOT EXISTS ({}) \
             ON CONFLICT (run_id, candidate_key) DO NOTHING",
            paid_on_day(),
            line_in_any_run("o.order_id", Subject::Payment, "''")
        ));
        sqlx::query(&q)
            .bind(run_id)
            .bind(&run.channel)
            .bind(run.day_start_ms)
            .bind(run.day_end_ms)
            .bind(&run.channel)
            .execute(&mut *tx)
            .await?;
        // ... and our refunds of the day, when the statement lists refunds.
        if run.itemised_refunds {
            let q = self.sql(&format!(
                "INSERT INTO recon_candidates (run_id, candidate_key, {COMPARED_COLUMNS}) \
                 SELECT ?, 'MissingAtChannel|Refund|' || r.order_id || '|' || r.refund_id || '|', \
                        'MissingAtChannel', 'Refund', r.order_id, r.refund_id, \
                        COALESCE(o.channel_trade_no, ''), {NULL_INT}, \
                        r.currency, r.amount_minor, {rfee}, r.state, \
                        {NULL_TEXT}, {NULL_INT}, {NULL_INT}, {NULL_TEXT} \
                 FROM {} AND NOT EXISTS ({}) \
                 ON CONFLICT (run_id, candidate_key) DO NOTHING",
                refunded_on_day(),
                line_in_any_run("r.order_id", Subject::Refund, "r.refund_id")
            ));
            sqlx::query(&q)
                .bind(run_id)
                .bind(&run.channel)
                .bind(run.day_start_ms)
                .bind(run.day_end_ms)
                .bind(&run.channel)
                .execute(&mut *tx)
                .await?;
        }

        // Cross-day: other runs' missing records this statement has.
        let q = self.sql(
            "UPDATE recon_discrepancies SET resolved = 1, resolution = 'FoundInStatement', \
             resolved_by_run = ?, resolved_at_ms = ?, updated_at_ms = ? \
             WHERE channel = ? AND resolved = 0 AND kind = 'MissingAtChannel' AND run_id <> ? \
             AND EXISTS (SELECT 1 FROM recon_lines l WHERE l.run_id = ? AND l.load_no = ? \
                 AND l.channel = recon_discrepancies.channel \
                 AND l.order_no = recon_discrepancies.order_no \
                 AND l.kind = recon_discrepancies.subject \
                 AND l.refund_no = recon_discrepancies.refund_no)",
        );
        let resolved_elsewhere = sqlx::query(&q)
            .bind(run_id)
            .bind(now)
            .bind(now)
            .bind(&run.channel)
            .bind(run_id)
            .bind(run_id)
            .bind(load_no)
            .execute(&mut *tx)
            .await?
            .rows_affected();

        let q = self.sql(
            "SELECT kind, COUNT(*) AS n FROM recon_candidates WHERE run_id = ? GROUP BY kind \
             ORDER BY kind",
        );
        let rows = sqlx::query(&q).bind(run_id).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut by_kind = Vec::new();
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            let n: i64 = r.try_get("n")?;
            let kind =
                DiscrepancyKind::parse(&kind).ok_or_else(|| corrupt(format!("kind {kind}")))?;
            by_kind.push((kind, to_u64(n)));
        }
        Ok(CompareSummary {
            candidates: by_kind.iter().map(|(_, n)| n).sum(),
            by_kind,
            resolved_elsewhere,
        })
    }

    /// Up to `limit` candidates of the run's current comparison with keys after `after`.
    pub async fn recon_candidates(
        &self,
        run_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Candidate>, StoreError> {
        let q = self.sql(&format!(
            "SELECT candidate_key, {COMPARED_COLUMNS} FROM recon_candidates \
             WHERE run_id = ? AND candidate_key > ? ORDER BY candidate_key LIMIT ?"
        ));
        let rows = sqlx::query(&q)
            .bind(run_id)
            .bind(after.unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(candidate_from_row).collect()
    }

    /// Candidates of the current comparison still waiting for the channel's answer.
    pub async fn recon_unchecked(&self, run_id: &str) -> Result<u64, StoreError> {
        let q = self
            .sql("SELECT COUNT(*) AS n FROM recon_candidates WHERE run_id = ? AND verdict IS NULL");
        let n: i64 = sqlx::query(&q)
            .bind(run_id)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(to_u64(n))
    }

    /// Applies the channel's answers to the run's candidates (see `recon::compare::verdict`):
    /// each becomes a discrepancy (upserted under its key) or is marked dismissed.
    pub async fn recon_record(
        &self,
        run_id: &str,
        checked: &[Checked],
    ) -> Result<RecordSummary, StoreError> {
        let mut tx = self.pool().begin().await?;
        let q = self.sql(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE run_id = ?{}",
            self.for_update()
        ));
        let row = sqlx::query(&q)
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("recon run {run_id}")))?;
        let (run, counters) = run_from_row(&row)?;
        if run.state != RunState::Compared {
            return Err(StoreError::Conflict(format!(
                "run {run_id} is {}, not being compared",
                run.state.as_str()
            )));
        }
        let select = self.sql(&format!(
            "SELECT candidate_key, {COMPARED_COLUMNS} FROM recon_candidates \
             WHERE run_id = ? AND candidate_key = ?"
        ));
        let mark = self.sql(
            "UPDATE recon_candidates SET verdict = ?, verdict_reason = ?, channel_now = ? \
             WHERE run_id = ? AND candidate_key = ?",
        );
        let reopen = |col: &str| {
            format!(
                "{col} = CASE WHEN recon_discrepancies.resolution = 'GoneOnRerun' THEN NULL \
                 ELSE recon_discrepancies.{col} END"
            )
        };
        let upsert = self.sql(&format!(
            "INSERT INTO recon_discrepancies (run_id, discrepancy_key, channel, {COMPARED_COLUMNS}, \
                 channel_now, pass_no, resolved, resolution, resolved_by_run, resolved_at_ms, \
                 created_at_ms, updated_at_ms) \
             SELECT c.run_id, c.candidate_key, ?, c.kind, c.subject, c.order_no, c.refund_no, \
                    c.channel_trade_no, c.line_no, c.ours_currency, c.ours_amount_minor, \
                    c.ours_fee_minor, c.ours_status, c.theirs_currency, c.theirs_amount_minor, \
                    c.theirs_fee_minor, c.theirs_status, ?, ?, 0, {NULL_TEXT}, {NULL_TEXT}, \
                    {NULL_INT}, ?, ? \
             FROM recon_candidates c WHERE c.run_id = ? AND c.candidate_key = ? \
             ON CONFLICT (run_id, discrepancy_key) DO UPDATE SET \
                 channel_trade_no = excluded.channel_trade_no, line_no = excluded.line_no, \
                 ours_currency = excluded.ours_currency, \
                 ours_amount_minor = excluded.ours_amount_minor, \
                 ours_fee_minor = excluded.ours_fee_minor, ours_status = excluded.ours_status, \
                 theirs_currency = excluded.theirs_currency, \
                 theirs_amount_minor = excluded.theirs_amount_minor, \
                 theirs_fee_minor = excluded.theirs_fee_minor, \
                 theirs_status = excluded.theirs_status, channel_now = excluded.channel_now, \
                 pass_no = excluded.pass_no, updated_at_ms = excluded.updated_at_ms, \
                 resolved = CASE WHEN recon_discrepancies.resolution = 'GoneOnRerun' THEN 0 \
                     ELSE recon_discrepancies.resolved END, \
                 {}, {}, {}",
            reopen("resolution"),
            reopen("resolved_by_run"),
            reopen("resolved_at_ms"),
        ));
        let now = now_ms();
        let mut summary = RecordSummary {
            recorded: 0,
            dismissed: 0,
        };
        for c in checked {
            let row = sqlx::query(&select)
                .bind(run_id)
                .bind(&c.key)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "run {run_id} has no candidate {:?} in its current comparison",
                        c.key
                    ))
                })?;
            let candidate = candidate_from_row(&row)?;
            let answer = serde_json::to_string(&c.channel_now).map_err(corrupt)?;
            let (verdict, reason) = match compare::verdict(&candidate, &c.channel_now) {
                Verdict::Record => ("Recorded", None),
                Verdict::Dismiss { reason } => ("Dismissed", Some(reason)),
            };
            sqlx::query(&mark)
                .bind(verdict)
                .bind(reason.clone())
                .bind(&answer)
                .bind(run_id)
                .bind(&c.key)
                .execute(&mut *tx)
                .await?;
            if reason.is_some() {
                summary.dismissed += 1;
                continue;
            }
            sqlx::query(&upsert)
                .bind(&run.channel)
                .bind(&answer)
                .bind(counters.pass_no)
                .bind(now)
                .bind(now)
                .bind(run_id)
                .bind(&c.key)
                .execute(&mut *tx)
                .await?;
            summary.recorded += 1;
        }
        tx.commit().await?;
        Ok(summary)
    }

    /// Completes the run: resolves what this comparison no longer finds and what appeared in
    /// other statements meanwhile, and stores totals and counts (our fees at `fee_rate`).
    pub async fn recon_finish(
        &self,
        run_id: &str,
        fee_rate: Option<ChannelFeeRate>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let q = self.sql(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE run_id = ?{}",
            self.for_update()
        ));
        let row = sqlx::query(&q)
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("recon run {run_id}")))?;
        let (run, counters) = run_from_row(&row)?;
        if !matches!(run.state, RunState::Compared | RunState::Completed) {
            return Err(StoreError::Invalid(format!(
                "run {run_id} is {}: compare it first",
                run.state.as_str()
            )));
        }
        let (load_no, now) = (counters.load_no, now_ms());

        // Open discrepancies this pass did not record again.
        let q = self.sql(
            "UPDATE recon_discrepancies SET resolved = 1, resolution = 'GoneOnRerun', \
             resolved_by_run = run_id, resolved_at_ms = ?, updated_at_ms = ? \
             WHERE run_id = ? AND resolved = 0 AND pass_no < ?",
        );
        sqlx::query(&q)
            .bind(now)
            .bind(now)
            .bind(run_id)
            .bind(counters.pass_no)
            .execute(&mut *tx)
            .await?;
        // Missing records that another statement has meanwhile (whichever run came first).
        let elsewhere = "FROM recon_lines x JOIN recon_runs xr \
             ON xr.run_id = x.run_id AND xr.load_no = x.load_no \
             WHERE x.channel = recon_discrepancies.channel \
             AND x.run_id <> recon_discrepancies.run_id \
             AND x.order_no = recon_discrepancies.order_no \
             AND x.kind = recon_discrepancies.subject \
             AND x.refund_no = recon_discrepancies.refund_no";
        let q = self.sql(&format!(
            "UPDATE recon_discrepancies SET resolved = 1, resolution = 'FoundInStatement', \
             resolved_by_run = (SELECT MIN(x.run_id) {elsewhere}), \
             resolved_at_ms = ?, updated_at_ms = ? \
             WHERE run_id = ? AND resolved = 0 AND kind = 'MissingAtChannel' \
             AND EXISTS (SELECT 1 {elsewhere})"
        ));
        sqlx::query(&q)
            .bind(now)
            .bind(now)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;

        // Totals.
        let q = self.sql("DELETE FROM recon_totals WHERE run_id = ?");
        sqlx::query(&q).bind(run_id).execute(&mut *tx).await?;
        let totals = "INSERT INTO recon_totals (run_id, side, subject, currency, record_count, \
                      amount_minor, fee_minor) \
                      SELECT ?, ?, d.subject, d.currency, COUNT(*), CAST(SUM(d.amount) AS BIGINT), \
                             CAST(SUM(d.fee) AS BIGINT) FROM";
        let q = self.sql(&format!(
            "{totals} (SELECT l.kind AS subject, l.currency AS currency, \
                  l.amount_minor AS amount, COALESCE(l.fee_minor, 0) AS fee \
                  FROM recon_lines l WHERE l.run_id = ? AND l.load_no = ?) d \
             GROUP BY d.subject, d.currency"
        ));
        sqlx::query(&q)
            .bind(run_id)
            .bind(Side::Statement.as_str())
            .bind(run_id)
            .bind(load_no)
            .execute(&mut *tx)
            .await?;
        let q = self.sql(&format!(
            "{totals} (SELECT 'Payment' AS subject, o.currency AS currency, \
                  COALESCE(o.paid_amount_minor, o.amount_minor) AS amount, \
                  COALESCE({}, 0) AS fee FROM {}) d \
             GROUP BY d.subject, d.currency",
            payment_fee(fee_rate),
            paid_on_day()
        ));
        sqlx::query(&q)
            .bind(run_id)
            .bind(Side::Ours.as_str())
            .bind(&run.channel)
            .bind(run.day_start_ms)
            .bind(run.day_end_ms)
            .execute(&mut *tx)
            .await?;
        let q = self.sql(&format!(
            "{totals} (SELECT 'Refund' AS subject, r.currency AS currency, \
                  r.amount_minor AS amount, COALESCE({}, 0) AS fee FROM {}) d \
             GROUP BY d.subject, d.currency",
            refund_fee(fee_rate),
            refunded_on_day()
        ));
        sqlx::query(&q)
            .bind(run_id)
            .bind(Side::Ours.as_str())
            .bind(&run.channel)
            .bind(run.day_start_ms)
            .bind(run.day_end_ms)
            .execute(&mut *tx)
            .await?;

        // Counts: what matched on each side (no open discrepancy of this run about it).
        let open = |subject: &str, order: &str, refund: &str| {
            format!(
                "NOT EXISTS (SELECT 1 FROM recon_discrepancies d WHERE d.run_id = ? \
                 AND d.resolved = 0 AND d.subject = {subject} AND d.order_no = {order} \
                 AND d.refund_no {refund})"
            )
        };
        let q = self.sql(&format!(
            "SELECT COUNT(*) AS n, \
             CAST(COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0) AS BIGINT) AS matched \
             FROM recon_lines l WHERE l.run_id = ? AND l.load_no = ?",
            open("l.kind", "l.order_no", "= l.refund_no")
        ));
        let row = sqlx::query(&q)
            .bind(run_id)
            .bind(run_id)
            .bind(load_no)
            .fetch_one(&mut *tx)
            .await?;
        let matched_lines: i64 = row.try_get("matched")?;
        let q = self.sql(&format!(
            "SELECT COUNT(*) AS n, \
             CAST(COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0) AS BIGINT) AS matched \
             FROM {}",
            open("'Payment'", "o.order_id", "= ''"),
            paid_on_day()
        ));
        let row = sqlx::query(&q)
            .bind(run_id)
            .bind(&run.channel)
            .bind(run.day_start_ms)
            .bind(run.day_end_ms)
            .fetch_one(&mut *tx)
            .await?;
        let (mut ours, mut ours_matched): (i64, i64) = (row.try_get("n")?, row.try_get("matched")?);
        let q = self.sql(&format!(
            "SELECT COUNT(*) AS n, \
             CAST(COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0) AS BIGINT) AS matched \
             FROM {}",
            open("'Refund'", "r.order_id", "IN (r.refund_id, '')"),
            refunded_on_day()
        ));
        let row = sqlx::query(&q)
            .bind(run_id)
            .bind(&run.channel)
            .bind(run.day_start_ms)
            .bind(run.day_end_ms)
            .fetch_one(&mut *tx)
            .await?;
        ours += row.try_get::<i64, _>("n")?;
        ours_matched += row.try_get::<i64, _>("matched")?;

        let q = self.sql(
            "UPDATE recon_runs SET state = 'Completed', matched_lines = ?, our_records = ?, \
             matched_records = ?, completed_at_ms = ?, updated_at_ms = ? WHERE run_id = ?",
        );
        sqlx::query(&q)
            .bind(matched_lines)
            .bind(ours)
            .bind(ours_matched)
            .bind(now)
            .bind(now)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The run's report, with at most `limit` discrepancies (by key).
    pub async fn recon_report(
        &self,
        run_id: &str,
        limit: u32,
    ) -> Result<Option<ReconReport>, StoreError> {
        let q = self.sql(&format!(
            "SELECT {RUN_COLUMNS} FROM recon_runs WHERE run_id = ?"
        ));
        let Some(row) = sqlx::query(&q)
            .bind(run_id)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let (run, c) = run_from_row(&row)?;

        let q = self.sql(
            "SELECT side, subject, currency, record_count, amount_minor, fee_minor \
             FROM recon_totals WHERE run_id = ? ORDER BY side DESC, subject, currency",
        );
        let mut totals = Vec::new();
        for r in sqlx::query(&q).bind(run_id).fetch_all(self.pool()).await? {
            let side: String = r.try_get("side")?;
            let subject: String = r.try_get("subject")?;
            let currency: String = r.try_get("currency")?;
            let currency: Currency = currency.parse().map_err(corrupt)?;
            let scale = currency.minor_units();
            totals.push(Totals {
                side: match side.as_str() {
                    "Statement" => Side::Statement,
                    "Ours" => Side::Ours,
                    other => return Err(corrupt(format!("side {other}"))),
                },
                subject: Subject::parse(&subject)
                    .ok_or_else(|| corrupt(format!("subject {subject}")))?,
                currency,
                count: to_u64(r.try_get("record_count")?),
                amount: Decimal::new(r.try_get("amount_minor")?, scale),
                fee: Decimal::new(r.try_get("fee_minor")?, scale),
            });
        }

        let q = self.sql(
            "SELECT COUNT(*) AS n, \
             CAST(COALESCE(SUM(CASE WHEN verdict = 'Dismissed' THEN 1 ELSE 0 END), 0) AS BIGINT) \
                 AS dismissed \
             FROM recon_candidates WHERE run_id = ?",
        );
        let row = sqlx::query(&q).bind(run_id).fetch_one(self.pool()).await?;
        let (candidates, dismissed): (i64, i64) = (row.try_get("n")?, row.try_get("dismissed")?);

        let q = self.sql(
            "SELECT kind, \
             CAST(SUM(CASE WHEN resolved = 0 THEN 1 ELSE 0 END) AS BIGINT) AS open_n, \
             CAST(SUM(resolved) AS BIGINT) AS resolved_n \
             FROM recon_discrepancies WHERE run_id = ? GROUP BY kind ORDER BY kind",
        );
        let mut by_kind = Vec::new();
        for r in sqlx::query(&q).bind(run_id).fetch_all(self.pool()).await? {
            let kind: String = r.try_get("kind")?;
            by_kind.push(KindCount {
                kind: DiscrepancyKind::parse(&kind)
                    .ok_or_else(|| corrupt(format!("kind {kind}")))?,
                open: to_u64(r.try_get("open_n")?),
                resolved: to_u64(r.try_get("resolved_n")?),
            });
        }

        let q = self.sql(
            "SELECT COUNT(*) AS n FROM recon_discrepancies \
             WHERE resolved_by_run = ? AND run_id <> ?",
        );
        let resolved_elsewhere: i64 = sqlx::query(&q)
            .bind(run_id)
            .bind(run_id)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;

        let mut discrepancies = self
            .recon_discrepancies(run_id, None, limit.saturating_add(1))
            .await?;
        let truncated = discrepancies.len() > limit as usize;
        discrepancies.truncate(limit as usize);

        Ok(Some(ReconReport {
            run_id: run.run_id,
            channel: run.channel,
            date: run.date,
            state: run.state,
            statement_lines: to_u64(c.lines_stored),
            duplicate_lines: to_u64(c.lines_read - c.lines_stored),
            matched_lines: to_u64(c.matched_lines),
            our_records: to_u64(c.our_records),
            matched_records: to_u64(c.matched_records),
            candidates: to_u64(candidates),
            dismissed: to_u64(dismissed),
            totals,
            by_kind,
            resolved_elsewhere: to_u64(resolved_elsewhere),
            discrepancies,
            discrepancies_truncated: truncated,
        }))
    }

    /// Up to `limit` discrepancies the run recorded with keys after `after`, by key.
    pub async fn recon_discrepancies(
        &self,
        run_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Discrepancy>, StoreError> {
        let q = self.sql(&format!(
            "SELECT run_id, discrepancy_key, {COMPARED_COLUMNS}, channel_now, resolved, \
             resolution, resolved_by_run FROM recon_discrepancies \
             WHERE run_id = ? AND discrepancy_key > ? ORDER BY discrepancy_key LIMIT ?"
        ));
        let rows = sqlx::query(&q)
            .bind(run_id)
            .bind(after.unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(discrepancy_from_row).collect()
    }

    /// Open discrepancies of any run of `channel` about order `order_no` (for operators and
    /// tests).
    pub async fn recon_open_discrepancies_for_order(
        &self,
        channel: &str,
        order_no: &str,
    ) -> Result<Vec<Discrepancy>, StoreError> {
        let q = self.sql(&format!(
            "SELECT run_id, discrepancy_key, {COMPARED_COLUMNS}, channel_now, resolved, \
             resolution, resolved_by_run FROM recon_discrepancies \
             WHERE channel = ? AND order_no = ? AND resolved = 0 ORDER BY run_id, discrepancy_key"
        ));
        let rows = sqlx::query(&q)
            .bind(channel)
            .bind(order_no)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(discrepancy_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_fees_come_from_the_rate_not_the_ledger() {
        let rate = ChannelFeeRate::new(Decimal::new(6, 3)).ok();
        let sql = payment_fee(rate);
        assert!(
            sql.contains("COALESCE(o.paid_amount_minor, o.amount_minor)"),
            "{sql}"
        );
        assert!(sql.contains("* 6000"), "{sql}");
        assert!(!sql.contains("platform:fees"), "{sql}");
        assert_eq!(payment_fee(None), NULL_INT);
        assert_eq!(refund_fee(None), NULL_INT);
        assert!(refund_fee_sum(rate).contains("sr.state = 'Succeeded'"));
    }

    #[test]
    fn status_conditions_cover_every_status() {
        let orders = order_status_agrees();
        let refunds = refund_status_agrees();
        for s in LineStatus::ALL {
            let needle = format!("l.status = '{}'", s.as_str());
            assert!(
                orders.contains(&needle) != refunds.contains(&needle),
                "{s:?} in {orders} / {refunds}"
            );
        }
        assert!(orders.contains("'LatePayment'"));
    }
}
