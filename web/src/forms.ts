import { Code } from "@connectrpc/connect";
import { h } from "./dom.ts";
import { describeError, type Problem } from "./errors.ts";

type Control = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

function controls(form: HTMLFormElement): Control[] {
  return [...form.elements].filter(
    (e): e is Control =>
      (e instanceof HTMLInputElement || e instanceof HTMLSelectElement || e instanceof HTMLTextAreaElement) &&
      e.name !== "",
  );
}

/** The control a violation's path belongs to: same name, else the longest name the path starts with. */
export function controlFor<T extends { name: string }>(
  path: string,
  candidates: readonly T[],
): T | undefined {
  const exact = candidates.find((c) => c.name === path);
  if (exact) return exact;
  let best: T | undefined;
  for (const c of candidates) {
    const prefix = path.startsWith(`${c.name}.`) || path.startsWith(`${c.name}[`);
    if (prefix && (!best || c.name.length > best.name.length)) best = c;
  }
  return best;
}

/** Removes the messages a previous showProblem put in form. */
export function clearProblem(form: HTMLFormElement): void {
  for (const el of form.querySelectorAll(".field-error, .form-error")) el.remove();
  for (const c of controls(form)) c.removeAttribute("aria-invalid");
}

/** Shows problem in form: each field's message under its control, the rest at the top. */
export function showProblem(form: HTMLFormElement, problem: Problem): void {
  clearProblem(form);
  if (problem.aborted) return;
  const list = controls(form);
  const unplaced: string[] = [];
  for (const [path, text] of problem.fields) {
    const control = controlFor(path, list);
    if (!control) {
      unplaced.push(`${path}: ${text}`);
      continue;
    }
    control.setAttribute("aria-invalid", "true");
    const note = h("p", { class: "field-error", "data-field": control.name, role: "alert" }, text);
    (control.closest("label") ?? control).after(note);
  }
  const message = unplaced.length > 0 ? `${problem.message} ${unplaced.join("; ")}` : problem.message;
  form.prepend(h("p", { class: "form-error", role: "alert", "data-code": codeName(problem.code) }, message));
}

/** A code's name as the Connect protocol spells it ("resource_exhausted"). */
export function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/[A-Z]/g, (c, i: number) => (i > 0 ? "_" : "") + c.toLowerCase());
}

/**
 * Runs action for a form submission: the submit button is disabled meanwhile, errors are shown
 * in the form, and after resource_exhausted the button stays disabled for the wait the server asked.
 */
export async function submitting(form: HTMLFormElement, action: () => Promise<void>): Promise<void> {
  const buttons = [...form.querySelectorAll<HTMLButtonElement>("button")];
  for (const b of buttons) b.disabled = true;
  clearProblem(form);
  let wait = 0;
  try {
    await action();
  } catch (error) {
    const problem = describeError(error);
    showProblem(form, problem);
    wait = problem.retryAfterSeconds ?? 0;
  } finally {
    const enable = () => {
      for (const b of buttons) b.disabled = false;
    };
    if (wait > 0) setTimeout(enable, wait * 1000);
    else enable();
  }
}

/** Shows a problem in a page section (for errors outside forms). */
export function problemNote(error: unknown): HTMLElement | undefined {
  const problem = describeError(error);
  if (problem.aborted) return undefined;
  return h("p", { class: "form-error", role: "alert", "data-code": codeName(problem.code) }, problem.message);
}
