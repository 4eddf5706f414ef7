import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { clone, equals, fromBinary, type Registry, toJson } from "@bufbuild/protobuf";
import {
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  type FileDescriptorSet,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";

// Test support for the .proto printer: compile with buf, compare descriptors.

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
const bufImageExtension = 8042;
const bufBin = join(repoRoot, "node_modules", ".bin", "buf");

/** Compiles a directory (a buf module or workspace) with buf; imports included, no source info. */
export function bufBuild(dir: string, paths: string[] = []): FileDescriptorSet {
  const args = ["build", dir, "--exclude-source-info", "-o", "-#format=binpb"];
  for (const p of paths) args.push("--path", p);
  const out = execFileSync(bufBin, args, { cwd: dir, maxBuffer: 256 * 1024 * 1024 });
  const set = fromBinary(FileDescriptorSetSchema, out);
  for (const file of set.file) {
    // The output is a buf Image: each file carries buf's ImageFileExtension as field 8042.
    file.$unknown = file.$unknown?.filter((u) => u.no !== bufImageExtension);
    if (file.$unknown?.length === 0) file.$unknown = undefined;
  }
  return set;
}

function normalize(file: FileDescriptorProto): FileDescriptorProto {
  const c = clone(FileDescriptorProtoSchema, file);
  c.sourceCodeInfo = undefined;
  return c;
}

/** Whether two file descriptors are equal, extensions (custom options) and unknown fields included. */
export function sameDescriptor(a: FileDescriptorProto, b: FileDescriptorProto, registry: Registry): boolean {
  return equals(FileDescriptorProtoSchema, normalize(a), normalize(b), {
    registry,
    extensions: true,
    unknown: true,
  });
}

/** A descriptor as JSON with custom options spelled out, for readable assertion diffs. */
export function descriptorJson(file: FileDescriptorProto, registry: Registry): unknown {
  return toJson(FileDescriptorProtoSchema, normalize(file), { registry });
}
