-- Core's schema: catalog, inventory (stock, its ledger, reservations), orders with their history,
-- the CreateOrder saga's persisted state, and the cached billing status of each tenant.

create table products (
  tenant_id           text        not null,
  product_id          text        not null,
  sku                 text        not null,
  name                text        not null,
  description         text        not null default '',
  price_minor         bigint      not null check (price_minor >= 0),
  currency            text        not null check (currency ~ '^[A-Z]{3}$'),
  active              boolean     not null,
  low_stock_threshold integer     not null default 0 check (low_stock_threshold >= 0),
  version             bigint      not null default 1,
  created_at          timestamptz not null default now(),
  updated_at          timestamptz not null default now(),
  primary key (tenant_id, product_id),
  constraint products_tenant_sku_key unique (tenant_id, sku)
);

-- One row per product. available = on_hand - reserved. The CHECK is the last line of defence:
-- every write is also a conditional UPDATE, so concurrent orders can never drive it negative.
create table stock (
  tenant_id    text        not null,
  product_id   text        not null,
  on_hand      bigint      not null default 0,
  reserved     bigint      not null default 0,
  -- Set while available is at or below the product's threshold, so StockLow fires once per crossing.
  low_notified boolean     not null default false,
  updated_at   timestamptz not null default now(),
  primary key (tenant_id, product_id),
  foreign key (tenant_id, product_id) references products (tenant_id, product_id),
  constraint stock_never_negative check (reserved >= 0 and on_hand >= reserved)
);

-- The stock ledger of AdjustStock, keyed by idempotency key: a repeat answers the stored result.
create table stock_adjustments (
  tenant_id       text        not null,
  idempotency_key text        not null,
  product_id      text        not null,
  delta           integer     not null,
  reason          text        not null,
  on_hand_after   bigint      not null,
  reserved_after  bigint      not null,
  created_at      timestamptz not null default now(),
  primary key (tenant_id, idempotency_key)
);

create table orders (
  tenant_id       text        not null,
  order_id        text        not null,
  user_id         text        not null,
  status          text        not null check (status in
                    ('pending', 'reserved', 'paid', 'confirmed', 'fulfilled', 'cancelled', 'failed')),
  failure_reason  text        not null default '',
  cancel_reason   text        not null default '',
  total_minor     bigint      not null check (total_minor >= 0),
  currency        text        not null,
  payment_method  text        not null,
  payment_id      text        not null default '',
  idempotency_key text        not null,
  -- Fingerprint of the request, so a reused key with a different order is refused.
  request_hash    text        not null,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  primary key (tenant_id, order_id),
  constraint orders_tenant_idempotency_key unique (tenant_id, idempotency_key)
);
create index orders_status_idx on orders (tenant_id, status, order_id);

create table order_items (
  tenant_id        text    not null,
  order_id         text    not null,
  line             integer not null,
  product_id       text    not null,
  sku              text    not null,
  name             text    not null,
  quantity         integer not null check (quantity > 0),
  unit_price_minor bigint  not null check (unit_price_minor >= 0),
  currency         text    not null,
  primary key (tenant_id, order_id, line),
  foreign key (tenant_id, order_id) references orders (tenant_id, order_id)
);

create table order_history (
  id        bigserial   primary key,
  tenant_id text        not null,
  order_id  text        not null,
  status    text        not null,
  note      text        not null default '',
  at        timestamptz not null default now()
);
create index order_history_order_idx on order_history (tenant_id, order_id, id);

-- Units an order holds. held: reserved by the saga, released by the sweeper after expires_at;
-- committed: paid for, held until fulfilled or released by a cancellation; then fulfilled or released.
create table reservations (
  tenant_id  text        not null,
  order_id   text        not null,
  product_id text        not null,
  quantity   integer     not null check (quantity > 0),
  status     text        not null check (status in ('held', 'committed', 'released', 'fulfilled')),
  expires_at timestamptz,
  updated_at timestamptz not null default now(),
  primary key (tenant_id, order_id, product_id),
  check (status <> 'held' or expires_at is not null)
);
create index reservations_expiry_idx on reservations (expires_at) where status = 'held';

-- The CreateOrder saga of each order: where it stands and what it must do next. Every step writes
-- its outcome here (and to saga_log) in the transaction that makes the step's change, before the
-- next step starts; a restarted service resumes every row that is not completed or compensated.
create table sagas (
  order_id         text        primary key,
  tenant_id        text        not null,
  status           text        not null check (status in ('running', 'compensating', 'completed', 'compensated')),
  step             text        not null,
  attempts         integer     not null default 0,
  next_attempt_at  timestamptz not null default now(),
  -- What core knows about the payment: none, pending (a Charge may be in flight), succeeded,
  -- failed (nothing charged), unknown (given up without an answer: probed later), refunded.
  charge_state     text        not null default 'none' check (charge_state in
                     ('none', 'pending', 'succeeded', 'failed', 'unknown', 'refunded')),
  charge_id        text        not null default '',
  failure_reason   text        not null default '',
  cancel_requested boolean     not null default false,
  cancel_reason    text        not null default '',
  cancelled_by     text        not null default '',
  last_error       text        not null default '',
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now()
);
create index sagas_due_idx on sagas (next_attempt_at) where status in ('running', 'compensating');

create table saga_log (
  id       bigserial   primary key,
  order_id text        not null,
  step     text        not null,
  outcome  text        not null,
  detail   text        not null default '',
  attempt  integer     not null default 0,
  at       timestamptz not null default now()
);
create index saga_log_order_idx on saga_log (order_id, id);

-- Billing's answer to GetTenantBillingStatus, cached for the business rules. Billing's
-- subscription events mark a row stale (and carry the new status); the next order refetches.
create table tenant_billing (
  tenant_id           text        primary key,
  subscription_status text        not null,
  plan_id             text        not null default '',
  max_order_minor     bigint,
  max_order_currency  text,
  fetched_at          timestamptz,
  status_at           timestamptz not null default now(),
  stale               boolean     not null default true,
  version             bigint      not null default 0
);
