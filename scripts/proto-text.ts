import {
  type DescExtension,
  type DescField,
  type DescMessage,
  getExtension,
  type MessageShape,
  type Registry,
  ScalarType,
} from "@bufbuild/protobuf";
import { type ReflectMessage, reflect } from "@bufbuild/protobuf/reflect";

// Protobuf text format (and .proto literal) rendering over protobuf-es reflection. Used by the
// .proto printer for option values; the parser on the other side is protoc / buf.

/** Escapes a string as the inside of a C-style double-quoted literal (UTF-8 kept raw). */
export function escapeString(value: string): string {
  let out = "";
  for (const ch of value) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch === "\\") out += "\\\\";
    else if (ch === '"') out += '\\"';
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (code < 0x20 || code === 0x7f) out += `\\${code.toString(8).padStart(3, "0")}`;
    else out += ch;
  }
  return out;
}

/** Escapes bytes as the inside of a double-quoted literal, octal for anything not printable ASCII. */
export function escapeBytes(value: Uint8Array): string {
  let out = "";
  for (const b of value) {
    if (b === 0x5c) out += "\\\\";
    else if (b === 0x22) out += '\\"';
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\${b.toString(8).padStart(3, "0")}`;
  }
  return out;
}

/** Renders a scalar as a literal that protoc parses back to the same value. */
export function scalarLiteral(type: ScalarType, value: unknown): string {
  switch (type) {
    case ScalarType.STRING:
      return `"${escapeString(value as string)}"`;
    case ScalarType.BYTES:
      return `"${escapeBytes(value as Uint8Array)}"`;
    case ScalarType.BOOL:
      return value ? "true" : "false";
    case ScalarType.FLOAT:
    case ScalarType.DOUBLE: {
      const n = value as number;
      if (Number.isNaN(n)) return "nan";
      if (n === Number.POSITIVE_INFINITY) return "inf";
      if (n === Number.NEGATIVE_INFINITY) return "-inf";
      if (Object.is(n, -0)) return "-0";
      return String(n);
    }
    default:
      return String(value);
  }
}

type FieldLike = DescField | DescExtension;

/** The plain (non-reflect) value of a set field. */
function plainValue(r: ReflectMessage, field: DescField): unknown {
  const msg = r.message as unknown as Record<string, unknown>;
  if (field.oneof) return (msg[field.oneof.localName] as { value: unknown }).value;
  return msg[field.localName];
}

/** One rendered value per element (one for singular fields) of a field or extension. */
function renderValues(field: FieldLike, value: unknown, registry: Registry, indent: string): string[] {
  switch (field.fieldKind) {
    case "scalar":
      return [scalarLiteral(field.scalar, value)];
    case "enum":
      return [enumLiteral(field, value as number)];
    case "message":
      return [messageBlock(field.message, value, registry, indent)];
    case "list":
      return (value as unknown[]).map((item) => {
        if (field.listKind === "message") return messageBlock(field.message, item, registry, indent);
        if (field.listKind === "enum") return enumLiteral(field, item as number);
        return scalarLiteral(field.scalar, item);
      });
    case "map":
      return Object.entries(value as Record<string, unknown>).map(([key, item]) => {
        const inner = `${indent}  `;
        const k = field.mapKey === ScalarType.BOOL ? key : scalarLiteral(field.mapKey, key);
        let v: string;
        if (field.mapKind === "message") v = messageBlock(field.message, item, registry, inner);
        else if (field.mapKind === "enum") v = enumLiteral(field, item as number);
        else v = scalarLiteral(field.scalar, item);
        return `{\n${inner}key: ${k}\n${inner}value: ${v}\n${indent}}`;
      });
  }
}

function enumLiteral(field: FieldLike, value: number): string {
  const v = field.enum?.values.find((x) => x.number === value);
  return v ? v.name : String(value);
}

/** `{ ... }` with the message's fields, extensions included; throws on unknown fields. */
function messageBlock(desc: DescMessage, value: unknown, registry: Registry, indent: string): string {
  const r = reflect(desc, value as MessageShape<DescMessage>);
  const lines = messageFields(r, registry, `${indent}  `);
  return lines.length === 0 ? "{}" : `{\n${lines.join("\n")}\n${indent}}`;
}

/** The set fields of a message, then its extensions, as text-format lines. */
export function messageFields(r: ReflectMessage, registry: Registry, indent: string): string[] {
  const lines: string[] = [];
  for (const field of r.sortedFields) {
    if (!r.isSet(field)) continue;
    for (const v of renderValues(field, plainValue(r, field), registry, indent)) {
      lines.push(`${indent}${field.name}: ${v}`);
    }
  }
  for (const ext of extensionsOf(r, registry)) {
    const value = getExtension(r.message, ext);
    for (const v of renderValues(ext, value, registry, indent)) {
      lines.push(`${indent}[${ext.typeName}]: ${v}`);
    }
  }
  return lines;
}

/** The extensions set on a message (read from its unknown fields), in order of first appearance. */
export function extensionsOf(r: ReflectMessage, registry: Registry): DescExtension[] {
  const seen = new Set<number>();
  const exts: DescExtension[] = [];
  for (const u of r.getUnknown() ?? []) {
    if (seen.has(u.no)) continue;
    seen.add(u.no);
    const ext = registry.getExtensionFor(r.desc, u.no);
    if (!ext) {
      throw new Error(`${r.desc.typeName} has unknown field ${u.no} that is no known extension`);
    }
    exts.push(ext);
  }
  return exts;
}

/** `name = value` right-hand sides for a set field of an options message, one per element. */
export function optionValues(
  r: ReflectMessage,
  field: DescField,
  registry: Registry,
  indent: string,
): string[] {
  if (field.fieldKind === "map") throw new Error(`map option ${field.name} cannot be printed`);
  return renderValues(field, plainValue(r, field), registry, indent);
}

/** `name = value` right-hand sides for an extension set on an options message. */
export function extensionOptionValues(
  r: ReflectMessage,
  ext: DescExtension,
  registry: Registry,
  indent: string,
): string[] {
  return renderValues(ext, getExtension(r.message, ext), registry, indent);
}
