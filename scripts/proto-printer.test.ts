import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { createFileRegistry } from "@bufbuild/protobuf";
import type { FileDescriptorSet } from "@bufbuild/protobuf/wkt";
import { printProtoFile } from "./proto-printer.ts";
import { bufBuild, descriptorJson, sameDescriptor } from "./proto-roundtrip.ts";

// Round trips: compile sources, print every file from its descriptor, compile the printed files,
// and require identical descriptors (custom options included).

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
const tmp = mkdtempSync(join(tmpdir(), "trellis-printer-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function writeTree(dir: string, files: Record<string, string>): void {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
}

function assertRoundTrip(set: FileDescriptorSet, names: string[]): void {
  const registry = createFileRegistry(set);
  const printed: Record<string, string> = {};
  for (const name of names) {
    const file = registry.getFile(name);
    assert.ok(file, `${name} compiled`);
    printed[name] = printProtoFile(file);
  }
  const dir = mkdtempSync(join(tmp, "printed-"));
  writeTree(dir, printed);
  const rebuilt = bufBuild(dir);
  for (const name of names) {
    const want = set.file.find((f) => f.name === name);
    const got = rebuilt.file.find((f) => f.name === name);
    assert.ok(want && got, name);
    assert.deepEqual(descriptorJson(got, registry), descriptorJson(want, registry), name);
    assert.ok(sameDescriptor(got, want, registry), `${name} round-trips`);
  }
}

const fixtures: Record<string, string> = {
  "fx/dep.proto": `syntax = "proto3";
package fx.dep;
message Dep { string id = 1; }
`,
  "fx/p2.proto": `syntax = "proto2";
package fx.p2;
import public "fx/dep.proto";
import "google/protobuf/descriptor.proto";
option java_package = "x.y";
option optimize_for = CODE_SIZE;
extend google.protobuf.FieldOptions { optional Outer.Inner field_opt = 50000; }
extend google.protobuf.OneofOptions { repeated int32 oneof_opt = 50000; }
extend google.protobuf.EnumValueOptions { optional Kind value_opt = 50000; }
extend google.protobuf.MessageOptions { optional bytes blob = 50000; optional double num = 50001; }
message Outer {
  option deprecated = true;
  option (blob) = "\\000\\377x\\"";
  option (num) = -inf;
  message Inner {
    optional string name = 1;
    repeated string tags = 2;
    optional Inner nested = 3;
    optional .fx.p2.Kind kind = 4;
    map<string, int32> counts = 5;
    extensions 100 to max;
  }
  optional int32 a = 1 [default = -5, json_name = "alpha"];
  optional string s = 2 [default = "q\\"uo\\\\te\\n\u00e9"];
  optional bytes b = 3 [default = "\\001\\377ab"];
  optional double d = 4 [default = inf];
  optional float f = 5 [default = -inf];
  optional double n = 6 [default = nan];
  optional .fx.p2.Kind k = 7 [default = KIND_B];
  required bool r = 8;
  repeated int32 packed_ints = 9 [packed = true];
  map<string, Inner> inners = 10;
  map<int64, Kind> kinds = 11;
  oneof choice {
    option (oneof_opt) = 5;
    option (oneof_opt) = -6;
    string c1 = 12;
    Inner c2 = 13 [deprecated = true, (field_opt) = {
      name: "x\\ty" tags: "a" tags: "b" nested { name: "y" kind: KIND_B } counts { key: "k" value: 3 }
      [fx.p2.inner_tags]: "z"
    }];
  }
  optional group Grp = 14 { optional int32 g = 1; }
  optional fx.dep.Dep dep = 15;
  extensions 1000 to 1999, 5000;
  extensions 6000 [verification = UNVERIFIED];
  reserved 20, 30 to 40, 50 to 99;
  reserved "old", "older";
  extend Outer { optional int32 nested_ext = 1000; }
  enum Kind { KIND_X = 0; }
  optional Kind local_kind = 16;
  optional .fx.p2.Kind outer_kind = 17;
}
enum Kind {
  option allow_alias = true;
  KIND_A = 0;
  KIND_B = 1 [(value_opt) = KIND_A];
  KIND_ALIAS = 1 [deprecated = true];
  reserved 5, 10 to max;
  reserved "GONE";
}
extend Outer.Inner { repeated string inner_tags = 100; }
service Svc {
  option deprecated = true;
  rpc Unary(Outer) returns (Outer.Inner);
  rpc Bidi(stream Outer) returns (stream Outer) {
    option idempotency_level = IDEMPOTENT;
    option deprecated = true;
  }
}
`,
  "fx/p3.proto": `syntax = "proto3";
package fx.p3;
import "google/protobuf/timestamp.proto";
message Bar {}
message Foo {
  message Bar { message Baz {} }
  map<string, Bar> bars = 1;
  Bar inner = 2;
  .fx.p3.Bar outer = 3;
  optional int32 maybe = 4;
  repeated int64 ids = 5 [packed = false, jstype = JS_STRING];
  google.protobuf.Timestamp at = 6;
  oneof pick { string x = 7; Bar.Baz y = 8; }
  optional string also = 9 [json_name = "ALSO"];
  reserved 100 to max;
}
`,
  "fx/ed.proto": `edition = "2023";
package fx.ed;
option features.field_presence = IMPLICIT;
message M {
  int32 a = 1 [features.field_presence = EXPLICIT];
  repeated int32 b = 2 [features.repeated_field_encoding = EXPANDED];
  M child = 3 [features.message_encoding = DELIMITED];
  reserved old_name;
}
enum E {
  option features.enum_type = CLOSED;
  E_A = 0;
  E_B = 1;
}
`,
};

test("fixtures covering proto2, proto3 and editions round-trip", () => {
  const dir = mkdtempSync(join(tmp, "fixtures-"));
  writeTree(dir, fixtures);
  assertRoundTrip(bufBuild(dir), Object.keys(fixtures));
});

test("every proto of the workspace round-trips", () => {
  const set = bufBuild(repoRoot);
  const names = set.file.map((f) => f.name).filter((n) => !n.startsWith("google/protobuf/"));
  assert.ok(names.includes("trellis/testing/v1/testing.proto"));
  assertRoundTrip(set, names);
});
