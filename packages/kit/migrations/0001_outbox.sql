-- The transactional outbox: events written in the same transaction as the state change,
-- published to NATS JetStream by the relay (relay.ts), which sets sent_at.
create table outbox (
  seq        bigserial primary key,
  id         text        not null unique,
  subject    text        not null,
  type       text        not null,
  payload    bytea       not null,
  headers    jsonb       not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  sent_at    timestamptz
);

-- The relay only ever scans unsent rows in order.
create index outbox_unsent_idx on outbox (seq) where sent_at is null;
-- Purging sent rows by age.
create index outbox_sent_at_idx on outbox (sent_at) where sent_at is not null;
