-- Ledger accounts, balance shards and two-phase holds (SQLite). Postings stay append-only in
-- `postings` (0001); balances are kept per account in a few shard rows so concurrent postings
-- into one hot account do not all queue on one row (see docs/DESIGN.md, "Hot accounts").

CREATE TABLE accounts (
    account_id                      TEXT PRIMARY KEY,
    owner                           TEXT NOT NULL,
    kind                            TEXT NOT NULL
        CHECK (kind IN ('asset', 'liability', 'revenue', 'expense')),
    currency                        TEXT NOT NULL,
    debits_must_not_exceed_credits  BIGINT NOT NULL CHECK (debits_must_not_exceed_credits IN (0, 1)),
    credits_must_not_exceed_debits  BIGINT NOT NULL CHECK (credits_must_not_exceed_debits IN (0, 1)),
    created_at_ms                   BIGINT NOT NULL,
    CHECK (debits_must_not_exceed_credits + credits_must_not_exceed_debits < 2)
);

-- Posted totals of an account = the sum of its shard rows. A posting adds to one shard picked
-- at random; the rows are written in the posting's transaction, so they always equal the sum
-- of the account's postings.
CREATE TABLE account_balances (
    account_id      TEXT NOT NULL REFERENCES accounts (account_id),
    shard           BIGINT NOT NULL,
    debits_posted   BIGINT NOT NULL CHECK (debits_posted >= 0),
    credits_posted  BIGINT NOT NULL CHECK (credits_posted >= 0),
    PRIMARY KEY (account_id, shard)
);

-- Two-phase transfers. state: pending | posted | voided | tombstone (a void that found no
-- hold: recorded so that a later hold with the same id is refused). A pending hold past
-- expires_at_ms is expired: not counted, not postable.
CREATE TABLE holds (
    hold_id         TEXT PRIMARY KEY,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'posted', 'voided', 'tombstone')),
    kind            TEXT,
    order_id        TEXT,
    debit_account   TEXT REFERENCES accounts (account_id),
    credit_account  TEXT REFERENCES accounts (account_id),
    currency        TEXT,
    amount_minor    BIGINT CHECK (amount_minor > 0),
    expires_at_ms   BIGINT,
    posted_minor    BIGINT,
    entry_id        TEXT,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
-- Pending sums read only the live holds.
CREATE INDEX holds_pending_debit ON holds (debit_account) WHERE state = 'pending';
CREATE INDEX holds_pending_credit ON holds (credit_account) WHERE state = 'pending';
CREATE INDEX holds_order ON holds (order_id);

-- Postings written before accounts existed (payment successes only): open their accounts as
-- the chart in accounting.rs would, and carry their totals into shard 0.
INSERT INTO accounts (account_id, owner, kind, currency, debits_must_not_exceed_credits,
                      credits_must_not_exceed_debits, created_at_ms)
SELECT account_id,
       CASE WHEN account_id LIKE 'channel:%:clearing' THEN substr(account_id, 1, length(account_id) - 9)
            WHEN account_id LIKE 'merchant:%:payable' THEN substr(account_id, 1, length(account_id) - 8)
            ELSE account_id END,
       CASE WHEN account_id LIKE 'channel:%' THEN 'asset' ELSE 'liability' END,
       MIN(currency),
       CASE WHEN account_id LIKE 'merchant:%:payable' THEN 1 ELSE 0 END,
       0,
       0
FROM postings GROUP BY account_id;

INSERT INTO account_balances (account_id, shard, debits_posted, credits_posted)
SELECT account_id, 0, SUM(debit_minor), SUM(credit_minor) FROM postings GROUP BY account_id;
