-- Idempotency keys are scoped to the caller (the name of the API_TOKEN entry
-- that placed the order): two internal services that both use "cart-42" as a
-- key get two orders, and neither can read the other's order back through a
-- retry. Orders placed before this migration belong to the caller "default",
-- the name a bare API_TOKEN (or a server without one) gives its callers.
ALTER TABLE orders ADD COLUMN caller TEXT NOT NULL DEFAULT 'default';
ALTER TABLE orders DROP CONSTRAINT orders_idempotency_key_key;
ALTER TABLE orders ADD CONSTRAINT orders_caller_idempotency_key UNIQUE (caller, idempotency_key);
