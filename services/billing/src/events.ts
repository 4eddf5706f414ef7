import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { TenantCreatedSchema } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { decodeEvent, type EventHandler } from "@trellis/kit/consumer.js";
import { uuidv7 } from "@trellis/kit/events.js";
import { enqueue } from "@trellis/kit/outbox.js";
import { injectTraceHeaders } from "@trellis/kit/tracing.js";
import { catalogQueries } from "./store-catalog.ts";
import type { Tx } from "./store-types.ts";

/** Subjects billing publishes on (trellis.billing.<aggregate>.<event>), captured by its stream. */
export const BILLING_SUBJECTS = ["trellis.billing.>"] as const;

/** Subject of the auth event billing consumes. */
export const TENANT_CREATED_SUBJECT = "trellis.auth.tenant.created";

/** Durable consumer name (and inbox key) of billing's tenant.created consumer. */
export const TENANT_CREATED_CONSUMER = "billing-tenant-created";

/** An event message's fields without event_id, which emit fills in. */
export type EventInit<D extends DescMessage> = Omit<MessageInitShape<D>, "eventId" | "$typeName">;

/**
 * Writes a billing event to the outbox in tx, so it is published if and only if tx commits; its
 * event_id is also the outbox id (ce-id, Nats-Msg-Id).
 */
export async function emit<D extends DescMessage>(tx: Tx, schema: D, init: EventInit<D>): Promise<string> {
  const id = uuidv7();
  const message = create(schema, { ...init, eventId: id } as unknown as MessageInitShape<D>);
  return enqueue(tx, schema, message, {
    id,
    injectTrace: (headers) => {
      injectTraceHeaders(headers);
    },
  });
}

/** Creates (or renames) the billing customer of a tenant auth created; safe to apply twice. */
export const onTenantCreated: EventHandler = async (tx, event) => {
  const created = decodeEvent(TenantCreatedSchema, event);
  if (!created.tenantId) throw new Error(`tenant.created ${event.id} has no tenant_id`);
  await catalogQueries(tx).upsertCustomer(created.tenantId, created.name);
};
