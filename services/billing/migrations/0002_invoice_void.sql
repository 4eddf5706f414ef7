-- Voiding (VoidInvoice): an open or uncollectible invoice becomes 'void' and keeps its number;
-- voided_at is the tenant's billing clock time of the void, set exactly when the status is 'void'.
alter table invoices
  add column voided_at timestamptz,
  add constraint invoices_voided_at_check check ((status = 'void') = (voided_at is not null));
