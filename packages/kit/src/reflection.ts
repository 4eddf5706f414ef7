import { create, createRegistry, type DescFile, type DescMessage, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type ServerReflectionRequest,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
  type ServerReflection as ServerReflectionV1,
} from "@trellis/gen/grpc/reflection/v1/reflection_pb.js";
import {
  type ServerReflectionRequest as ServerReflectionRequestV1Alpha,
  ServerReflectionResponseSchema as ServerReflectionResponseSchemaV1Alpha,
  type ServerReflectionResponse as ServerReflectionResponseV1Alpha,
  type ServerReflection as ServerReflectionV1Alpha,
} from "@trellis/gen/grpc/reflection/v1alpha/reflection_pb.js";

// gRPC status codes carried in error_response (google.rpc.Code numbering).
const notFound = 5;
const invalidArgument = 3;

/** Lookups over a closed set of files: the served files and everything they import. */
export interface ReflectionIndex {
  /** Every file in the set, dependencies included. */
  readonly files: readonly DescFile[];
  /** The file with this name (e.g. "trellis/testing/v1/testing.proto"). */
  fileByName(name: string): DescFile | undefined;
  /** The file declaring a fully qualified symbol: service, method, message, enum, value, field, extension. */
  fileContainingSymbol(symbol: string): DescFile | undefined;
  /** The file declaring extension number `number` of message `typeName`. */
  fileContainingExtension(typeName: string, number: number): DescFile | undefined;
  /** The extension numbers known for a message, or undefined when the message is unknown. */
  extensionNumbers(typeName: string): number[] | undefined;
  /** The file's FileDescriptorProto, serialized exactly as protoc-gen-es embedded it. */
  serialized(file: DescFile): Uint8Array;
}

/** Indexes the given files and, transitively, every file they import. */
export function createReflectionIndex(roots: readonly DescFile[]): ReflectionIndex {
  const byName = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (byName.has(file.proto.name)) return;
    byName.set(file.proto.name, file);
    file.dependencies.forEach(visit);
  };
  roots.forEach(visit);
  const files = [...byName.values()];
  const registry = createRegistry(...files);
  const members = new Map<string, DescFile>();
  const addMessage = (message: DescMessage) => {
    for (const member of message.members) members.set(`${message.typeName}.${member.name}`, message.file);
    message.nestedMessages.forEach(addMessage);
  };
  for (const file of files) {
    file.messages.forEach(addMessage);
    for (const service of file.services) {
      for (const method of service.methods) members.set(`${service.typeName}.${method.name}`, file);
    }
  }
  for (const type of registry) {
    // An enum value's full name is a sibling of its enum, as protoc scopes it.
    if (type.kind !== "enum") continue;
    const scope = type.typeName.slice(0, Math.max(0, type.typeName.lastIndexOf(".")));
    for (const value of type.values) members.set(scope ? `${scope}.${value.name}` : value.name, type.file);
  }
  const cache = new Map<string, Uint8Array>();
  return {
    files,
    fileByName: (name) => byName.get(name),
    fileContainingSymbol(symbol) {
      const name = symbol.startsWith(".") ? symbol.slice(1) : symbol;
      return registry.get(name)?.file ?? members.get(name);
    },
    fileContainingExtension(typeName, number) {
      const extendee = registry.getMessage(typeName);
      return extendee ? registry.getExtensionFor(extendee, number)?.file : undefined;
    },
    extensionNumbers(typeName) {
      if (!registry.getMessage(typeName)) return undefined;
      const numbers: number[] = [];
      for (const type of registry) {
        if (type.kind === "extension" && type.extendee.typeName === typeName) numbers.push(type.number);
      }
      return numbers.sort((a, b) => a - b);
    },
    serialized(file) {
      let bytes = cache.get(file.proto.name);
      if (!bytes) {
        bytes = toBinary(FileDescriptorProtoSchema, file.proto);
        cache.set(file.proto.name, bytes);
      }
      return bytes;
    },
  };
}

