-- Billing's schema. Money is always bigint minor units plus the plan's (or charge's) currency;
-- never a float. Lists page by the `seq` columns (creation order, exact even when the billing
-- clock is frozen and many rows share a timestamp).

-- The catalog, shared by every tenant.
create table plans (
  seq                   bigserial   not null unique,
  id                    text        primary key,
  name                  text        not null,
  description           text        not null default '',
  currency              text        not null check (currency ~ '^[A-Z]{3}$'),
  trial_days            integer     not null default 0 check (trial_days between 0 and 365),
  -- null: no limit on orders.
  max_order_value_minor bigint      check (max_order_value_minor > 0),
  active                boolean     not null default true,
  created_at            timestamptz not null
);

create table plan_prices (
  plan_id      text   not null references plans (id),
  interval     text   not null check (interval in ('month', 'year')),
  amount_minor bigint not null check (amount_minor >= 0),
  primary key (plan_id, interval)
);

create table plan_metered_components (
  plan_id           text   not null references plans (id),
  metric            text   not null,
  unit_price_minor  bigint not null check (unit_price_minor >= 0),
  included_quantity bigint not null default 0 check (included_quantity >= 0),
  primary key (plan_id, metric)
);

-- One row per tenant, created by the auth.tenant.created consumer (or lazily on first use).
-- Subscription-changing transactions lock this row: it is the tenant's mutex.
create table customers (
  tenant_id                 text        primary key,
  name                      text        not null default '',
  default_payment_method_id text,
  created_at                timestamptz not null default now()
);

-- A tenant's billing clock: its time is greatest(wall clock, now_at).
create table billing_clocks (
  tenant_id text        primary key,
  now_at    timestamptz not null
);

create table payment_methods (
  seq          bigserial   not null unique,
  id           text        primary key,
  tenant_id    text        not null references customers (tenant_id),
  -- The provider's reference to charge (the sandbox token, or a real provider's id).
  provider_ref text        not null,
  brand        text        not null,
  last4        text        not null,
  exp_month    integer     not null,
  exp_year     integer     not null,
  created_at   timestamptz not null
);
create index payment_methods_tenant_idx on payment_methods (tenant_id, seq);

create table subscriptions (
  seq                  bigserial   not null unique,
  id                   text        primary key,
  tenant_id            text        not null references customers (tenant_id),
  plan_id              text        not null references plans (id),
  interval             text        not null check (interval in ('month', 'year')),
  status               text        not null check (status in ('trialing', 'active', 'past_due', 'canceled')),
  payment_method_id    text        references payment_methods (id),
  trial_ends_at        timestamptz,
  -- Renewals fall on billing_anchor plus whole intervals (calendar months, clamped to month end).
  billing_anchor       timestamptz not null,
  current_period_start timestamptz not null,
  current_period_end   timestamptz not null,
  cancel_at_period_end boolean     not null default false,
  canceled_at          timestamptz,
  cancellation_reason  text        check (cancellation_reason in ('requested', 'payment_failed')),
  created_at           timestamptz not null
);
-- At most one subscription per tenant that has not ended.
create unique index subscriptions_one_live_idx on subscriptions (tenant_id) where status <> 'canceled';
create index subscriptions_due_idx on subscriptions (current_period_end) where status <> 'canceled';

create table charges (
  seq                 bigserial   not null unique,
  id                  text        primary key,
  tenant_id           text        not null,
  amount_minor        bigint      not null check (amount_minor > 0),
  currency            text        not null,
  amount_refunded     bigint      not null default 0 check (amount_refunded >= 0 and amount_refunded <= amount_minor),
  status              text        not null check (status in ('succeeded', 'failed', 'partially_refunded', 'refunded')),
  failure_code        text,
  failure_message     text        not null default '',
  payment_method      text        not null,
  description         text        not null default '',
  metadata            jsonb       not null default '{}'::jsonb,
  invoice_id          text,
  provider_charge_id  text,
  created_at          timestamptz not null
);
create index charges_tenant_idx on charges (tenant_id, seq);

create table refunds (
  seq                bigserial   not null unique,
  id                 text        primary key,
  tenant_id          text        not null,
  charge_id          text        not null references charges (id),
  amount_minor       bigint      not null check (amount_minor > 0),
  currency           text        not null,
  reason             text        not null default '',
  provider_refund_id text,
  created_at         timestamptz not null
);
create index refunds_charge_idx on refunds (charge_id);

-- Idempotency keys: scoped to the tenant, kept 24 hours (wall clock) with the first response.
create table idempotency_keys (
  tenant_id    text        not null,
  key          text        not null,
  method       text        not null,
  request_hash bytea       not null,
  response     bytea,
  created_at   timestamptz not null default now(),
  expires_at   timestamptz not null,
  primary key (tenant_id, key)
);
create index idempotency_keys_expiry_idx on idempotency_keys (expires_at);

create table invoices (
  seq                     bigserial   not null unique,
  id                      text        primary key,
  tenant_id               text        not null references customers (tenant_id),
  subscription_id         text        not null references subscriptions (id),
  plan_id                 text        not null references plans (id),
  -- Null while draft; then 1, 2, 3 … per tenant with no gaps (see invoice_counters).
  number                  bigint,
  status                  text        not null check (status in ('draft', 'open', 'paid', 'void', 'uncollectible')),
  currency                text        not null,
  subtotal_minor          bigint      not null default 0,
  tax_rate_bps            integer     not null default 0,
  tax_minor               bigint      not null default 0,
  total_minor             bigint      not null default 0,
  amount_paid_minor       bigint      not null default 0,
  period_start            timestamptz not null,
  period_end              timestamptz not null,
  attempt_count           integer     not null default 0,
  next_payment_attempt_at timestamptz,
  created_at              timestamptz not null,
  finalized_at            timestamptz,
  paid_at                 timestamptz,
  unique (tenant_id, number),
  check ((status = 'draft') = (number is null))
);
create index invoices_tenant_idx on invoices (tenant_id, seq);
create unique index invoices_one_draft_idx on invoices (subscription_id) where status = 'draft';
create index invoices_retry_idx on invoices (next_payment_attempt_at) where status = 'open';

create table invoice_lines (
  seq               bigserial   not null unique,
  id                text        primary key,
  invoice_id        text        not null references invoices (id),
  kind              text        not null check (kind in ('subscription', 'proration', 'usage')),
  description       text        not null,
  plan_id           text        not null,
  metric            text        not null default '',
  quantity          bigint      not null,
  unit_amount_minor bigint      not null,
  amount_minor      bigint      not null,
  period_start      timestamptz not null,
  period_end        timestamptz not null
);
create index invoice_lines_invoice_idx on invoice_lines (invoice_id, seq);

-- The last invoice number given per tenant. Finalization locks the row (FOR UPDATE) and bumps it
-- in the same transaction that numbers the invoice, so a rollback returns the number: no gaps.
create table invoice_counters (
  tenant_id   text   primary key,
  last_number bigint not null default 0
);

create table usage_records (
  seq             bigserial   not null unique,
  id              text        primary key,
  tenant_id       text        not null,
  subscription_id text        not null references subscriptions (id),
  -- The plan at recording time prices the usage at period close.
  plan_id         text        not null,
  metric          text        not null,
  quantity        bigint      not null check (quantity > 0),
  usage_at        timestamptz not null,
  created_at      timestamptz not null
);
create index usage_records_period_idx on usage_records (subscription_id, usage_at);
