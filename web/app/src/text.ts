// Message content is shown as text only (textContent, never HTML). Bidi
// overrides and isolates and C0/C1 controls other than newline and tab are
// replaced, so a message cannot reorder the text around it or hide itself.
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export function safeText(s: string): string {
  return s.replace(UNSAFE, '\ufffd');
}

/// An element with `text` as its content (never parsed as HTML).
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(typeof c === 'string' ? document.createTextNode(safeText(c)) : c);
  return e;
}
