-- A recharge is a payment whose success credits a wallet (wallet:{owner}) instead of the
-- merchant's balance; NULL for ordinary payments.
ALTER TABLE payment_orders ADD COLUMN recharge_wallet TEXT;
