import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { fromBinary } from "@bufbuild/protobuf";
import { eventually } from "@trellis/kit/testing.js";
import { connect, type NatsConnection } from "nats";

/** An event core published, as seen on NATS. */
export interface SeenEvent {
  readonly subject: string;
  readonly type: string;
  readonly id: string;
  readonly data: Uint8Array;
}

/** Collects every message on trellis.core.> of a NATS server. */
export interface EventTap {
  readonly seen: SeenEvent[];
  /** Waits for an event of the schema matching the predicate and returns it decoded. */
  waitFor<D extends DescMessage>(
    schema: D,
    match: (event: MessageShape<D>) => boolean,
    timeoutMs?: number,
  ): Promise<MessageShape<D>>;
  /** Decoded events of the schema seen so far that match. */
  all<D extends DescMessage>(schema: D, match: (event: MessageShape<D>) => boolean): MessageShape<D>[];
  close(): Promise<void>;
}

/** Subscribes to core's subjects on the server at url. */
export async function tapCoreEvents(url: string): Promise<EventTap> {
  const nc: NatsConnection = await connect({ servers: url });
  const seen: SeenEvent[] = [];
  const sub = nc.subscribe("trellis.core.>");
  void (async () => {
    for await (const msg of sub) {
      seen.push({
        subject: msg.subject,
        type: msg.headers?.get("ce-type") ?? "",
        id: msg.headers?.get("ce-id") ?? "",
        data: msg.data,
      });
    }
  })();
  await nc.flush();
  const all = <D extends DescMessage>(schema: D, match: (event: MessageShape<D>) => boolean) =>
    seen
      .filter((e) => e.type === schema.typeName)
      .map((e) => fromBinary(schema, e.data))
      .filter(match);
  return {
    seen,
    all,
    waitFor: (schema, match, timeoutMs = 10_000) =>
      eventually(() => all(schema, match)[0], { timeoutMs, what: `a ${schema.typeName} event` }),
    close: () => nc.close(),
  };
}
