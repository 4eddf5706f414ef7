import { createRegistry, type DescFile, isFieldSet } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  Edition,
  type EnumDescriptorProto,
  EnumOptionsSchema,
  EnumValueOptionsSchema,
  ExtensionRangeOptionsSchema,
  type FieldDescriptorProto,
  FieldDescriptorProtoSchema,
  FieldOptionsSchema,
  FileOptionsSchema,
  FieldDescriptorProto_Label as Label,
  MessageOptionsSchema,
  MethodOptionsSchema,
  OneofOptionsSchema,
  type ServiceDescriptorProto,
  ServiceOptionsSchema,
  FieldDescriptorProto_Type as Type,
} from "@bufbuild/protobuf/wkt";
import {
  bracket,
  type Ctx,
  defaultLiteral,
  join,
  label,
  optionAssignments,
  optionStatements,
  protoCamelCase,
  reservedNames,
  scopesFor,
  typeName,
} from "./proto-printer-parts.ts";
import { createSymbolTable } from "./proto-symbols.ts";
import { escapeString } from "./proto-text.ts";

// Prints a FileDescriptorProto back to .proto source. Comments are lost (source_code_info is
// usually stripped), everything that ends up in the descriptor is kept: the round-trip test
// compiles the output and compares descriptors.

const EXTENSION_MAX = 536870912; // exclusive end of "max" for message field numbers
const ENUM_MAX = 2147483647; // inclusive end of "max" for enum values

/** Prints a file descriptor as .proto source that compiles back to the same descriptor. */
export function printProtoFile(file: DescFile): string {
  const proto = file.proto;
  const files = transitiveFiles(file);
  const ctx: Ctx = {
    syntax: proto.syntax === "proto3" ? "proto3" : proto.syntax === "editions" ? "editions" : "proto2",
    registry: createRegistry(...files),
    symbols: createSymbolTable(files),
  };
  const out: string[] = [];
  if (ctx.syntax === "editions") {
    out.push(`edition = "${editionName(proto.edition)}";`);
  } else {
    out.push(`syntax = "${ctx.syntax}";`);
  }
  out.push("");
  if (proto.package) out.push(`package ${proto.package};`, "");
  const imports = proto.dependency.map((dep, i) => {
    const mod = proto.publicDependency.includes(i)
      ? "public "
      : proto.weakDependency.includes(i)
        ? "weak "
        : "";
    return `import ${mod}"${escapeString(dep)}";`;
  });
  for (const dep of proto.optionDependency) imports.push(`import option "${escapeString(dep)}";`);
  if (imports.length) out.push(...imports, "");
  const scope = proto.package;
  const fileOpts = optionStatements(ctx, FileOptionsSchema, proto.options, [join(scope, "__")], "");
  if (fileOpts.length) out.push(...fileOpts, "");
  const blocks: string[] = [];
  const nested = nestedTypes(ctx, proto.messageType, proto.extension, scope, "");
  blocks.push(...extendBlocks(ctx, proto.extension, scope, "", nested));
  blocks.push(...nested.rest());
  for (const e of proto.enumType) blocks.push(printEnum(ctx, e, scope, ""));
  for (const s of proto.service) blocks.push(printService(ctx, s, scope));
  out.push(blocks.join("\n\n"));
  return `${out.join("\n")}\n`;
}

function transitiveFiles(file: DescFile): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.set(f.name, f);
    for (const d of f.dependencies) visit(d);
  };
  visit(file);
  return [...seen.values()];
}

function editionName(edition: Edition): string {
  const name = Edition[edition] ?? "";
  const m = /^EDITION_(\d+)$/.exec(name);
  if (!m?.[1]) throw new Error(`unsupported edition ${name}`);
  return m[1];
}

/** Nested types of one scope, printed in their descriptor order around the fields that create
 * some of them (map entries and groups are added to the list where their field is declared). */
