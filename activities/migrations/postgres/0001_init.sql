-- payflow schema (PostgreSQL). Amounts are integer minor units (fen, cents): exact, summable,
-- identical in SQLite and PostgreSQL. Times are unix milliseconds.

CREATE TABLE payment_orders (
    order_id           TEXT PRIMARY KEY,
    merchant_id        TEXT NOT NULL,
    merchant_order_no  TEXT NOT NULL,
    amount_minor       BIGINT NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    product_id         TEXT NOT NULL,
    channel            TEXT NOT NULL,
    subject            TEXT NOT NULL,
    state              TEXT NOT NULL,
    version            BIGINT NOT NULL,
    channel_trade_no   TEXT,
    paid_amount_minor  BIGINT,
    failure_code       TEXT,
    failure_message    TEXT,
    expires_at_ms      BIGINT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    UNIQUE (merchant_id, merchant_order_no)
);

-- Every state change, for operators and audits.
CREATE TABLE order_transitions (
    id          BIGSERIAL PRIMARY KEY,
    order_id    TEXT NOT NULL REFERENCES payment_orders (order_id),
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX order_transitions_order ON order_transitions (order_id);

CREATE TABLE journal_entries (
    entry_id       TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    order_id       TEXT,
    created_at_ms  BIGINT NOT NULL
);
CREATE INDEX journal_entries_order ON journal_entries (order_id);

CREATE TABLE postings (
    entry_id      TEXT NOT NULL REFERENCES journal_entries (entry_id),
    seq           INTEGER NOT NULL,
    account_id    TEXT NOT NULL,
    currency      TEXT NOT NULL,
    debit_minor   BIGINT NOT NULL CHECK (debit_minor >= 0),
    credit_minor  BIGINT NOT NULL CHECK (credit_minor >= 0),
    PRIMARY KEY (entry_id, seq)
);
CREATE INDEX postings_account ON postings (account_id);

-- Channel notifications seen by the ingress (replay detection, unknown orders for operators).
CREATE TABLE channel_notices (
    channel          TEXT NOT NULL,
    notify_id        TEXT NOT NULL,
    out_trade_no     TEXT NOT NULL,
    trade_status     TEXT NOT NULL,
    total_amount     TEXT,
    workflow_id      TEXT,
    matched          INTEGER NOT NULL,
    received_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (channel, notify_id)
);