type Request = ServerReflectionRequest | ServerReflectionRequestV1Alpha;

// The v1 and v1alpha responses share one shape; this is it without the type names.
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/** Answers reflection requests on one stream; files already sent on it are not sent again as deps. */
function createStreamAnswerer(index: ReflectionIndex, services: () => readonly string[]) {
  const sent = new Set<string>();
  // The requested file always goes out first; its imports follow unless this stream already has them.
  const withDependencies = (file: DescFile): Answer => {
    const out: Uint8Array[] = [];
    const seen = new Set<string>();
    const queue = [file];
    for (let next = queue.shift(); next; next = queue.shift()) {
      if (seen.has(next.proto.name)) continue;
      seen.add(next.proto.name);
      if (out.length === 0 || !sent.has(next.proto.name)) out.push(index.serialized(next));
      sent.add(next.proto.name);
      queue.push(...next.dependencies);
    }
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  };
  const error = (errorCode: number, errorMessage: string): Answer => ({
    case: "errorResponse",
    value: { errorCode, errorMessage },
  });
  return (request: Request): Answer => {
    const { messageRequest } = request;
    switch (messageRequest.case) {
      case "fileByFilename": {
        const file = index.fileByName(messageRequest.value);
        return file ? withDependencies(file) : error(notFound, `file ${messageRequest.value} not found`);
      }
      case "fileContainingSymbol": {
        const file = index.fileContainingSymbol(messageRequest.value);
        return file ? withDependencies(file) : error(notFound, `symbol ${messageRequest.value} not found`);
      }
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = messageRequest.value;
        const file = index.fileContainingExtension(containingType, extensionNumber);
        return file
          ? withDependencies(file)
          : error(notFound, `extension ${extensionNumber} of ${containingType} not found`);
      }
      case "allExtensionNumbersOfType": {
        const numbers = index.extensionNumbers(messageRequest.value);
        return numbers
          ? {
              case: "allExtensionNumbersResponse",
              value: { baseTypeName: messageRequest.value, extensionNumber: numbers },
            }
          : error(notFound, `type ${messageRequest.value} not found`);
      }
      case "listServices":
        return {
          case: "listServicesResponse",
          value: { service: services().map((name) => ({ name })) },
        };
      default:
        return error(invalidArgument, "empty reflection request");
    }
  };
}

/** Options for createReflectionServices. */
export interface ReflectionOptions {
  /** The files to answer from; their imports are included transitively. */
  readonly files: readonly DescFile[];
  /** The fully qualified names of the served services, for list_services (read on each request). */
  readonly services: () => readonly string[];
}

/** grpc.reflection.v1 and v1alpha ServerReflection implementations answering from the given files. */
export function createReflectionServices(options: ReflectionOptions): {
  v1: ServiceImpl<typeof ServerReflectionV1>;
  v1alpha: ServiceImpl<typeof ServerReflectionV1Alpha>;
  index: ReflectionIndex;
} {
  const index = createReflectionIndex(options.files);
  return {
    index,
    v1: {
      async *serverReflectionInfo(requests): AsyncIterable<ServerReflectionResponse> {
        const answer = createStreamAnswerer(index, options.services);
        for await (const request of requests) {
          yield create(ServerReflectionResponseSchema, {
            validHost: request.host,
            originalRequest: request,
            messageResponse: answer(request),
          });
        }
      },
    },
    v1alpha: {
      async *serverReflectionInfo(requests): AsyncIterable<ServerReflectionResponseV1Alpha> {
        const answer = createStreamAnswerer(index, options.services);
        for await (const request of requests) {
          yield create(ServerReflectionResponseSchemaV1Alpha, {
            validHost: request.host,
            originalRequest: request,
            messageResponse: answer(request),
          });
        }
      },
    },
  };
}
