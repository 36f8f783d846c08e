// The agentforum web view. Everything from the store is put in with textContent, except a
// message's content rendered from Markdown by the server, which escapes every raw HTML tag.
"use strict";

const nodes = new Map(); // hash -> {li, list, loaded, expanded, toggle, summary}
let selected = null;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function summaryRow(message, onClick) {
  const row = el("span", "row");
  row.dataset.hash = message.hash;
  row.append(el("span", "hash", message.hash.slice(0, 7)));
  for (const name of message.refs || []) row.append(el("span", "ref", name));
  row.append(el("span", "kind kind-" + message.kind, message.kind));
  if (message.sender) row.append(el("span", "sender", message.sender));
  if (message.cancelled) row.append(el("span", "cancelled", "cancelled"));
  row.append(el("span", "preview", message.preview));
  row.addEventListener("click", (event) => {
    event.stopPropagation();
    onClick(message.hash);
  });
  return row;
}

function addNode(list, message, fresh) {
  if (nodes.has(message.hash)) return nodes.get(message.hash);
  const li = el("li", "node" + (fresh ? " new" : ""));
  const toggle = el("button", "toggle", "▸");
  toggle.type = "button";
  toggle.title = "show the replies";
  const entry = { li, list: null, loaded: false, expanded: false, toggle, summary: message };
  toggle.addEventListener("click", () => expand(message.hash, !entry.expanded));
  const row = summaryRow(message, showMessage);
  row.prepend(toggle);
  li.append(row);
  nodes.set(message.hash, entry);
  list.append(li);
  return entry;
}

async function expand(hash, open) {
  const entry = nodes.get(hash);
  if (!entry) return;
  entry.expanded = open;
  entry.toggle.textContent = open ? "▾" : "▸";
  if (!entry.list) {
    entry.list = el("ul");
    entry.li.append(entry.list);
  }
  entry.list.hidden = !open;
  if (open) {
    // Fetched on every unfolding: what was stored since is added (the feed reports the new
    // messages of SQLite and memory stores as they come, not those of PostgreSQL).
    const children = await getJSON("/api/children?of=" + encodeURIComponent(hash));
    for (const child of children) addNode(entry.list, child, entry.loaded);
    entry.loaded = true;
    if (children.length === 0) entry.toggle.textContent = "·";
  }
}

function dl(pairs) {
  const list = el("dl");
  for (const [name, value, className] of pairs) {
    if (value === undefined || value === null) continue;
    list.append(el("dt", "", name));
    const dd = el("dd", className || "");
    if (value instanceof Node) dd.append(value);
    else dd.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
    list.append(dd);
  }
  return list;
}

function copyable(hash) {
  const span = el("span", "copy", hash);
  span.title = "click to copy";
  span.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(hash);
      span.title = "copied";
    } catch (error) {
      const range = document.createRange();
      range.selectNodeContents(span);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
    }
  });
  return span;
}

async function showMessage(hash) {
  const detail = document.getElementById("detail");
  if (selected) selected.classList.remove("selected");
  const entry = nodes.get(hash);
  if (entry) {
    selected = entry.li.firstChild;
    selected.classList.add("selected");
  }
  let message;
  try {
    message = await getJSON("/api/messages/" + encodeURIComponent(hash));
  } catch (error) {
    detail.replaceChildren(el("p", "error-text", String(error.message)));
    return;
  }
  const title = el("h3");
  title.append(el("span", "kind kind-" + message.kind, message.kind), " ");
  title.append(el("span", "sender", message.kind === "call" ? "→ " + message.receiver : message.sender));
  if (message.cancelled) title.append(" ", el("span", "cancelled", "cancelled"));
  const parts = [title];
  parts.push(dl([
    ["hash", copyable(message.hash)],
    ["refs", message.refs.length ? message.refs.join(", ") : null],
    ["parent", message.parent],
    ["reply to", message.reply_to],
    ["original", message.original],
    ["agent", message.receiver],
    ["kwargs", message.kwargs],
    ["error", message.error_type, "error-text"],
    ["metadata", Object.keys(message.metadata).length ? message.metadata : null],
  ]));
  if (message.kind !== "call") {
    const content = el("div", "content");
    content.innerHTML = message.html; // rendered by the server with raw HTML escaped
    parts.push(content);
  }
  parts.push(el("h3", "", "History"));
  const history = el("ul", "history");
  parts.push(history);
  detail.replaceChildren(...parts);
  for (const step of await getJSON("/api/history/" + encodeURIComponent(message.hash))) {
    const li = el("li");
    li.append(summaryRow(step, showMessage));
    history.append(li);
  }
}

