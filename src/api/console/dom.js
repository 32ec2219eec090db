/** A DOM element with text (always textContent: call data is untrusted) or child nodes. */
export function el(tag, content, cls) {
  const e = document.createElement(tag);
  if (Array.isArray(content)) e.append(...content);
  else if (content !== undefined) e.textContent = String(content);
  if (cls) e.className = cls;
  return e;
}
