-- The consumer inbox: one row per (consumer, event) applied, written in the same transaction as
-- the handler's effect, so a redelivered event is recognised and skipped.
create table inbox (
  consumer    text        not null,
  event_id    text        not null,
  received_at timestamptz not null default now(),
  primary key (consumer, event_id)
);
