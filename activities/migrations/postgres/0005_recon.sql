-- Reconciliation (对账) of channel statements against our orders and refunds (PostgreSQL). See
-- activities/src/store/recon.rs for how the tables are used. Amounts are integer minor units;
-- times unix milliseconds; flags 0/1.

-- One run per channel and business day.
CREATE TABLE recon_runs (
    run_id            TEXT PRIMARY KEY,
    channel           TEXT NOT NULL,
    business_date     TEXT NOT NULL,
    day_start_ms      BIGINT NOT NULL,
    day_end_ms        BIGINT NOT NULL,
    state             TEXT NOT NULL
        CHECK (state IN ('Created', 'Loading', 'Loaded', 'Compared', 'Completed')),
    -- The current load of the statement and the current comparison.
    load_no           BIGINT NOT NULL,
    pass_no           BIGINT NOT NULL,
    itemised_refunds  BIGINT NOT NULL CHECK (itemised_refunds IN (0, 1)),
    lines_read        BIGINT NOT NULL,
    lines_stored      BIGINT NOT NULL,
    matched_lines     BIGINT NOT NULL,
    our_records       BIGINT NOT NULL,
    matched_records   BIGINT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL,
    completed_at_ms   BIGINT,
    UNIQUE (channel, business_date)
);

-- The statement in the standard form. refund_no is '' on payments and on a trade's refunded
-- total (formats that do not itemise refunds).
CREATE TABLE recon_lines (
    run_id             TEXT NOT NULL REFERENCES recon_runs (run_id),
    load_no            BIGINT NOT NULL,
    line_no            BIGINT NOT NULL,
    channel            TEXT NOT NULL,
    channel_trade_no   TEXT NOT NULL,
    channel_refund_no  TEXT,
    order_no           TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('Payment', 'Refund')),
    refund_no          TEXT NOT NULL,
    currency           TEXT NOT NULL,
    amount_minor       BIGINT NOT NULL CHECK (amount_minor > 0),
    fee_minor          BIGINT CHECK (fee_minor >= 0),
    occurred_at_ms     BIGINT NOT NULL,
    status             TEXT NOT NULL,
    PRIMARY KEY (run_id, load_no, channel_trade_no, kind, refund_no)
);
-- Is this record in any statement of the channel?
CREATE INDEX recon_lines_subject ON recon_lines (channel, order_no, kind, refund_no);

-- The differences of a run's current comparison, before and after the channel was asked.
CREATE TABLE recon_candidates (
    run_id               TEXT NOT NULL REFERENCES recon_runs (run_id),
    candidate_key        TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    subject              TEXT NOT NULL,
    order_no             TEXT NOT NULL,
    refund_no            TEXT NOT NULL,
    channel_trade_no     TEXT NOT NULL,
    line_no              BIGINT,
    ours_currency        TEXT,
    ours_amount_minor    BIGINT,
    ours_fee_minor       BIGINT,
    ours_status          TEXT,
    theirs_currency      TEXT,
    theirs_amount_minor  BIGINT,
    theirs_fee_minor     BIGINT,
    theirs_status        TEXT,
    -- NULL until checked: Recorded | Dismissed, with the channel's answer (JSON).
    verdict              TEXT CHECK (verdict IN ('Recorded', 'Dismissed')),
    verdict_reason       TEXT,
    channel_now          TEXT,
    PRIMARY KEY (run_id, candidate_key)
);

CREATE TABLE recon_discrepancies (
    run_id               TEXT NOT NULL REFERENCES recon_runs (run_id),
    discrepancy_key      TEXT NOT NULL,
    channel              TEXT NOT NULL,
    kind                 TEXT NOT NULL CHECK (kind IN ('MissingLocally', 'MissingAtChannel',
                             'AmountMismatch', 'StatusMismatch', 'FeeMismatch')),
    subject              TEXT NOT NULL CHECK (subject IN ('Payment', 'Refund')),
    order_no             TEXT NOT NULL,
    refund_no            TEXT NOT NULL,
    channel_trade_no     TEXT NOT NULL,
    line_no              BIGINT,
    ours_currency        TEXT,
    ours_amount_minor    BIGINT,
    ours_fee_minor       BIGINT,
    ours_status          TEXT,
    theirs_currency      TEXT,
    theirs_amount_minor  BIGINT,
    theirs_fee_minor     BIGINT,
    theirs_status        TEXT,
    channel_now          TEXT,
    -- The comparison that last recorded it.
    pass_no              BIGINT NOT NULL,
    resolved             BIGINT NOT NULL CHECK (resolved IN (0, 1)),
    resolution           TEXT CHECK (resolution IN ('FoundInStatement', 'GoneOnRerun')),
    resolved_by_run      TEXT,
    resolved_at_ms       BIGINT,
    created_at_ms        BIGINT NOT NULL,
    updated_at_ms        BIGINT NOT NULL,
    PRIMARY KEY (run_id, discrepancy_key)
);
CREATE INDEX recon_discrepancies_order ON recon_discrepancies (run_id, order_no);
CREATE INDEX recon_discrepancies_open ON recon_discrepancies (channel, order_no) WHERE resolved = 0;
CREATE INDEX recon_discrepancies_resolver ON recon_discrepancies (resolved_by_run);

-- Count and sums per side (Statement | Ours), subject and currency, as of the run's finish.
CREATE TABLE recon_totals (
    run_id        TEXT NOT NULL REFERENCES recon_runs (run_id),
    side          TEXT NOT NULL CHECK (side IN ('Statement', 'Ours')),
    subject       TEXT NOT NULL CHECK (subject IN ('Payment', 'Refund')),
    currency      TEXT NOT NULL,
    record_count  BIGINT NOT NULL,
    amount_minor  BIGINT NOT NULL,
    fee_minor     BIGINT NOT NULL,
    PRIMARY KEY (run_id, side, subject, currency)
);

-- Our records of a business day: payments by the time of their first paying transition,
-- refunds by creation time. (No index leading with to_state: the planners would pick it for
-- the per-order "earlier paying transition?" lookup, which must use the order_id index.)
CREATE INDEX order_transitions_at ON order_transitions (at_ms);
CREATE INDEX refunds_created_at ON refunds (created_at_ms);
