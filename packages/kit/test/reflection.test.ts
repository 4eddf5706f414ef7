import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, createFileRegistry, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { field as validateField } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as v1 from "@trellis/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "@trellis/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { access } from "@trellis/gen/trellis/common/v1/options_pb.js";
import type { RunningService } from "../src/server.js";
import { codec, grpcJsClient, startTestService } from "./support/test-service.js";

type Request = MessageInitShape<typeof v1.ServerReflectionRequestSchema>;
type Answer =
  | v1.ServerReflectionResponse["messageResponse"]
  | v1alpha.ServerReflectionResponse["messageResponse"];

const versions = {
  v1: (transport: Transport) => createClient(v1.ServerReflection, transport),
  v1alpha: (transport: Transport) => createClient(v1alpha.ServerReflection, transport),
};

/** Sends the requests on one reflection stream and returns the answers in order. */
async function reflect(version: keyof typeof versions, transport: Transport, requests: Request[]) {
  const client = versions[version](transport);
  async function* input() {
    yield* requests;
  }
  const answers: Answer[] = [];
  // The two versions' requests have one shape; only the message type names differ.
  for await (const response of client.serverReflectionInfo(input() as never)) {
    answers.push(response.messageResponse);
  }
  return answers;
}

function files(answer: Answer | undefined) {
  assert.equal(answer?.case, "fileDescriptorResponse");
  return answer.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

function errorCode(answer: Answer | undefined) {
  assert.equal(answer?.case, "errorResponse");
  return answer.value.errorCode;
}

const notFound = 5;

describe("gRPC server reflection", () => {
  let running: RunningService;
  let transport: Transport;
  before(async () => {
    running = await startTestService();
    transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${running.port}` });
  });
  after(() => running.close());

  for (const version of ["v1", "v1alpha"] as const) {
    describe(version, () => {
      test("list_services names the served services, health and both reflection services", async () => {
        const [answer] = await reflect(version, transport, [
          { messageRequest: { case: "listServices", value: "" } },
        ]);
        assert.equal(answer?.case, "listServicesResponse");
        assert.deepEqual(answer.value.service.map((s) => s.name).sort(), [
          "grpc.health.v1.Health",
          "grpc.reflection.v1.ServerReflection",
          "grpc.reflection.v1alpha.ServerReflection",
          "trellis.testing.v1.TestService",
        ]);
      });

      test("file_containing_symbol gives loadable, fully qualified descriptors with every dependency", async () => {
        const [answer] = await reflect(version, transport, [
          { messageRequest: { case: "fileContainingSymbol", value: "trellis.testing.v1.TestService" } },
        ]);
        const protos = files(answer);
        assert.equal(protos[0]?.name, "trellis/testing/v1/testing.proto");
        const names = protos.map((p) => p.name).sort();
        for (const dependency of [
          "buf/validate/validate.proto",
          "google/protobuf/descriptor.proto",
          "google/protobuf/duration.proto",
          "google/protobuf/timestamp.proto",
          "trellis/common/v1/options.proto",
        ]) {
          assert.ok(names.includes(dependency), `${dependency} is sent`);
        }
        assert.equal(new Set(names).size, names.length, "no file is sent twice");
        const echoIn = protos[0]?.messageType.find((m) => m.name === "EchoRequest");
        assert.equal(echoIn?.field.find((f) => f.name === "at")?.typeName, ".google.protobuf.Timestamp");

        // Reflection sends the requested file first, its imports after: resolve imports by name.
        const [root] = protos;
        assert.ok(root);
        const registry = createFileRegistry(root, (name) => protos.find((p) => p.name === name));
        const service = registry.getService("trellis.testing.v1.TestService");
        assert.equal(service?.method.echo?.input.typeName, "trellis.testing.v1.EchoRequest");
        const echo = registry.getMessage("trellis.testing.v1.EchoRequest");
        assert.equal(echo?.field.at?.message?.typeName, "google.protobuf.Timestamp");
        assert.equal(echo?.field.text?.jsonName, "text");
      });

      test("file_containing_symbol resolves methods, messages, nested enums, fields and enum values", async () => {
        const cases: Array<[string, string]> = [
          ["trellis.testing.v1.TestService.Echo", "trellis/testing/v1/testing.proto"],
          ["trellis.testing.v1.EchoRequest", "trellis/testing/v1/testing.proto"],
          ["trellis.testing.v1.EchoRequest.text", "trellis/testing/v1/testing.proto"],
          ["grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"],
          ["grpc.health.v1.HealthCheckResponse.SERVING", "grpc/health/v1/health.proto"],
          ["trellis.common.v1.access", "trellis/common/v1/options.proto"],
          ["google.protobuf.Timestamp", "google/protobuf/timestamp.proto"],
          [".trellis.testing.v1.SleepRequest", "trellis/testing/v1/testing.proto"],
        ];
        const answers = await reflect(
          version,
          transport,
          cases.map(([symbol]) => ({ messageRequest: { case: "fileContainingSymbol", value: symbol } })),
        );
        cases.forEach(([symbol, file], i) => {
          assert.equal(files(answers[i])[0]?.name, file, symbol);
        });
      });

      test("a stream does not resend dependencies it already sent", async () => {
        const [first, second] = await reflect(version, transport, [
          { messageRequest: { case: "fileByFilename", value: "trellis/testing/v1/testing.proto" } },
          { messageRequest: { case: "fileContainingSymbol", value: "trellis.testing.v1.EchoRequest" } },
        ]);
        assert.ok(files(first).length > 1);
        assert.deepEqual(
          files(second).map((p) => p.name),
          ["trellis/testing/v1/testing.proto"],
        );
      });

      test("extensions: file_containing_extension and all_extension_numbers_of_type", async () => {
        const answers = await reflect(version, transport, [
          {
            messageRequest: {
              case: "fileContainingExtension",
              value: { containingType: "google.protobuf.MethodOptions", extensionNumber: access.number },
            },
          },
          {
            messageRequest: {
              case: "fileContainingExtension",
              value: {
                containingType: "google.protobuf.FieldOptions",
                extensionNumber: validateField.number,
              },
            },
          },
          { messageRequest: { case: "allExtensionNumbersOfType", value: "google.protobuf.MethodOptions" } },
          {
            messageRequest: {
              case: "fileContainingExtension",
              value: { containingType: "google.protobuf.MethodOptions", extensionNumber: 1 },
            },
          },
          { messageRequest: { case: "allExtensionNumbersOfType", value: "no.such.Message" } },
        ]);
        assert.equal(files(answers[0])[0]?.name, "trellis/common/v1/options.proto");
        assert.equal(files(answers[1])[0]?.name, "buf/validate/validate.proto");
        const numbers = answers[2];
        assert.equal(numbers?.case, "allExtensionNumbersResponse");
        assert.equal(numbers.value.baseTypeName, "google.protobuf.MethodOptions");
        assert.ok(numbers.value.extensionNumber.includes(access.number));
        assert.equal(errorCode(answers[3]), notFound);
        assert.equal(errorCode(answers[4]), notFound);
      });

      test("unknown symbols and files get NOT_FOUND and the stream goes on", async () => {
        const answers = await reflect(version, transport, [
          { messageRequest: { case: "fileContainingSymbol", value: "trellis.testing.v1.NoSuchThing" } },
          { messageRequest: { case: "fileByFilename", value: "no/such/file.proto" } },
          { messageRequest: { case: "listServices", value: "" } },
        ]);
        assert.equal(errorCode(answers[0]), notFound);
        assert.equal(errorCode(answers[1]), notFound);
        assert.equal(answers[2]?.case, "listServicesResponse");
      });
    });
  }

  for (const [version, schemas] of [
    ["v1", v1],
    ["v1alpha", v1alpha],
  ] as const) {
    test(`a stock grpc-js client lists services and resolves a symbol over ${version}`, async () => {
      const client = grpcJsClient(running.port);
      try {
        const { serialize, deserialize } = codec(
          schemas.ServerReflectionRequestSchema,
          schemas.ServerReflectionResponseSchema,
        );
        const call = client.makeBidiStreamRequest(
          `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
          serialize as (value: unknown) => Buffer,
          deserialize,
        );
        const answers: Answer[] = [];
        const done = new Promise<void>((resolve, reject) => {
          call.on("data", (response: v1.ServerReflectionResponse) => answers.push(response.messageResponse));
          call.on("end", resolve);
          call.on("error", reject);
        });
        call.write(
          create(schemas.ServerReflectionRequestSchema, {
            messageRequest: { case: "listServices", value: "" },
          }),
        );
        call.write(
          create(schemas.ServerReflectionRequestSchema, {
            messageRequest: { case: "fileContainingSymbol", value: "trellis.testing.v1.EchoRequest" },
          }),
        );
        call.end();
        await done;
        assert.equal(answers[0]?.case, "listServicesResponse");
        assert.ok(answers[0].value.service.some((s) => s.name === "trellis.testing.v1.TestService"));
        assert.equal(files(answers[1])[0]?.name, "trellis/testing/v1/testing.proto");
      } finally {
        client.close();
      }
    });
  }
});
