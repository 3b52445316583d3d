// The live overview: one snapshot from /dashboard/stream, then change notices that make
// it re-read the data APIs (filtered for the signed-in principal).
"use strict";
(() => {
  const { api, el, time } = GW;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  function renderHealth(h) {
    const dl = $("health"); dl.replaceChildren();
    for (const [k, v] of [["status", h.status], ["state", h.state], ["version", h.version],
      ["uptime", `${Math.round(h.uptime_seconds)} s`], ["plugins", h.plugins.join(", ")]]) {
      dl.append(el("dt", { text: k }), el("dd", { text: v, id: `health-${k}` }));
    }
  }
  function renderRunsByState(counts) {
    const t = $("runs-by-state"); t.replaceChildren();
    for (const [state, n] of Object.entries(counts || {})) {
      t.append(el("tr", {}, el("th", { text: state }), el("td", { text: n, id: `runs-${state}` })));
    }
  }
  function renderTimeline(tl) {
    const box = $("timeline"); box.replaceChildren();
    if (!tl) { box.append(el("p", { class: "disabled", text: "This feature is disabled: the pipelines plugin is off." })); return; }
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", "0 0 600 160");
    const max = Math.max(1, ...tl.buckets.map((b) => b.queued + b.completed + b.failed));
    const w = 600 / tl.buckets.length;
    tl.buckets.forEach((b, i) => {
      let y = 145;
      for (const kind of ["queued", "completed", "failed"]) {
        const h = (b[kind] / max) * 130;
        if (!h) continue;
        const r = document.createElementNS(SVG, "rect");
        r.setAttribute("x", String(i * w + 1)); r.setAttribute("width", String(Math.max(1, w - 2)));
        r.setAttribute("y", String(y - h)); r.setAttribute("height", String(h));
        r.setAttribute("class", kind);
        const title = document.createElementNS(SVG, "title");
        title.textContent = `${time(b.start_ms)}: ${b[kind]} ${kind}`; r.append(title);
        svg.append(r); y -= h;
      }
    });
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", "2"); label.setAttribute("y", "158");
    label.textContent = `${time(tl.start_ms)} – ${time(tl.end_ms)} · queued / completed / failed`;
    svg.append(label); box.append(svg);
  }
  function renderAlerts(alerts) {
    const ul = $("alerts"); ul.replaceChildren();
    if (!alerts.length) ul.append(el("li", { class: "note", text: "No alerts." }));
    for (const a of alerts) {
      const li = el("li", { class: `sev-${a.severity}${a.acknowledged ? " acked" : ""}`, "data-alert": a.id },
        `[${a.severity}] ${a.code}: ${a.message} (since ${time(a.since_ms)}) `);
      if (a.acknowledged) li.append(el("span", { class: "note", text: `acknowledged by ${a.acknowledged_by}` }));
      else {
        const b = el("button", { type: "button", text: "Acknowledge" });
        b.addEventListener("click", () => act({ action: "ack", alert_id: a.id }));
        li.append(b);
      }
      ul.append(li);
    }
  }
  function renderApprovals(list) {
    const ul = $("approvals"); ul.replaceChildren();
    if (!list.length) ul.append(el("li", { class: "note", text: "Nothing waits for approval." }));
    for (const a of list) {
      const li = el("li", { "data-run": a.run_id }, `${a.pipeline_id} · run ${a.run_id} · ${a.step_id}: ${a.message} `);
      for (const [label, verb] of [["Approve", "approve"], ["Deny", "deny"]]) {
        const b = el("button", { type: "button", text: label, class: verb });
        b.addEventListener("click", async () => {
          try { await api("POST", `/runs/${encodeURIComponent(a.run_id)}/${verb}`, {}); status(`${verb}d run ${a.run_id}`); }
          catch (e) { status(`${verb} failed: ${e.message}`); }
          refresh();
        });
        li.append(b);
      }
      ul.append(li);
    }
  }
  function renderRecent(runs) {
    const t = $("recent-runs"); t.replaceChildren();
    t.append(el("tr", {}, el("th", { text: "run" }), el("th", { text: "pipeline" }), el("th", { text: "status" }), el("th", { text: "updated" })));
    for (const r of runs) t.append(el("tr", { "data-run": r.id }, el("td", { text: r.id }), el("td", { text: r.pipeline_id }),
      el("td", { text: r.status, class: "status" }), el("td", { text: time(r.updated_ms) })));
  }
  function renderSnapshot(s) {
    renderHealth(s.health); renderRunsByState(s.runs_by_state); renderTimeline(s.health.features.pipelines ? s.timeline : null);
    renderAlerts(s.alerts); renderApprovals(s.approvals); renderRecent(s.recent_runs);
  }
  function status(text) { $("action-result").textContent = text; }
  function logEvent(item) {
    const ol = $("events");
    ol.prepend(el("li", { text: `${time(item.ts_ms)} ${item.type}` }));
    while (ol.children.length > 30) ol.lastChild.remove();
  }
  async function act(body) {
    try { const r = await api("POST", "/dashboard/actions", body); status(`${r.action}: ${r.outcome}${r.state ? " (" + r.state + ")" : ""}`); }
    catch (e) { status(`${body.action} refused: ${e.message}`); }
    refresh();
  }
  let pending = null;
  function refresh() {
    // Notices come in bursts (a run's steps): one re-read per burst.
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        const [h, alerts] = await Promise.all([api("GET", "/dashboard/health"), api("GET", "/dashboard/alerts")]);
        renderHealth(h); if (h.runs_by_state) renderRunsByState(h.runs_by_state); renderAlerts(alerts.alerts);
        if (h.features.pipelines) {
          const [tl, ap, runs] = await Promise.all([api("GET", "/dashboard/queue-timeline"),
            api("GET", "/approvals?status=pending"), api("GET", "/runs?limit=20")]);
          renderTimeline(tl); renderApprovals(ap.approvals); renderRecent(runs.runs);
        }
      } catch (e) { status(`refresh failed: ${e.message}`); }
    }, 150);
  }
  async function auditRecords() {
    if (!document.body.dataset.audit) return;
    try {
      const page = await api("GET", "/gateway/audit/log?limit=15");
      const ol = $("audit"); ol.replaceChildren();
      for (const r of page.records) ol.append(el("li", { text: `${time(r.ts_ms)} ${r.actor || "-"} ${r.action} ${r.target || ""} → ${r.outcome}` }));
    } catch (e) { $("audit").replaceChildren(el("li", { class: "note", text: `audit log: ${e.message}` })); }
  }
  async function widgets() {
    try {
      const w = await api("GET", "/dashboard/widgets"); const box = $("widgets"); box.replaceChildren();
      if (!w.widgets.length) box.append(el("p", { class: "note", text: "No plugin registered a widget." }));
      for (const x of w.widgets) box.append(el("section", {}, el("h3", { text: x.title }),
        el("pre", { text: x.error ? `error: ${x.error}` : JSON.stringify(x.data, null, 1) })));
    } catch (e) { /* the panel stays empty */ }
  }
  document.querySelectorAll("button[data-action]").forEach((b) =>
    b.addEventListener("click", () => act({ action: b.dataset.action })));
  const source = new EventSource("/dashboard/stream");
  const live = $("live");
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "badge live"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "badge"; });
  source.addEventListener("snapshot", (e) => renderSnapshot(JSON.parse(e.data)));
  source.addEventListener("change", (e) => { const item = JSON.parse(e.data); logEvent(item); refresh(); auditRecords(); });
  widgets();
  auditRecords();
})();
