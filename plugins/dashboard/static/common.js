// Shared by the pages: the CSRF header for the APIs, and building DOM without HTML
// strings (text always goes in as text: nothing a message holds can run).
"use strict";
const GW = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  async function api(method, path, body) {
    const init = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { raw: text }; }
    if (!res.ok) {
      const err = new Error((data && data.error && data.error.message) || res.statusText);
      err.status = res.status; err.body = data; throw err;
    }
    return data;
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function time(ms) { return ms ? new Date(ms).toLocaleTimeString() : ""; }
  return { api, el, time, csrf };
})();
