// The ops sections that stand for other plugins' APIs: each GET panel shows its JSON as
// tables (text only), each form sends its fields to its API with the CSRF header.
"use strict";
(() => {
  const { api, el } = GW;
  function render(value) {
    if (Array.isArray(value)) {
      if (!value.length) return el("p", { class: "note", text: "(none)" });
      if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
        const keys = [...new Set(value.flatMap((v) => Object.keys(v)))].slice(0, 12);
        const table = el("table", {}, el("tr", {}, ...keys.map((k) => el("th", { text: k }))));
        for (const row of value) {
          table.append(el("tr", {}, ...keys.map((k) => el("td", {}, cell(row[k])))));
        }
        return table;
      }
      return el("span", { text: value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ") });
    }
    if (value && typeof value === "object") {
      const dl = el("dl", {});
      for (const [k, v] of Object.entries(value)) dl.append(el("dt", { text: k }), el("dd", {}, render(v)));
      return dl;
    }
    return el("span", { text: value === null ? "—" : String(value) });
  }
  function cell(v) {
    if (v && typeof v === "object") return el("code", { text: JSON.stringify(v) });
    return el("span", { text: v === undefined || v === null ? "" : String(v) });
  }
  async function load(box) {
    try { box.replaceChildren(render(await api("GET", box.dataset.apiGet))); }
    catch (e) { box.replaceChildren(el("p", { class: "error", text: `${e.status || ""} ${e.message}` })); }
  }
  document.querySelectorAll("[data-api-get]").forEach(load);
  document.querySelectorAll("form.api-form").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = form.querySelector(".api-result");
      const data = Object.fromEntries(new FormData(form).entries());
      try {
        const path = form.dataset.apiPath.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(data[k] || ""));
        const wanted = form.dataset.apiBody ? form.dataset.apiBody.split(",") : [];
        let body;
        if (wanted.includes("*")) {
          const json = form.querySelector('[data-kind="json"]');
          body = JSON.parse(json.value);
        } else if (wanted.length) {
          body = {};
          for (const k of wanted) if (data[k]) body[k] = data[k];
        } else body = {};
        const answer = await api(form.dataset.apiMethod, path, body);
        out.className = "api-result"; out.textContent = JSON.stringify(answer, null, 2);
        document.querySelectorAll("[data-api-get]").forEach(load);
      } catch (e) {
        out.className = "api-result error";
        out.textContent = e.body ? JSON.stringify(e.body, null, 2) : e.message;
      }
    });
  });
})();
