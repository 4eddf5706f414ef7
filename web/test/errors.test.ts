import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "@trellis/gen/google/rpc/error_details_pb.js";
import { describeError, fieldPathText } from "../src/errors.ts";
import { codeName, controlFor } from "../src/forms.ts";

const element = (fieldName: string, index?: number) => ({
  fieldName,
  subscript: index === undefined ? { case: undefined } : { case: "index" as const, value: BigInt(index) },
});

describe("errors as people read them", () => {
  test("violations become messages keyed by proto field path; message-level ones stay general", () => {
    const violations = create(ViolationsSchema, {
      violations: [
        {
          field: { elements: [element("price"), element("currency")] },
          ruleId: "string.pattern",
          message: "does not match",
        },
        {
          field: { elements: [element("items", 0), element("quantity")] },
          ruleId: "int32.gt",
          message: "must be greater than 0",
        },
        { ruleId: "create_plan.one_currency", message: "one currency only" },
      ],
    });
    const p = describeError(
      new ConnectError("invalid", Code.InvalidArgument, undefined, [
        { desc: ViolationsSchema, value: violations },
      ]),
    );
    assert.equal(p.code, Code.InvalidArgument);
    assert.deepEqual([...p.fields.keys()], ["price.currency", "items[0].quantity"]);
    assert.equal(p.fields.get("price.currency"), "Does not match.");
    assert.equal(p.message, "Please check the form. One currency only.");
  });

  test("resource_exhausted says how long to wait, from Retry-After or RetryInfo", () => {
    const byHeader = describeError(new ConnectError("slow", Code.ResourceExhausted, { "retry-after": "7" }));
    assert.equal(byHeader.retryAfterSeconds, 7);
    assert.match(byHeader.message, /in 7 s/);
    const byDetail = describeError(
      new ConnectError("slow", Code.ResourceExhausted, undefined, [
        { desc: RetryInfoSchema, value: { retryDelay: { seconds: 2n, nanos: 500_000_000 } } },
      ]),
    );
    assert.equal(byDetail.retryAfterSeconds, 3);
    assert.equal(
      describeError(new ConnectError("slow", Code.ResourceExhausted)).retryAfterSeconds,
      undefined,
    );
  });

  test("internal errors never show the server's text; readable codes do", () => {
    assert.doesNotMatch(describeError(new ConnectError("pq: relation missing", Code.Internal)).message, /pq/);
    assert.match(
      describeError(new ConnectError("MFA is already on", Code.FailedPrecondition)).message,
      /^MFA is already on\.$/,
    );
    assert.equal(describeError(new ConnectError("x", Code.Canceled)).aborted, true);
    assert.equal(describeError(new Error("network down")).code, Code.Unknown);
  });

  test("a violation finds its form control: same name, else the longest prefix", () => {
    const controls = [{ name: "price" }, { name: "price.currency" }, { name: "items[0].quantity" }];
    assert.equal(controlFor("price.currency", controls)?.name, "price.currency");
    assert.equal(controlFor("price.amount_minor", controls)?.name, "price");
    assert.equal(controlFor("items[0].quantity", controls)?.name, "items[0].quantity");
    assert.equal(controlFor("sku", controls), undefined);
    assert.equal(fieldPathText(undefined), "");
    assert.equal(codeName(Code.ResourceExhausted), "resource_exhausted");
    assert.equal(codeName(Code.InvalidArgument), "invalid_argument");
  });
});
