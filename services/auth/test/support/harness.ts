import { randomBytes } from "node:crypto";
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { type CallOptions, type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService, type Tokens } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { connectNats } from "@trellis/kit/nats.js";
import { type ServiceInstance, startTestService } from "@trellis/kit/service.js";
import { createTestDatabase, eventually, uniqueName } from "@trellis/kit/testing.js";
import type { JetStreamManager, NatsConnection } from "nats";
import postgres from "postgres";
import { type AuthApp, createAuthService } from "../../src/server.ts";
import { totpCode, totpStep } from "../../src/totp.ts";

const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const natsUrl = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";

/** A clock the test moves: TOTP codes are checked against it. */
export interface TestClock {
  now(): number;
  /** Moves the clock by ms (may be negative). */
  advance(ms: number): void;
}

/** An event as it arrived on NATS. */
export interface ArrivedEvent {
  readonly subject: string;
  readonly type: string;
  readonly headers: Record<string, string>;
  readonly data: Uint8Array;
}

/** A running auth service on a fresh database and a private stream, with a client and helpers. */
export interface AuthHarness {
  readonly instance: ServiceInstance & { readonly baseUrl: string };
  readonly app: AuthApp;
  readonly client: Client<typeof AuthService>;
  /** Direct SQL on the service's database, for assertions only. */
  readonly sql: postgres.Sql;
  readonly clock: TestClock;
  readonly subjectPrefix: string;
  /** Every event on the service's stream so far. */
  events(): Promise<ArrivedEvent[]>;
  /** Waits until an event of schema matching pred arrives and returns it decoded. */
  waitForEvent<D extends DescMessage>(
    schema: D,
    pred?: (m: MessageShape<D>) => boolean,
  ): Promise<MessageShape<D>>;
  close(): Promise<void>;
}

/** Call options carrying a bearer token and optional extra headers. */
export function bearer(token: string, headers: Record<string, string> = {}): CallOptions {
  return { headers: { authorization: `Bearer ${token}`, ...headers } };
}

/** Starts auth for a test file; env overrides auth's and the kit's variables. */
export async function startAuth(env: Record<string, string> = {}): Promise<AuthHarness> {
  const subjectPrefix = `t${randomBytes(5).toString("hex")}.auth`;
  const stream = uniqueName("AUTH_TEST");
  let offset = 0;
  const clock: TestClock = {
    now: () => Date.now() + offset,
    advance(ms) {
      offset += ms;
    },
  };
  const fullEnv = {
    AUTH_STREAM_NAME: stream,
    AUTH_SUBJECT_PREFIX: subjectPrefix,
    TRUST_FORWARDED_IDENTITY: "true",
    ...env,
  };
  const service = createAuthService(fullEnv, { clock: clock.now });
  const db = await createTestDatabase("auth_test", adminUrl);
  let instance: (ServiceInstance & { readonly baseUrl: string }) | undefined;
  let nc: NatsConnection | undefined;
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  try {
    instance = await startTestService(service.definition, { databaseUrl: db.url, natsUrl, env: fullEnv });
    nc = await connectNats(natsUrl, { name: "auth-test" });
  } catch (error) {
    await instance?.close();
    await sql.end();
    await db.drop();
    throw error;
  }
  const jsm: JetStreamManager = await nc.jetstreamManager();
  const client = createClient(
    AuthService,
    createConnectTransport({ baseUrl: instance.baseUrl, httpVersion: "2" }),
  );

  const events = async (): Promise<ArrivedEvent[]> => {
    let info: Awaited<ReturnType<typeof jsm.streams.info>>;
    try {
      info = await jsm.streams.info(stream);
    } catch {
      return []; // The relay creates the stream on its first publish.
    }
    const out: ArrivedEvent[] = [];
    for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      const headers: Record<string, string> = {};
      for (const key of m.header.keys()) headers[key] = m.header.get(key);
      out.push({ subject: m.subject, type: headers["ce-type"] ?? "", headers, data: m.data });
    }
    return out;
  };

  return {
    instance,
    app: service.app(),
    client,
    sql,
    clock,
    subjectPrefix,
    events,
    waitForEvent(schema, pred = () => true) {
      return eventually(
        async () => {
          for (const e of await events()) {
            if (e.type !== schema.typeName) continue;
            const message = fromBinary(schema, e.data);
            if (pred(message)) return message;
          }
          return undefined;
        },
        { what: `event ${schema.typeName}` },
      );
    },
    async close() {
      await instance.close();
      await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
      await sql.end();
      await db.drop();
    },
  };
}

let counter = 0;

/** A fresh, unique email address. */
export function newEmail(label = "user"): string {
  counter++;
  return `${label}.${counter}.${randomBytes(4).toString("hex")}@example.com`;
}

/** A password that meets the sign-up rule. */
export const password = "correct horse battery staple";

/** Signs up a new owner of a new tenant. */
export async function signUp(
  h: AuthHarness,
  email = newEmail("owner"),
  options?: CallOptions,
): Promise<{ email: string; userId: string; tenantId: string; tokens: Tokens }> {
  const res = await h.client.signUp({ email, password, tenantName: `Tenant of ${email}` }, options);
  if (!res.tokens) throw new Error("SignUp answered no tokens");
  return { email, userId: res.userId, tenantId: res.tenantId, tokens: res.tokens };
}

/** The TOTP code of secret at the harness clock, offset by steps. */
export function codeAt(h: AuthHarness, secret: string, steps = 0): string {
  return totpCode(secret, totpStep(h.clock.now()) + steps);
}

/** The decoded claims of a JWT (unverified), with its header. */
export function decodeJwt(token: string): {
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
} {
  const [header, claims] = token
    .split(".")
    .slice(0, 2)
    .map((part) => JSON.parse(Buffer.from(part, "base64url").toString()));
  return { header, claims };
}
