import type { DescEnum, DescFile, DescMessage } from "@bufbuild/protobuf";

// protoc's name resolution (DescriptorBuilder::LookupSymbol), so the printer can write the
// shortest name that still resolves to the same symbol from where it is written.

type Kind = "package" | "message" | "enum" | "service" | "other";

/** Symbols visible to a file, with protoc's scoping rules. */
export interface SymbolTable {
  /** What `name` written inside `relativeTo` resolves to, or undefined. */
  resolve(name: string, relativeTo: string, mode: "type" | "all"): string | undefined;
  /** The shortest name for `fullName` that resolves to it from every scope given. */
  shortest(fullName: string, scopes: string[], mode: "type" | "all"): string;
}

/** Builds the symbol table of the given files (a file and its transitive imports). */
export function createSymbolTable(files: DescFile[]): SymbolTable {
  const symbols = new Map<string, Kind>();
  const add = (name: string, kind: Kind) => {
    if (!symbols.has(name)) symbols.set(name, kind);
  };
  const addEnum = (e: DescEnum, scope: string) => {
    add(e.typeName, "enum");
    for (const v of e.values) add(scope ? `${scope}.${v.name}` : v.name, "other");
  };
  const addMessage = (m: DescMessage) => {
    add(m.typeName, "message");
    for (const f of m.fields) add(`${m.typeName}.${f.name}`, "other");
    for (const o of m.oneofs) add(`${m.typeName}.${o.name}`, "other");
    for (const n of m.nestedMessages) addMessage(n);
    for (const e of m.nestedEnums) addEnum(e, m.typeName);
    for (const x of m.nestedExtensions) add(x.typeName, "other");
  };
  for (const file of files) {
    const pkg = file.proto.package;
    if (pkg) {
      const parts = pkg.split(".");
      for (let i = 1; i <= parts.length; i++) add(parts.slice(0, i).join("."), "package");
    }
    for (const m of file.messages) addMessage(m);
    for (const e of file.enums) addEnum(e, pkg);
    for (const x of file.extensions) add(x.typeName, "other");
    for (const s of file.services) {
      add(s.typeName, "service");
      for (const m of s.methods) add(`${s.typeName}.${m.name}`, "other");
    }
  }

  const isAggregate = (k: Kind) => k !== "other";
  const isType = (k: Kind) => k === "message" || k === "enum";

  function resolve(name: string, relativeTo: string, mode: "type" | "all"): string | undefined {
    if (name.startsWith(".")) return symbols.has(name.slice(1)) ? name.slice(1) : undefined;
    const dot = name.indexOf(".");
    const first = dot < 0 ? name : name.slice(0, dot);
    let scope = relativeTo;
    for (;;) {
      const cut = scope.lastIndexOf(".");
      if (cut < 0) return symbols.has(name) ? name : undefined;
      scope = scope.slice(0, cut);
      const candidate = `${scope}.${first}`;
      const kind = symbols.get(candidate);
      if (kind === undefined) continue;
      if (dot >= 0) {
        if (isAggregate(kind)) {
          const fullName = `${scope}.${name}`;
          return symbols.has(fullName) ? fullName : undefined;
        }
        continue;
      }
      if (mode === "type" && !isType(kind)) continue;
      return candidate;
    }
  }

  function shortest(fullName: string, scopes: string[], mode: "type" | "all"): string {
    const parts = fullName.split(".");
    for (let i = parts.length - 1; i >= 0; i--) {
      const candidate = parts.slice(i).join(".");
      if (scopes.every((s) => resolve(candidate, s, mode) === fullName)) return candidate;
    }
    return `.${fullName}`;
  }

  return { resolve, shortest };
}
