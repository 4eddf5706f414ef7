import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { type LoginRequestSchema, MfaChallengeReason } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import type { Page, PageContext } from "../app.ts";
import { field, h, replace } from "../dom.ts";
import { showProblem, submitting } from "../forms.ts";

type SecondFactor = MessageInitShape<typeof LoginRequestSchema>["secondFactor"];

/** Sign in (with the TOTP step when the account has MFA on) and create an account. */
export const loginPage: Page = (ctx) => {
  const body = h("div", { class: "card" });
  const root = h("section", { class: "login", "data-page": "login" }, h("h1", {}, "Trellis console"), body);
  const show = (mode: "login" | "signup") => {
    const tabs = h(
      "div",
      { class: "tabs", role: "tablist" },
      h(
        "button",
        {
          type: "button",
          role: "tab",
          "aria-selected": String(mode === "login"),
          onclick: () => show("login"),
        },
        "Sign in",
      ),
      h(
        "button",
        {
          type: "button",
          role: "tab",
          "aria-selected": String(mode === "signup"),
          onclick: () => show("signup"),
        },
        "Create account",
      ),
    );
    replace(body, tabs, mode === "login" ? loginForm(ctx, body) : signUpForm(ctx));
  };
  show("login");
  return root;
};

function credentials(): HTMLElement[] {
  return [
    h(
      "label",
      {},
      "Email",
      h("input", { name: "email", type: "email", autocomplete: "username", required: true }),
    ),
    h(
      "label",
      {},
      "Password",
      h("input", { name: "password", type: "password", autocomplete: "current-password", required: true }),
    ),
  ];
}

function loginForm(ctx: PageContext, body: HTMLElement): HTMLFormElement {
  const form = h("form", { "data-form": "login" }, credentials(), h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const email = field(form, "email");
    const password = field(form, "password");
    void submitting(form, async () => {
      const res = await ctx.api.auth.login({ email, password });
      if (res.result.case === "tokens") ctx.api.signIn(res.result.value, email);
      else replace(body, mfaForm(ctx, email, password));
    });
  });
  return form;
}

function mfaForm(ctx: PageContext, email: string, password: string): HTMLFormElement {
  let recovery = false;
  const input = h("input", {
    name: "totp_code",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    pattern: "[0-9]{6}",
    maxlength: 6,
    required: true,
  });
  const label = h("label", {}, "Six-digit code from your authenticator app", input);
  const toggle = h("button", { type: "button", class: "link" }, "Use a recovery code instead");
  toggle.addEventListener("click", () => {
    recovery = !recovery;
    input.name = recovery ? "recovery_code" : "totp_code";
    input.pattern = recovery ? "[A-Za-z0-9-]{8,64}" : "[0-9]{6}";
    input.maxLength = recovery ? 64 : 6;
    input.inputMode = recovery ? "text" : "numeric";
    input.value = "";
    label.firstChild?.replaceWith(recovery ? "Recovery code" : "Six-digit code from your authenticator app");
    toggle.textContent = recovery ? "Use the authenticator app instead" : "Use a recovery code instead";
  });
  const form = h(
    "form",
    { "data-form": "mfa" },
    h("h2", {}, "Two-factor authentication"),
    h("p", {}, `Signing in as ${email}.`),
    label,
    h("button", { type: "submit" }, "Verify"),
    toggle,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const code = input.value.trim();
    const secondFactor: SecondFactor = recovery
      ? { case: "recoveryCode", value: code }
      : { case: "totpCode", value: code };
    void submitting(form, async () => {
      const res = await ctx.api.auth.login({ email, password, secondFactor });
      if (res.result.case === "tokens") {
        ctx.api.signIn(res.result.value, email);
        return;
      }
      const invalid = res.result.value?.reason === MfaChallengeReason.CODE_INVALID;
      showProblem(form, {
        code: Code.PermissionDenied,
        message: invalid ? "That code is not right, or it was already used." : "Enter a code to continue.",
        fields: new Map([[input.name, invalid ? "Wrong or used code." : "Required."]]),
        aborted: false,
      });
    });
  });
  return form;
}

function signUpForm(ctx: PageContext): HTMLFormElement {
  const form = h(
    "form",
    { "data-form": "signup" },
    credentials(),
    h("p", { class: "hint" }, "At least 12 characters."),
    h("label", {}, "Organisation name", h("input", { name: "tenant_name", required: true, maxlength: 100 })),
    h("button", { type: "submit" }, "Create account"),
  );
  form.querySelector<HTMLInputElement>("input[name=password]")?.setAttribute("autocomplete", "new-password");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const email = field(form, "email");
    void submitting(form, async () => {
      const res = await ctx.api.auth.signUp({
        email,
        password: field(form, "password"),
        tenantName: field(form, "tenant_name"),
      });
      if (res.tokens) ctx.api.signIn(res.tokens, email);
    });
  });
  return form;
}
