import type { Api } from "./api.ts";
import { h, replace } from "./dom.ts";
import { analyticsPage } from "./pages/analytics.ts";
import { billingPage } from "./pages/billing.ts";
import { loginPage } from "./pages/login.ts";
import { orderPage, ordersPage } from "./pages/orders.ts";
import { productsPage } from "./pages/products.ts";
import { securityPage } from "./pages/security.ts";
import type { SessionStore } from "./session.ts";

/** What every page gets. */
export interface PageContext {
  readonly api: Api;
  readonly session: SessionStore;
  /** Goes to a route, e.g. "#/orders/ord_1". */
  readonly navigate: (hash: string) => void;
  /** Aborted when the user leaves the page: polls and streams stop on it. */
  readonly signal: AbortSignal;
  /** The route's parts after the page name ("#/orders/ord_1" → ["ord_1"]). */
  readonly params: readonly string[];
}

/** A page renders itself into an element; anything long-running watches ctx.signal. */
export type Page = (ctx: PageContext) => HTMLElement;

const pages: Record<string, { title: string; page: Page; nav: boolean }> = {
  products: { title: "Products", page: productsPage, nav: true },
  orders: { title: "Orders", page: ordersPage, nav: true },
  billing: { title: "Billing", page: billingPage, nav: true },
  analytics: { title: "Analytics", page: analyticsPage, nav: true },
  security: { title: "Security", page: securityPage, nav: true },
};

/** Mounts the console in root: hash routing, the signed-in layout, and the login page otherwise. */
export function startApp(root: HTMLElement, api: Api, session: SessionStore): void {
  let controller = new AbortController();
  const navigate = (hash: string) => {
    if (location.hash === hash) render();
    else location.hash = hash;
  };

  function render() {
    controller.abort();
    controller = new AbortController();
    const [name = "", ...params] = location.hash.replace(/^#\/?/, "").split("/");
    const base = { api, session, navigate, signal: controller.signal, params };
    if (!session.get()) {
      if (name !== "login") {
        navigate("#/login");
        return;
      }
      document.title = "Sign in · Trellis";
      replace(root, loginPage(base));
      return;
    }
    if (name === "login" || name === "") {
      navigate("#/products");
      return;
    }
    const route = name === "orders" && params[0] ? undefined : pages[name];
    const title = route?.title ?? (name === "orders" ? "Order" : "Not found");
    const content = route
      ? route.page(base)
      : name === "orders"
        ? orderPage(base)
        : h("section", { "data-page": "not-found" }, h("h1", {}, "Not found"));
    document.title = `${title} · Trellis`;
    replace(root, layout(name, api, session), h("main", {}, content));
  }

  window.addEventListener("hashchange", render);
  let signedIn = session.get() !== undefined;
  session.subscribe((s) => {
    // Only sign-in and sign-out re-render; a refreshed token changes nothing on screen.
    if ((s !== undefined) === signedIn) return;
    signedIn = s !== undefined;
    navigate(signedIn ? "#/products" : "#/login");
  });
  render();
}

function layout(current: string, api: Api, session: SessionStore): HTMLElement {
  const links = Object.entries(pages)
    .filter(([, p]) => p.nav)
    .map(([name, p]) =>
      h("a", { href: `#/${name}`, class: name === current ? "active" : undefined }, p.title),
    );
  return h(
    "header",
    {},
    h("span", { class: "brand" }, "Trellis"),
    h("nav", {}, links),
    h(
      "span",
      { class: "who" },
      session.get()?.email ?? "",
      h(
        "button",
        { type: "button", class: "link", "data-action": "sign-out", onclick: () => api.signOut() },
        "Sign out",
      ),
    ),
  );
}