interface NestedTypes {
  /** Synthesized types (map entries, groups) of this scope by fully qualified name with dot. */
  synthesized: Map<string, { index: number; proto: DescriptorProto }>;
  /** Prints the ordinary types that come before descriptor index k and are still pending. */
  upTo(k: number): string[];
  /** Prints all remaining ordinary types. */
  rest(): string[];
}

function nestedTypes(
  ctx: Ctx,
  types: DescriptorProto[],
  fields: FieldDescriptorProto[],
  scope: string,
  indent: string,
): NestedTypes {
  const synthesized = new Map<string, { index: number; proto: DescriptorProto }>();
  types.forEach((t, index) => {
    const name = `.${join(scope, t.name)}`;
    const isGroup =
      ctx.syntax !== "editions" && fields.some((f) => f.type === Type.GROUP && f.typeName === name);
    if (t.options?.mapEntry || isGroup) synthesized.set(name, { index, proto: t });
  });
  const skip = new Set([...synthesized.values()].map((v) => v.index));
  let next = 0;
  const upTo = (k: number): string[] => {
    const out: string[] = [];
    for (; next < k && next < types.length; next++) {
      if (!skip.has(next)) out.push(printMessage(ctx, types[next] as DescriptorProto, scope, indent));
    }
    next = Math.max(next, k);
    return out;
  };
  return { synthesized, upTo, rest: () => upTo(types.length) };
}

function printMessage(ctx: Ctx, m: DescriptorProto, scope: string, indent: string): string {
  const full = join(scope, m.name);
  if (m.options?.mapEntry) throw new Error(`${full}: map entry printed as a message`);
  const body = messageBody(ctx, m, full, `${indent}  `);
  if (body.length === 0) return `${indent}message ${m.name} {}`;
  return `${indent}message ${m.name} {\n${body.join("\n")}\n${indent}}`;
}

function messageBody(ctx: Ctx, m: DescriptorProto, full: string, inner: string): string[] {
  const body: string[] = [];
  body.push(...optionStatements(ctx, MessageOptionsSchema, m.options, scopesFor(full), inner, ["map_entry"]));
  const nested = nestedTypes(ctx, m.nestedType, [...m.field, ...m.extension], full, inner);
  const printedOneofs = new Set<number>();
  let lastOneof = -1;
  const fields = m.field;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i] as FieldDescriptorProto;
    const oi = oneofOf(f);
    if (oi !== undefined && !f.proto3Optional) {
      if (printedOneofs.has(oi)) throw new Error(`${full}: fields of oneof ${oi} are not contiguous`);
      if (oi < lastOneof) throw new Error(`${full}: oneofs out of declaration order`);
      printedOneofs.add(oi);
      lastOneof = oi;
      const decl = m.oneofDecl[oi];
      if (!decl) throw new Error(`${full}: missing oneof ${oi}`);
      const members: FieldDescriptorProto[] = [];
      while (i < fields.length && oneofOf(fields[i]) === oi && !fields[i]?.proto3Optional) {
        members.push(fields[i] as FieldDescriptorProto);
        i++;
      }
      i--;
      // Types synthesized by the oneof's fields must not be preceded by pending ordinary types
      // that come later in the descriptor; print those before the oneof block.
      const indices = members
        .map((x) => nested.synthesized.get(x.typeName)?.index)
        .filter((x) => x !== undefined);
      if (indices.length) body.push(...nested.upTo(Math.min(...indices)));
      const oneofInner = `${inner}  `;
      const lines = [`${inner}oneof ${decl.name} {`];
      const oneofScopes = scopesFor(`${full}.${decl.name}`);
      lines.push(...optionStatements(ctx, OneofOptionsSchema, decl.options, oneofScopes, oneofInner));
      for (const x of members) {
        const idx = nested.synthesized.get(x.typeName)?.index;
        if (idx !== undefined && nested.upTo(idx).length) {
          throw new Error(`${full}: oneof ${decl.name} interleaves with nested types`);
        }
        lines.push(printField(ctx, x, full, oneofInner, nested, true));
      }
      lines.push(`${inner}}`);
      body.push(lines.join("\n"));
      continue;
    }
    const idx = nested.synthesized.get(f.typeName)?.index;
    if (idx !== undefined) body.push(...nested.upTo(idx));
    body.push(printField(ctx, f, full, inner, nested, false));
  }
  // A real oneof without fields cannot be written in source; make sure we did not drop one.
  const realOneofs = new Set(
    fields.filter((f) => oneofOf(f) !== undefined && !f.proto3Optional).map(oneofOf),
  );
  if (realOneofs.size !== printedOneofs.size || realOneofs.size + syntheticOneofs(m) !== m.oneofDecl.length) {
    throw new Error(`${full}: oneof declarations do not match fields`);
  }
  body.push(...extendBlocks(ctx, m.extension, full, inner, nested));
  body.push(...nested.rest());
  for (const e of m.enumType) body.push(printEnum(ctx, e, full, inner));
  for (const r of m.extensionRange) {
    const end = r.end === EXTENSION_MAX ? "max" : String(r.end - 1);
    const range = r.end - 1 === r.start ? String(r.start) : `${r.start} to ${end}`;
    const opts = optionAssignments(ctx, ExtensionRangeOptionsSchema, r.options, scopesFor(full), inner);
    body.push(`${inner}extensions ${range}${bracket(opts)};`);
  }
  for (const r of m.reservedRange) {
    const end = r.end === EXTENSION_MAX ? "max" : String(r.end - 1);
    body.push(`${inner}reserved ${r.end - 1 === r.start ? r.start : `${r.start} to ${end}`};`);
  }
  if (m.reservedName.length) body.push(`${inner}reserved ${reservedNames(ctx, m.reservedName)};`);
  if (m.visibility) throw new Error(`${full}: symbol visibility is not supported`);
  return body;
}

