import { Code, ConnectError } from "@connectrpc/connect";
import type { Session } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import type { Page, PageContext } from "../app.ts";
import { field, h, replace } from "../dom.ts";
import { formatTime } from "../format.ts";
import { problemNote, submitting } from "../forms.ts";

/** Two-factor authentication (enroll, confirm, recovery codes shown once, disable) and sessions. */
export const securityPage: Page = (ctx) => {
  const mfa = h("div", { class: "card", "data-section": "mfa" }, h("h2", {}, "Two-factor authentication"));
  const sessions = h("div", { class: "card", "data-section": "sessions" }, h("h2", {}, "Sessions"));
  mfaStart(ctx, mfa);
  void loadSessions(ctx, sessions);
  return h("section", { "data-page": "security" }, h("h1", {}, "Security"), mfa, sessions);
};

function mfaStart(ctx: PageContext, card: HTMLElement): void {
  const form = h(
    "form",
    { "data-form": "enroll-mfa" },
    h("p", {}, "Ask for a code from an authenticator app at every sign-in, on top of the password."),
    // Auth tells no MFA state up front: the enrollment call answers whether it is already on.
    h("button", { type: "submit" }, "Set up two-factor authentication"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submitting(form, async () => {
      try {
        const res = await ctx.api.auth.enrollTotp({});
        replace(
          card,
          h("h2", {}, "Two-factor authentication"),
          confirmForm(ctx, card, res.secret, res.otpauthUri),
        );
      } catch (error) {
        // Already on: offer to turn it off instead.
        if (ConnectError.from(error).code !== Code.FailedPrecondition) throw error;
        replace(card, h("h2", {}, "Two-factor authentication"), disableForm(ctx, card));
      }
    });
  });
  replace(card, h("h2", {}, "Two-factor authentication"), form);
}

function confirmForm(ctx: PageContext, card: HTMLElement, secret: string, uri: string): HTMLFormElement {
  const grouped = secret.replace(/(.{4})/g, "$1 ").trim();
  const form = h(
    "form",
    { "data-form": "confirm-mfa" },
    h(
      "p",
      {},
      "Add this key to your authenticator app (or open the link on a phone), then enter the code it shows.",
    ),
    h("p", {}, h("code", { class: "secret", "data-secret": secret }, grouped)),
    h("p", {}, h("a", { href: uri }, "Open in authenticator app")),
    h(
      "label",
      {},
      "Six-digit code",
      h("input", {
        name: "code",
        inputmode: "numeric",
        pattern: "[0-9]{6}",
        maxlength: 6,
        autocomplete: "one-time-code",
        required: true,
      }),
    ),
    h("button", { type: "submit" }, "Confirm"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submitting(form, async () => {
      const { recoveryCodes } = await ctx.api.auth.confirmTotp({ code: field(form, "code") });
      const done = h("button", { type: "button" }, "I have saved them");
      done.addEventListener("click", () =>
        replace(card, h("h2", {}, "Two-factor authentication"), disableForm(ctx, card)),
      );
      replace(
        card,
        h("h2", {}, "Two-factor authentication is on"),
        h(
          "p",
          {},
          "Save these recovery codes somewhere safe. Each one signs you in once if you lose your phone. They are shown only now.",
        ),
        h(
          "ul",
          { class: "codes", "data-recovery-codes": "" },
          recoveryCodes.map((c) => h("li", {}, h("code", {}, c))),
        ),
        done,
      );
    });
  });
  return form;
}

function disableForm(ctx: PageContext, card: HTMLElement): HTMLFormElement {
  const form = h(
    "form",
    { "data-form": "disable-mfa" },
    h(
      "p",
      { "data-mfa": "on" },
      "Two-factor authentication is on. To turn it off, enter a current code or an unused recovery code.",
    ),
    h("label", {}, "Code", h("input", { name: "code", required: true, autocomplete: "one-time-code" })),
    h("button", { type: "submit", class: "secondary" }, "Turn off"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const code = field(form, "code");
    void submitting(form, async () => {
      await ctx.api.auth.disableTotp({
        proof: /^[0-9]{6}$/.test(code)
          ? { case: "code", value: code }
          : { case: "recoveryCode", value: code },
      });
      mfaStart(ctx, card);
    });
  });
  return form;
}

async function loadSessions(ctx: PageContext, card: HTMLElement): Promise<void> {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(card, h("h2", {}, "Sessions"), body);
  try {
    const { sessions } = await ctx.api.auth.listSessions({}, { signal: ctx.signal });
    replace(
      body,
      h(
        "table",
        {},
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Device", "Address", "Signed in", "Last active", ""].map((t) => h("th", {}, t)),
          ),
        ),
        h(
          "tbody",
          {},
          sessions.map((s) => sessionRow(ctx, s, () => void loadSessions(ctx, card))),
        ),
      ),
    );
  } catch (error) {
    const note = problemNote(error);
    if (note) replace(body, note);
  }
}

function sessionRow(ctx: PageContext, s: Session, reload: () => void): HTMLElement {
  const form = h(
    "form",
    { class: "inline" },
    h("button", { type: "submit", class: "secondary" }, s.current ? "Sign out here" : "Revoke"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submitting(form, async () => {
      await ctx.api.auth.revokeSession({ sessionId: s.id });
      // Revoking this very session ends it: forget the tokens too.
      if (s.current) await ctx.api.signOut();
      else reload();
    });
  });
  return h(
    "tr",
    { "data-session": s.id },
    h("td", {}, browserName(s.userAgent), s.current ? h("span", { class: "tag" }, "this session") : ""),
    h("td", {}, s.ipAddress || "—"),
    h("td", {}, formatTime(s.createdAt)),
    h("td", {}, formatTime(s.lastUsedAt)),
    h("td", {}, form),
  );
}

/** A short device description from a User-Agent string. */
export function browserName(userAgent: string): string {
  if (!userAgent) return "Unknown device";
  const browser = /(Firefox|Edg|Chrome|Safari)\/[\d.]+/.exec(userAgent)?.[1];
  const os = /(Windows|Mac OS X|Android|iPhone|Linux)/.exec(userAgent)?.[1];
  const name = browser === "Edg" ? "Edge" : browser;
  return name ? `${name}${os ? ` on ${os}` : ""}` : userAgent.slice(0, 60);
}
