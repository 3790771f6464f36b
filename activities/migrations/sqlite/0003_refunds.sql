-- Refunds. A refund reserves part of its order's paid amount when it is accepted: refunds in
-- state Pending or Succeeded never sum to more than the order's paid amount (checked with the
-- order row locked, in the same transaction as the insert).

CREATE TABLE refunds (
    refund_id           TEXT PRIMARY KEY,
    order_id            TEXT NOT NULL REFERENCES payment_orders (order_id),
    merchant_id         TEXT NOT NULL,
    merchant_refund_no  TEXT NOT NULL,
    kind                TEXT NOT NULL,
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    -- The share of our fee this refund returns (merchant refunds of a payment we charged for).
    fee_minor           BIGINT NOT NULL DEFAULT 0 CHECK (fee_minor >= 0),
    currency            TEXT NOT NULL,
    reason              TEXT NOT NULL,
    state               TEXT NOT NULL,
    failure_code        TEXT,
    failure_message     TEXT,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL,
    UNIQUE (merchant_id, merchant_refund_no)
);
CREATE INDEX refunds_order ON refunds (order_id);
