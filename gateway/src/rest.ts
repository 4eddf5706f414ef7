import type { DescField, DescMessage, DescMethod, JsonObject, JsonValue } from "@bufbuild/protobuf";
import { getOption, hasOption, ScalarType } from "@bufbuild/protobuf";
import { http } from "@trellis/gen/google/api/annotations_pb.js";
import type { HttpRule } from "@trellis/gen/google/api/http_pb.js";

/** One REST binding of a method, from its google.api.http annotation. */
export interface RestRoute {
  readonly method: DescMethod;
  /** GET, POST, PUT, PATCH or DELETE. */
  readonly httpMethod: string;
  /** The template as written, e.g. "/v1/orders/{order_id}:cancel". */
  readonly template: string;
  /** Path variables in order, as field paths ("order_id"). */
  readonly variables: readonly string[];
  /** "*" (the whole body is the request), a field name, or "" (no body: query parameters). */
  readonly body: string;
  readonly pattern: RegExp;
  /** Literal characters in the template: more specific routes are tried first. */
  readonly weight: number;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Compiles a path template (`/v1/{name=things/*}/x:verb`) into a route; throws on a malformed one. */
export function compileTemplate(template: string): { pattern: RegExp; variables: string[]; weight: number } {
  const variables: string[] = [];
  let weight = 0;
  let source = "";
  const parts = template.split(/(\{[^}]*\})/);
  for (const part of parts) {
    if (part.startsWith("{")) {
      const m = /^\{([\w.]+)(?:=([^}]*))?\}$/.exec(part);
      if (!m?.[1]) throw new Error(`bad path template ${template}`);
      variables.push(m[1]);
      const segments = (m[2] ?? "*").split("/");
      const inner = segments
        .map((s) => (s === "**" ? ".+" : s === "*" ? "[^/]+" : escapeRegExp(s)))
        .join("/");
      source += `(${inner})`;
    } else {
      weight += part.length;
      source += escapeRegExp(part);
    }
  }
  return { pattern: new RegExp(`^${source}$`), variables, weight };
}

function bindings(method: DescMethod): HttpRule[] {
  if (!hasOption(method, http)) return [];
  const rule = getOption(method, http);
  return [rule, ...rule.additionalBindings];
}

/** The REST routes of methods, most specific first. */
export function restRoutes(methods: readonly DescMethod[]): RestRoute[] {
  const routes: RestRoute[] = [];
  for (const method of methods) {
    if (method.methodKind !== "unary") continue;
    for (const rule of bindings(method)) {
      const { case: kind, value } = rule.pattern;
      if (kind === undefined) continue;
      const httpMethod = kind === "custom" ? value.kind.toUpperCase() : kind.toUpperCase();
      const template = kind === "custom" ? value.path : value;
      routes.push({ method, httpMethod, template, body: rule.body, ...compileTemplate(template) });
    }
  }
  return routes.sort((a, b) => b.weight - a.weight);
}

/** The route for an HTTP method and path, with its decoded path variables; undefined when none. */
export function matchRoute(
  routes: readonly RestRoute[],
  httpMethod: string,
  path: string,
): { route: RestRoute; params: Map<string, string> } | undefined {
  for (const route of routes) {
    if (route.httpMethod !== httpMethod) continue;
    const m = route.pattern.exec(path);
    if (!m) continue;
    const params = new Map<string, string>();
    try {
      route.variables.forEach((name, i) => {
        params.set(name, decodeURIComponent(m[i + 1] ?? ""));
      });
    } catch {
      continue;
    }
    return { route, params };
  }
  return undefined;
}

/** A request the REST layer refuses before it reaches a service (answered invalid_argument). */
export class RestInputError extends Error {}

function fieldByName(message: DescMessage, name: string): DescField | undefined {
  return message.fields.find((f) => f.name === name || f.jsonName === name);
}

function scalarFromText(type: ScalarType, text: string): JsonValue {
  switch (type) {
    case ScalarType.BOOL:
      if (text === "true" || text === "false") return text === "true";
      throw new RestInputError("not a boolean");
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT: {
      const n = Number(text);
      return text.trim() === "" || Number.isNaN(n) ? text : n;
    }
    default:
      return text;
  }
}

/** Sets the field at a dotted path (proto or JSON names) of a request's JSON object from text. */
export function setFieldFromText(schema: DescMessage, target: JsonObject, path: string, text: string): void {
  const names = path.split(".");
  let message = schema;
  let object = target;
  names.forEach((name, i) => {
    const field = fieldByName(message, name);
    if (!field) throw new RestInputError(`unknown field ${path}`);
    const last = i === names.length - 1;
    if (!last) {
      if (field.fieldKind !== "message") throw new RestInputError(`field ${path} is not a message`);
      const child = object[field.jsonName];
      const next: JsonObject =
        typeof child === "object" && child !== null && !Array.isArray(child) ? child : {};
      object[field.jsonName] = next;
      object = next;
      message = field.message;
      return;
    }
    if (field.fieldKind === "list") {
      const item = field.listKind === "scalar" ? scalarFromText(field.scalar, text) : text;
      const list = object[field.jsonName];
      object[field.jsonName] = Array.isArray(list) ? [...list, item] : [item];
    } else if (field.fieldKind === "scalar") {
      object[field.jsonName] = scalarFromText(field.scalar, text);
    } else if (field.fieldKind === "enum" || field.fieldKind === "message") {
      // Enums by name and well-known types with a string form (Timestamp, Duration, FieldMask).
      object[field.jsonName] = text;
    } else {
      throw new RestInputError(`field ${path} cannot be set from a parameter`);
    }
  });
}

/**
 * The JSON request message for a matched route: the body (all of it for body "*", or into the
 * named field), then path variables, then query parameters for fields the body does not carry.
 */
export function restRequestJson(
  route: RestRoute,
  params: ReadonlyMap<string, string>,
  query: URLSearchParams,
  body: JsonValue | undefined,
): JsonObject {
  const schema = route.method.input;
  let request: JsonObject = {};
  if (route.body === "*") {
    if (body !== undefined) {
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new RestInputError("body must be a JSON object");
      }
      request = { ...body };
    }
  } else if (route.body !== "") {
    const field = fieldByName(schema, route.body);
    if (!field) throw new RestInputError(`unknown body field ${route.body}`);
    if (body !== undefined) request[field.jsonName] = body;
  }
  for (const [path, value] of params) setFieldFromText(schema, request, path, value);
  if (route.body !== "*") {
    for (const [key, value] of query) setFieldFromText(schema, request, key, value);
  }
  return request;
}
