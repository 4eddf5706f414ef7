import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { eventSubject } from "@trellis/kit/events.js";
import { enqueue } from "@trellis/kit/outbox.js";
import type postgres from "postgres";

/** The subject prefix of the events.proto subjects; AUTH_SUBJECT_PREFIX replaces it. */
export const contractSubjectPrefix = "trellis.auth";

/** The subject an auth event is published on under prefix ("trellis.auth.user.created" by default). */
export function authSubject(schema: DescMessage, prefix: string): string {
  const subject = eventSubject(schema);
  if (!subject.startsWith(`${contractSubjectPrefix}.`))
    throw new Error(`${schema.typeName} is not an auth event`);
  return prefix + subject.slice(contractSubjectPrefix.length);
}

/** How events are written: the subject prefix and the trace context to carry. */
export interface EventOptions {
  readonly subjectPrefix: string;
  readonly injectTrace?: (headers: Record<string, string>) => void;
}

/** Writes events to the outbox of the transaction it was made for. */
export type Emit = <D extends DescMessage>(schema: D, message: MessageInitShape<D>) => Promise<string>;

/** An emitter bound to tx: each event commits or rolls back with the state change it describes. */
export function createEmitter(tx: postgres.TransactionSql<{ bigint: bigint }>, options: EventOptions): Emit {
  return (schema, message) =>
    enqueue(tx, schema, create(schema, message), {
      subject: authSubject(schema, options.subjectPrefix),
      injectTrace: options.injectTrace,
    });
}