function syntheticOneofs(m: DescriptorProto): number {
  return new Set(m.field.filter((f) => f.proto3Optional).map(oneofOf)).size;
}

function oneofOf(f: FieldDescriptorProto | undefined): number | undefined {
  return f && isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) ? f.oneofIndex : undefined;
}

function extendBlocks(
  ctx: Ctx,
  exts: FieldDescriptorProto[],
  scope: string,
  indent: string,
  nested: NestedTypes,
): string[] {
  const blocks: string[] = [];
  let i = 0;
  while (i < exts.length) {
    const first = exts[i] as FieldDescriptorProto;
    const extendee = first.extendee;
    const name = ctx.symbols.shortest(extendee.replace(/^\./, ""), [join(scope, first.name)], "type");
    const members: FieldDescriptorProto[] = [];
    while (i < exts.length && exts[i]?.extendee === extendee) {
      const x = exts[i] as FieldDescriptorProto;
      const idx = nested.synthesized.get(x.typeName)?.index;
      // A group's type must be declared before ordinary types that follow it: close the block.
      if (idx !== undefined && members.length && nested.upTo(idx).length) break;
      members.push(x);
      i++;
    }
    const idx = nested.synthesized.get(members[0]?.typeName ?? "")?.index;
    if (idx !== undefined) blocks.push(...nested.upTo(idx));
    const lines = [`${indent}extend ${name} {`];
    for (const x of members) lines.push(printField(ctx, x, scope, `${indent}  `, nested, false));
    lines.push(`${indent}}`);
    blocks.push(lines.join("\n"));
  }
  return blocks;
}

