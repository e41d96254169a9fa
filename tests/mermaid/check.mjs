import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window; globalThis.document = dom.window.document;
globalThis.DOMPurify = undefined;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });
let text = '';
for await (const chunk of process.stdin) text += chunk;
try {
  const r = await mermaid.parse(text);
  console.log('ok', JSON.stringify(r));
} catch (e) {
  console.log('ERROR', e.message ?? e);
  process.exit(1);
}