async function loadRefs() {
  const refs = await getJSON("/api/refs");
  const list = document.getElementById("refs");
  list.replaceChildren();
  for (const ref of refs) {
    const li = el("li");
    const row = summaryRow(ref.message, showMessage);
    row.prepend(el("span", "ref", ref.name));
    li.append(row);
    list.append(li);
  }
}

async function loadRoots() {
  const tree = document.getElementById("tree");
  for (const root of await getJSON("/api/children")) addNode(tree, root, false);
}

async function showDiff(a, b) {
  const detail = document.getElementById("detail");
  let diff;
  try {
    diff = await getJSON("/api/diff?a=" + encodeURIComponent(a) + "&b=" + encodeURIComponent(b));
  } catch (error) {
    detail.replaceChildren(el("p", "error-text", String(error.message)));
    return;
  }
  const parts = [el("h3", "", "diff " + a + " .. " + b)];
  parts.push(el("p", "", diff.base ? "merge base:" : "no merge base: the branches share no message"));
  if (diff.base) parts.push(summaryRow(diff.base, showMessage));
  for (const [mark, name, messages] of [["---", a, diff.a], ["+++", b, diff.b]]) {
    parts.push(el("h3", "", mark + " " + name + ": " + messages.length + " after it"));
    const list = el("ul", "diff");
    for (const message of messages) {
      const li = el("li");
      li.append(summaryRow(message, showMessage));
      list.append(li);
    }
    parts.push(list);
  }
  detail.replaceChildren(...parts);
}

function onNewMessage(message) {
  if (nodes.has(message.hash)) return;
  if (message.parent === null) {
    addNode(document.getElementById("tree"), message, true);
    return;
  }
  const parent = nodes.get(message.parent);
  if (!parent) return; // its branch is not open: it is fetched when it is
  if (parent.loaded) addNode(parent.list, message, true);
  else if (parent.toggle.textContent === "·") parent.toggle.textContent = "▸";
  if (parent.loaded && parent.toggle.textContent === "·") parent.toggle.textContent = "▾";
}

function onToken(token) {
  // {call, agent, response, text} while a call's answer streams; {call, agent, ended} after.
  document.getElementById("live-section").hidden = false;
  let box = document.getElementById("call-" + token.call);
  if (!box) {
    box = el("li", "streaming");
    box.id = "call-" + token.call;
    box.append(el("span", "sender", token.agent));
    document.getElementById("live").append(box);
  }
  if (token.ended) {
    box.classList.add("ended");
    return;
  }
  let answer = box.querySelector('[data-response="' + token.response + '"]');
  if (!answer) {
    answer = el("div", "content answer", "");
    answer.dataset.response = String(token.response);
    box.append(answer);
  }
  answer.textContent += token.text;
}

function connect() {
  const status = document.getElementById("status");
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => { status.textContent = "live"; });
  events.addEventListener("error", () => { status.textContent = "reconnecting…"; });
  events.addEventListener("stored", (event) => onNewMessage(JSON.parse(event.data)));
  events.addEventListener("refs", () => loadRefs());
  events.addEventListener("token", (event) => onToken(JSON.parse(event.data)));
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("diff-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showDiff(document.getElementById("diff-a").value, document.getElementById("diff-b").value);
  });
  connect();
  await Promise.all([loadRefs(), loadRoots()]);
  document.body.dataset.ready = "true";
});