function printField(
  ctx: Ctx,
  f: FieldDescriptorProto,
  scope: string,
  indent: string,
  nested: NestedTypes,
  inOneof: boolean,
): string {
  const full = join(scope, f.name);
  const synthesized = nested.synthesized.get(f.typeName)?.proto;
  const isMap = synthesized?.options?.mapEntry === true && f.label === Label.REPEATED;
  const isGroup = synthesized !== undefined && f.type === Type.GROUP && ctx.syntax !== "editions";
  let decl: string;
  if (isMap) {
    const key = synthesized.field.find((x) => x.number === 1);
    const value = synthesized.field.find((x) => x.number === 2);
    if (!key || !value) throw new Error(`${full}: malformed map entry`);
    decl = `map<${typeName(ctx, key, full)}, ${typeName(ctx, value, full)}>`;
  } else if (isGroup) {
    if (f.name !== synthesized.name.toLowerCase()) throw new Error(`${full}: group name mismatch`);
    decl = `${label(ctx, f, inOneof)}group`;
  } else {
    if (f.type === Type.GROUP && ctx.syntax !== "editions") {
      throw new Error(`${full}: group type not declared next to its field`);
    }
    decl = `${label(ctx, f, inOneof)}${typeName(ctx, f, full)}`;
  }
  const pseudo: string[] = [];
  if (isFieldSet(f, FieldDescriptorProtoSchema.field.defaultValue)) {
    pseudo.push(`default = ${defaultLiteral(f)}`);
  }
  const derivedJson = protoCamelCase(f.name);
  if (isFieldSet(f, FieldDescriptorProtoSchema.field.jsonName) && f.jsonName !== derivedJson) {
    pseudo.push(`json_name = "${escapeString(f.jsonName)}"`);
  }
  const opts = optionAssignments(ctx, FieldOptionsSchema, f.options, scopesFor(full), indent);
  const name = isGroup ? synthesized.name : f.name;
  const head = `${indent}${decl} ${name} = ${f.number}${bracket([...pseudo, ...opts])}`;
  if (!isGroup) return `${head};`;
  const groupScope = f.typeName.replace(/^\./, "");
  const body = messageBody(ctx, synthesized, groupScope, `${indent}  `);
  return body.length ? `${head} {\n${body.join("\n")}\n${indent}}` : `${head} {}`;
}

function printEnum(ctx: Ctx, e: EnumDescriptorProto, scope: string, indent: string): string {
  const full = join(scope, e.name);
  const inner = `${indent}  `;
  const body: string[] = [];
  body.push(...optionStatements(ctx, EnumOptionsSchema, e.options, scopesFor(full), inner));
  for (const v of e.value) {
    const opts = optionAssignments(
      ctx,
      EnumValueOptionsSchema,
      v.options,
      scopesFor(join(scope, v.name)),
      inner,
    );
    body.push(`${inner}${v.name} = ${v.number}${bracket(opts)};`);
  }
  for (const r of e.reservedRange) {
    const end = r.end === ENUM_MAX ? "max" : String(r.end);
    body.push(`${inner}reserved ${r.start === r.end ? r.start : `${r.start} to ${end}`};`);
  }
  if (e.reservedName.length) body.push(`${inner}reserved ${reservedNames(ctx, e.reservedName)};`);
  if (e.visibility) throw new Error(`${full}: symbol visibility is not supported`);
  return `${indent}enum ${e.name} {\n${body.join("\n")}\n${indent}}`;
}

function printService(ctx: Ctx, s: ServiceDescriptorProto, scope: string): string {
  const full = join(scope, s.name);
  const body: string[] = [];
  body.push(...optionStatements(ctx, ServiceOptionsSchema, s.options, scopesFor(full), "  "));
  for (const m of s.method) {
    const mfull = `${full}.${m.name}`;
    const input = ctx.symbols.shortest(m.inputType.replace(/^\./, ""), [mfull], "type");
    const output = ctx.symbols.shortest(m.outputType.replace(/^\./, ""), [mfull], "type");
    const head = `  rpc ${m.name}(${m.clientStreaming ? "stream " : ""}${input}) returns (${m.serverStreaming ? "stream " : ""}${output})`;
    const opts = optionStatements(ctx, MethodOptionsSchema, m.options, scopesFor(mfull), "    ");
    body.push(opts.length ? `${head} {\n${opts.join("\n")}\n  }` : `${head};`);
  }
  if (body.length === 0) return `service ${s.name} {}`;
  return `service ${s.name} {\n${body.join("\n")}\n}`;
}
