import type { DescMessage, Registry } from "@bufbuild/protobuf";
import { reflect } from "@bufbuild/protobuf/reflect";
import {
  type FieldDescriptorProto,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
} from "@bufbuild/protobuf/wkt";
import type { SymbolTable } from "./proto-symbols.ts";
import { escapeString, extensionOptionValues, extensionsOf, optionValues } from "./proto-text.ts";

// Shared pieces of the .proto printer: printing context, options, names and field spelling.

/** The source syntax a file is printed in. */
export type Syntax = "proto2" | "proto3" | "editions";

/** What printing one file needs: its syntax, extensions and visible symbols. */
export interface Ctx {
  syntax: Syntax;
  registry: Registry;
  symbols: SymbolTable;
}

/** Joins a scope and a name into a fully qualified name. */
export function join(scope: string, name: string): string {
  return scope ? `${scope}.${name}` : name;
}

/** Option assignments of an options message: `name = value` strings (without `option`/`;`). */
export function optionAssignments(
  ctx: Ctx,
  schema: DescMessage,
  // biome-ignore lint/suspicious/noExplicitAny: any options message of the given schema
  options: any,
  scopes: string[],
  indent: string,
  skip: string[] = [],
): string[] {
  if (!options) return [];
  const r = reflect(schema, options);
  const out: string[] = [];
  for (const field of r.sortedFields) {
    if (!r.isSet(field) || skip.includes(field.name)) continue;
    for (const v of optionValues(r, field, ctx.registry, indent)) out.push(`${field.name} = ${v}`);
  }
  for (const ext of extensionsOf(r, ctx.registry)) {
    const name = ctx.symbols.shortest(ext.typeName, scopes, "all");
    for (const v of extensionOptionValues(r, ext, ctx.registry, indent)) out.push(`(${name}) = ${v}`);
  }
  return out;
}

/** Options as `option name = value;` statements. */
export function optionStatements(
  ctx: Ctx,
  schema: DescMessage,
  options: unknown,
  scopes: string[],
  indent: string,
  skip: string[] = [],
): string[] {
  return optionAssignments(ctx, schema, options, scopes, indent, skip).map((a) => `${indent}option ${a};`);
}

/** ` [a = 1, b = 2]` or "" */
/** ` [a = 1, b = 2]` for field-like options, or "" when there are none. */
export function bracket(parts: string[]): string {
  return parts.length ? ` [${parts.join(", ")}]` : "";
}

/** Scopes an option name on the element must resolve from. */
export function scopesFor(fullName: string): string[] {
  // Option names are resolved from inside the element or from its parent scope (SymbolTable
  // resolves from the parent of the name it is given); accept a short name only when both agree,
  // so the choice never depends on which of the two the compiler uses.
  return [`${fullName}.__`, fullName];
}

/** Reserved names as written in the file's syntax (quoted before editions). */
export function reservedNames(ctx: Ctx, names: string[]): string {
  return names.map((n) => (ctx.syntax === "editions" ? n : `"${escapeString(n)}"`)).join(", ");
}

/** Source keywords of the scalar field types. */
export const scalarNames: Partial<Record<Type, string>> = {
  [Type.DOUBLE]: "double",
  [Type.FLOAT]: "float",
  [Type.INT64]: "int64",
  [Type.UINT64]: "uint64",
  [Type.INT32]: "int32",
  [Type.FIXED64]: "fixed64",
  [Type.FIXED32]: "fixed32",
  [Type.BOOL]: "bool",
  [Type.STRING]: "string",
  [Type.BYTES]: "bytes",
  [Type.UINT32]: "uint32",
  [Type.SFIXED32]: "sfixed32",
  [Type.SFIXED64]: "sfixed64",
  [Type.SINT32]: "sint32",
  [Type.SINT64]: "sint64",
};

/** The type of a field as written in source, shortest unambiguous name for messages/enums. */
export function typeName(ctx: Ctx, f: FieldDescriptorProto, relativeTo: string): string {
  // In editions, TYPE_GROUP is a delimited message field: written as a plain message field whose
  // features (kept in its options, or inherited) say DELIMITED.
  if (f.type === Type.MESSAGE || f.type === Type.GROUP || f.type === Type.ENUM || (f.type as number) === 0) {
    return ctx.symbols.shortest(f.typeName.replace(/^\./, ""), [relativeTo], "type");
  }
  const s = scalarNames[f.type];
  if (!s) throw new Error(`${relativeTo}: unknown field type ${f.type}`);
  return s;
}

/** The label keyword a field needs in the file's syntax, with a trailing space, or "". */
export function label(ctx: Ctx, f: FieldDescriptorProto, inOneof: boolean): string {
  if (f.label === Label.REPEATED) return "repeated ";
  if (inOneof) return "";
  if (ctx.syntax === "proto2") return f.label === Label.REQUIRED ? "required " : "optional ";
  if (ctx.syntax === "proto3" && f.proto3Optional) return "optional ";
  return "";
}

/** A field's default value as a source literal. */
export function defaultLiteral(f: FieldDescriptorProto): string {
  const v = f.defaultValue ?? "";
  if (f.type === Type.STRING) return `"${escapeString(v)}"`;
  if (f.type === Type.BYTES) return `"${v}"`; // already C-escaped in the descriptor
  return v;
}

/** The JSON name protoc derives from a field name. */
export function protoCamelCase(name: string): string {
  let out = "";
  let upper = false;
  for (const ch of name) {
    if (ch === "_") upper = true;
    else if (upper) {
      out += ch.toUpperCase();
      upper = false;
    } else out += ch;
  }
  return out;
}
