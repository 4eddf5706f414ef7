import type { DescEnum, DescField, DescMessage, DescMethod, JsonObject, JsonValue } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import { methodAccess } from "@trellis/kit/access.js";
import type { RestRoute } from "./rest.js";
import type { RoutedService } from "./routes.js";

const int64Types = new Set([
  ScalarType.INT64,
  ScalarType.UINT64,
  ScalarType.SINT64,
  ScalarType.FIXED64,
  ScalarType.SFIXED64,
]);

function scalarSchema(type: ScalarType): JsonObject {
  if (int64Types.has(type)) return { type: ["string", "integer"], format: "int64" };
  switch (type) {
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", contentEncoding: "base64" };
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return { type: "number" };
    default:
      return { type: "integer", format: "int32" };
  }
}

// Well-known types have their own JSON forms.
const wellKnown: Readonly<Record<string, JsonObject>> = {
  "google.protobuf.Timestamp": { type: "string", format: "date-time" },
  "google.protobuf.Duration": { type: "string", pattern: "^-?\\d+(\\.\\d+)?s$" },
  "google.protobuf.FieldMask": { type: "string" },
  "google.protobuf.Struct": { type: "object" },
  "google.protobuf.Value": {},
  "google.protobuf.ListValue": { type: "array" },
  "google.protobuf.Empty": { type: "object" },
  "google.protobuf.Any": { type: "object", properties: { "@type": { type: "string" } } },
  "google.protobuf.StringValue": { type: "string" },
  "google.protobuf.BoolValue": { type: "boolean" },
  "google.protobuf.Int32Value": { type: "integer" },
  "google.protobuf.Int64Value": { type: ["string", "integer"], format: "int64" },
  "google.protobuf.DoubleValue": { type: "number" },
};

/** Builds JSON Schemas for messages, collecting every message they reference. */
function createSchemaBuilder() {
  const schemas: Record<string, JsonObject> = {};
  const ref = (message: DescMessage): JsonObject => {
    const known = wellKnown[message.typeName];
    if (known) return known;
    if (!(message.typeName in schemas)) {
      schemas[message.typeName] = {};
      schemas[message.typeName] = messageSchema(message);
    }
    return { $ref: `#/components/schemas/${message.typeName}` };
  };
  const enumSchema = (desc: DescEnum): JsonObject => ({
    type: "string",
    enum: desc.values.map((v) => v.name),
  });
  const fieldSchema = (field: DescField): JsonObject => {
    switch (field.fieldKind) {
      case "scalar":
        return scalarSchema(field.scalar);
      case "enum":
        return enumSchema(field.enum);
      case "message":
        return ref(field.message);
      case "list":
        return {
          type: "array",
          items:
            field.listKind === "scalar"
              ? scalarSchema(field.scalar)
              : field.listKind === "enum"
                ? enumSchema(field.enum)
                : ref(field.message),
        };
      case "map":
        return {
          type: "object",
          additionalProperties:
            field.mapKind === "scalar"
              ? scalarSchema(field.scalar)
              : field.mapKind === "enum"
                ? enumSchema(field.enum)
                : ref(field.message),
        };
    }
  };
  const messageSchema = (message: DescMessage): JsonObject => {
    const properties: JsonObject = {};
    for (const field of message.fields) properties[field.jsonName] = fieldSchema(field);
    return { type: "object", properties };
  };
  return { ref, fieldSchema, schemas };
}

const errorSchema: JsonObject = {
  type: "object",
  properties: { code: { type: "string" }, message: { type: "string" }, details: { type: "array" } },
};

function operation(
  method: DescMethod,
  builder: ReturnType<typeof createSchemaBuilder>,
  extra: JsonObject,
  suffix = "",
): JsonObject {
  const secured = methodAccess(method)?.audience !== "public";
  const output = builder.ref(method.output);
  return {
    operationId: `${method.parent.name}_${method.name}${suffix}`,
    tags: [method.parent.name],
    ...(secured ? { security: [{ bearer: [] }] } : { security: [] }),
    ...extra,
    responses: {
      "200": {
        description: method.methodKind === "server_streaming" ? "Connect streaming response" : "OK",
        content: { "application/json": { schema: output } },
      },
      default: {
        description: "Error",
        content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
      },
    },
  };
}

function restParameters(route: RestRoute, builder: ReturnType<typeof createSchemaBuilder>): JsonValue[] {
  const parameters: JsonValue[] = route.variables.map((name) => ({
    name,
    in: "path",
    required: true,
    schema: { type: "string" },
  }));
  if (route.body === "*") return parameters;
  for (const field of route.method.input.fields) {
    if (route.variables.includes(field.name) || field.name === route.body) continue;
    if (field.fieldKind === "map" || (field.fieldKind === "message" && !wellKnown[field.message.typeName]))
      continue;
    parameters.push({ name: field.jsonName, in: "query", schema: builder.fieldSchema(field) });
  }
  return parameters;
}

/**
 * An OpenAPI 3.1 document of what the gateway serves: every REST route and every Connect path
 * (POST with the JSON request), schemas from the messages, bearer security on user methods.
 */
export function buildOpenApi(services: readonly RoutedService[], routes: readonly RestRoute[]): JsonObject {
  const builder = createSchemaBuilder();
  const paths: Record<string, JsonObject> = {};
  for (const route of routes) {
    const path = route.template.replace(/\{([\w.]+)(?:=[^}]*)?\}/g, "{$1}");
    const body: JsonObject =
      route.body === ""
        ? {}
        : {
            requestBody: {
              required: true,
              content: {
                "application/json": {
                  schema:
                    route.body === "*"
                      ? builder.ref(route.method.input)
                      : builder.fieldSchema(
                          route.method.input.fields.find((f) => f.name === route.body) as DescField,
                        ),
                },
              },
            },
          };
    paths[path] ??= {};
    (paths[path] as JsonObject)[route.httpMethod.toLowerCase()] = operation(
      route.method,
      builder,
      { parameters: restParameters(route, builder), ...body },
      `_${route.httpMethod}`,
    );
  }
  for (const service of services) {
    for (const method of service.methods) {
      paths[`/${service.desc.typeName}/${method.name}`] = {
        post: operation(method, builder, {
          requestBody: {
            required: true,
            content: { "application/json": { schema: builder.ref(method.input) } },
          },
        }),
      };
    }
  }
  return {
    openapi: "3.1.0",
    info: { title: "Trellis API", version: "v1", description: "Served by the Trellis gateway." },
    paths,
    components: {
      schemas: { ...builder.schemas, Error: errorSchema },
      securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
    },
  };
}
