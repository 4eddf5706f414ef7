import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { clone, createRegistry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { printProtoFile } from "./proto-printer.ts";
import { bufBuild, descriptorJson, sameDescriptor } from "./proto-roundtrip.ts";
import { staleFiles, vendoredFiles, writeVendored } from "./vendor-protos.ts";

const tmp = mkdtempSync(join(tmpdir(), "trellis-vendor-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const embedded = file_buf_validate_validate.proto;
const registry = createRegistry(file_buf_validate_validate);

function buildPrinted() {
  const dir = mkdtempSync(join(tmp, "validate-"));
  mkdirSync(join(dir, "buf", "validate"), { recursive: true });
  writeFileSync(join(dir, "buf", "validate", "validate.proto"), printProtoFile(file_buf_validate_validate));
  const built = bufBuild(dir).file.find((f) => f.name === "buf/validate/validate.proto");
  assert.ok(built, "buf build output lacks buf/validate/validate.proto");
  return built;
}

test("printed validate.proto compiles to the descriptor @bufbuild/protovalidate embeds", () => {
  const built = buildPrinted();
  assert.deepEqual(descriptorJson(built, registry), descriptorJson(embedded, registry));
  assert.ok(sameDescriptor(built, embedded, registry));
});

test("the descriptor comparison notices a dropped custom option or reserved name", () => {
  const built = buildPrinted();
  const noOption = clone(FileDescriptorProtoSchema, embedded);
  const field = noOption.messageType
    .flatMap((m) => m.field)
    .find((f) => (f.options?.$unknown?.length ?? 0) > 0);
  assert.ok(field?.options, "validate.proto has a field with custom options");
  field.options.$unknown = [];
  assert.equal(sameDescriptor(built, noOption, registry), false);

  const noReserved = clone(FileDescriptorProtoSchema, embedded);
  const withReserved = noReserved.messageType.find((m) => m.reservedName.length > 0);
  assert.ok(withReserved);
  withReserved.reservedName.pop();
  assert.equal(sameDescriptor(built, noReserved, registry), false);
});

test("printing is deterministic", () => {
  assert.equal(printProtoFile(file_buf_validate_validate), printProtoFile(file_buf_validate_validate));
  assert.deepEqual(vendoredFiles(), vendoredFiles());
});

test("third_party/proto is what the script writes", () => {
  assert.deepEqual(staleFiles(), []);
});

test("staleFiles names changed, missing and extra files", () => {
  const dir = join(tmp, "check");
  writeVendored(dir);
  assert.deepEqual(staleFiles(dir), []);
  writeFileSync(join(dir, "google", "rpc", "status.proto"), "// edited\n");
  rmSync(join(dir, "grpc", "health", "v1", "health.proto"));
  writeFileSync(join(dir, "extra.proto"), 'syntax = "proto3";\n');
  assert.deepEqual(staleFiles(dir).sort(), [
    "extra.proto",
    "google/rpc/status.proto",
    "grpc/health/v1/health.proto",
  ]);
});
