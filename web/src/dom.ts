/** Anything h() accepts as a child: nodes, text, nested lists; false/null/undefined are skipped. */
export type Child = Node | string | number | bigint | false | null | undefined | readonly Child[];

/** Attributes and properties of h(): on* functions become listeners, the rest attributes. */
export type Props = Record<string, unknown>;

// Set as DOM properties rather than attributes, so the live state follows.
const properties = new Set(["value", "checked", "disabled", "selected", "srcdoc", "hidden"]);

/** Creates an element with props and children; a tiny stand-in for a view library. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value as EventListener);
    } else if (properties.has(key)) {
      (el as unknown as Record<string, unknown>)[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (flattening lists, skipping empty values) to parent. */
export function append(parent: Node, children: readonly Child[]): void {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces every child of parent with children. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, children);
}

/** The named form control's current value, trimmed (passwords are taken as typed). */
export function field(form: HTMLFormElement, name: string): string {
  const el = form.elements.namedItem(name);
  if (el instanceof HTMLInputElement && el.type === "password") return el.value;
  if (el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement)
    return el.value.trim();
  return "";
}

/** Whether the named checkbox of form is checked. */
export function checked(form: HTMLFormElement, name: string): boolean {
  const el = form.elements.namedItem(name);
  return el instanceof HTMLInputElement && el.checked;
}
