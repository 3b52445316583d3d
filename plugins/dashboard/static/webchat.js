// Chat on /v1/responses: the answer streams in as the upstream sends it (SSE read from
// fetch), sessions and their history from /gateway/sessions, models from /v1/models.
"use strict";
(() => {
  const { api, el, csrf } = GW;
  const $ = (id) => document.getElementById(id);
  const form = $("chat-form");
  if (!form) return; // the feature is off: the page says so
  const messages = $("messages");
  const sessionPick = $("session");

  function show(role, text) {
    const body = el("span", { class: "text", text });
    const li = el("li", { class: role }, el("span", { class: "role", text: role }), body);
    messages.append(li);
    return body;
  }
  function status(text) { $("chat-status").textContent = text; }

  async function loadModels() {
    try {
      const list = await api("GET", "/v1/models");
      for (const m of list.data) $("model").append(el("option", { value: m.id, text: m.id }));
    } catch (e) { status(`models: ${e.message}`); }
  }
  async function loadSessions(select) {
    try {
      const list = await api("GET", "/gateway/sessions?limit=50");
      for (const s of list.sessions) {
        if (![...sessionPick.options].some((o) => o.value === s.session_key)) {
          sessionPick.append(el("option", { value: s.session_key, text: `${s.session_key} (${s.message_count})` }));
        }
      }
      if (select) sessionPick.value = select;
    } catch (e) { /* the sessions plugin is off: no history */ }
  }
  async function loadHistory(key) {
    messages.replaceChildren();
    if (!key) return;
    try {
      const detail = await api("GET", `/gateway/sessions/${encodeURIComponent(key)}`);
      for (const m of detail.messages || detail.conversation || []) show(m.role, m.content);
    } catch (e) { status(`history: ${e.message}`); }
  }
  sessionPick.addEventListener("change", () => loadHistory(sessionPick.value));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt) return;
    let key = sessionPick.value;
    if (!key) {
      key = `webchat-${Date.now().toString(36)}`;
      sessionPick.append(el("option", { value: key, text: key }));
      sessionPick.value = key;
    }
    show("user", prompt);
    $("prompt").value = "";
    const answer = show("assistant", "");
    $("send").disabled = true;
    status("streaming…");
    try {
      const res = await fetch("/v1/responses", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "text/event-stream" },
        body: JSON.stringify({ model: $("model").value, input: prompt, stream: true,
          metadata: { session_id: key } }),
      });
      if (!res.ok) {
        const body = await res.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || res.statusText);
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data || data === "[DONE]") continue;
          const ev = JSON.parse(data);
          if (ev.type === "response.output_text.delta") answer.textContent += ev.delta;
          else if (ev.type === "error" || ev.type === "response.failed") {
            status(`error: ${(ev.error && ev.error.message) || (ev.response && ev.response.error && ev.response.error.message) || "failed"}`);
          }
        }
      }
      status("done");
    } catch (e) {
      status(`error: ${e.message}`);
    } finally {
      $("send").disabled = false;
    }
  });
  loadModels();
  loadSessions();
})();
