-- Issued invoices: one row per invoice, never updated. `document` is the invoice as served
-- (JSON, amounts as decimal strings), which the next invoice reads to bill what arrived late.
-- Written once under the insert token `invoice/<invoice_id>`, so a second issue of
-- the same invoice (a retry, or two callers at once) is dropped by ClickHouse and the first
-- stays the only one.
CREATE TABLE IF NOT EXISTS {db}.billing_invoices
(
    invoice_id          String,
    tenant_id           String,
    period              String,
    issued_at           DateTime64(3, 'UTC'),
    document            String
)
ENGINE = MergeTree
ORDER BY (tenant_id, period, invoice_id)
SETTINGS non_replicated_deduplication_window = 10000
