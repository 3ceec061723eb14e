// market-data-store console. Plain JavaScript, no build step, no library.
//
// Every value that comes from the API is inserted with textContent / createTextNode, never
// as HTML. The token is typed once, kept in sessionStorage (this tab only) and sent as
// "Authorization: Bearer" to the JSON API; a 401 brings the login box back. Pages poll the
// API every 1.5 s while a job they show is queued or running, every 5 s otherwise.
"use strict";

(function () {
  const TOKEN_KEY = "mds.token";
  const FAST_MS = 1500;
  const SLOW_MS = 5000;
  const NO_ROUTE = "not found: no such endpoint";
  const FINAL = ["success", "failed", "cancelled"];
  const STATUSES = ["queued", "running", "success", "failed", "cancelled"];

  class AuthError extends Error {}
  class NotOffered extends Error {}

  // -- DOM helpers ------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (["value", "checked", "disabled", "max", "type", "name", "required", "selected"].includes(key)) node[key] = value;
      else node.setAttribute(key, String(value));
    }
    append(node, ...children);
    return node;
  }

  function append(node, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en-US") : value.toLocaleString("en-US", { maximumFractionDigits: 2 });
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function seconds(doc) {
    if (typeof doc.duration_s === "number") return doc.duration_s;
    if (!doc.started_at) return null;
    const end = doc.finished_at ? new Date(doc.finished_at) : new Date();
    return Math.max(0, (end - new Date(doc.started_at)) / 1000);
  }

  function took(doc) {
    const s = seconds(doc);
    if (s === null) return "–";
    if (s < 60) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60);
    return m >= 60 ? `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m` : `${m}m ${String(Math.round(s % 60)).padStart(2, "0")}s`;
  }

  function table(columns, rows, attrs) {
    return el("table", attrs || {},
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
      el("tbody", {}, rows));
  }

  function flash(message, bad) {
    const box = document.getElementById("flash");
    box.textContent = message;
    box.className = bad ? "flash bad" : "flash";
    box.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { box.hidden = true; }, bad ? 8000 : 4000);
  }

  // -- the API ----------------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function api(method, path, body, accept) {
    const headers = { Accept: "application/json", Authorization: "Bearer " + token() };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    const text = await resp.text();
    let data = null;
    try { data = JSON.parse(text); } catch (e) { data = null; }
    if (resp.status === 401) {
      showLogin(token() ? "The store refused the token. Type it again." : "");
      throw new AuthError("unauthorized");
    }
    const error = data && typeof data.error === "string" ? data.error : `HTTP ${resp.status}`;
    if (resp.status === 405 || (resp.status === 404 && error === NO_ROUTE)) {
      throw new NotOffered(`this store does not offer ${method} ${path.split("?")[0]}`);
    }
    if (!resp.ok && !(accept || []).includes(resp.status)) throw new Error(error);
    return { status: resp.status, data };
  }

  async function get(path, accept) {
    return (await api("GET", path, undefined, accept)).data;
  }

  async function metrics() {
    const out = {};
    const resp = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
    for (const line of (await resp.text()).split("\n")) {
      const m = /^(store_workers|store_queue_depth) ([0-9.eE+-]+)$/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
    return out;
  }

  // -- jobs: status, bar, actions ---------------------------------------------------------------
  function statusBadge(status) {
    return el("span", { class: `job-status status-${status}` }, status);
  }

  function progressBar(doc) {
    const p = doc.progress && typeof doc.progress === "object" ? doc.progress : {};
    let bar = el("progress", { class: "job-progress", max: 1 });
    const parts = [];
    if (doc.status === "success") {
      bar.value = 1;
      parts.push("100%");
    } else if (typeof p.bytes_total === "number" && p.bytes_total > 0 && typeof p.bytes_read === "number") {
      bar.max = p.bytes_total;
      bar.value = Math.min(p.bytes_read, p.bytes_total);
      parts.push(Math.floor((100 * bar.value) / p.bytes_total) + "%");
    } else if (doc.status === "queued" || doc.status === "running") {
      bar.removeAttribute("value"); // indeterminate
    } else {
      bar = null; // ended without a measure of how far it got
    }
    if (typeof p.rows_read === "number") parts.push(fmt(p.rows_read) + " rows");
    if (typeof p.rate === "number" && doc.status === "running") parts.push(fmt(p.rate) + " rows/s");
    if (typeof p.phase === "string") parts.push(p.phase);
    if (typeof p.table === "string") parts.push(p.table);
    if (typeof p.slices_started === "number") parts.push(fmt(p.slices_started) + " slices");
    return el("span", { class: "bar" }, bar, el("span", { class: "label progress-label" }, parts.join(" · ")));
  }

  async function cancelJob(runId) {
    try {
      const { data } = await api("POST", `/jobs/${encodeURIComponent(runId)}/cancel`, {});
      flash(data.status === "cancelled" ? `job ${runId} cancelled` : `cancel requested: job ${runId} is stopping`);
    } catch (e) {
      if (!(e instanceof AuthError)) flash(`cancel failed: ${e.message}`, true);
    }
    poller.soon();
  }

  async function retryJob(runId) {
    try {
      const { data } = await api("POST", `/jobs/${encodeURIComponent(runId)}/retry`, {});
      flash(`retry started: run ${data.run_id}`);
      location.hash = `#/jobs/${encodeURIComponent(data.run_id)}`;
    } catch (e) {
      if (!(e instanceof AuthError)) flash(e instanceof NotOffered ? e.message : `retry failed: ${e.message}`, true);
    }
  }

  function jobActions(doc) {
    const active = !FINAL.includes(doc.status);
    return el("span", { class: "actions" },
      active ? el("button", { type: "button", class: "danger cancel", onclick: () => cancelJob(doc.run_id) }, "Cancel") : null,
      !active && doc.status !== "success"
        ? el("button", { type: "button", class: "retry", onclick: () => retryJob(doc.run_id) }, "Retry") : null);
  }

  function jobLink(runId) {
    return el("a", { href: `#/jobs/${encodeURIComponent(runId)}`, class: "mono run-link" }, runId);
  }

  function jobRows(jobs) {
    return jobs.map((doc) => el("tr", { "data-run-id": doc.run_id, class: "job-row" },
      el("td", {}, jobLink(doc.run_id)),
      el("td", {}, doc.job),
      el("td", {}, statusBadge(doc.status)),
      el("td", {}, progressBar(doc)),
      el("td", {}, when(doc.requested_at)),
      el("td", {}, took(doc)),
      el("td", { class: "error job-error" }, doc.error || ""),
      el("td", {}, jobActions(doc))));
  }

  function jobsTable(jobs) {
    if (!jobs.length) return el("p", { class: "muted" }, "No jobs.");
    return table(["run", "job", "status", "progress", "requested", "took", "error", ""], jobRows(jobs), { class: "jobs" });
  }

  const anyActive = (jobs) => jobs.some((j) => !FINAL.includes(j.status));

  // Runs started from a page: shown under its forms, with live bars.
  function runsPanel() {
    const ids = [];
    const box = el("div", { class: "runs" });
    return {
      node: box,
      add(runId) { if (!ids.includes(runId)) ids.unshift(runId); },
      async refresh() {
        if (!ids.length) return false;
        const docs = await Promise.all(ids.slice(0, 10).map((id) => get(`/jobs/${encodeURIComponent(id)}`)));
        append(clear(box), el("h2", {}, "Runs started here"), jobsTable(docs));
        return anyActive(docs);
      },
    };
  }

  async function startJob(path, body, panel) {
    try {
      const { data } = await api("POST", path, body);
      panel.add(data.run_id);
      flash(`${data.job} run ${data.run_id}${data.new === false ? " (already queued or running)" : ""}`);
      poller.soon();
      return data;
    } catch (e) {
      if (!(e instanceof AuthError)) flash(e.message, true);
      return null;
    }
  }

  // -- views ------------------------------------------------------------------------------------
  // A view builds its page once and returns refresh(): re-reads what may change and answers
  // whether something is running (poll fast) or not (poll slowly).
  const views = {};

  views.overview = async (main) => {
    const body = el("div", {});
    append(main, el("h1", {}, "Overview"), body);
    return async () => {
      const [ready, schema, gauges, failed, active] = await Promise.all([
        api("GET", "/readyz", undefined, [503]),
        get("/schema/version", [503]),
        metrics(),
        get("/jobs?status=failed&limit=5"),
        Promise.all([get("/jobs?status=running&limit=20"), get("/jobs?status=queued&limit=20")]),
      ]);
      const health = ready.data;
      const running = active[0].jobs.concat(active[1].jobs);
      append(clear(body), 
        el("div", { class: "cards" },
          stat("state", el("span", { class: `state-${health.state}`, id: "health-state" }, health.state)),
          stat("ready", ready.status === 200 ? "yes" : "no"),
          stat("schema", `${schema.version} (${(schema.pending || []).length} pending)`),
          stat("workers alive", fmt(gauges.store_workers)),
          stat("queue depth", fmt(gauges.store_queue_depth))),
        el("h2", {}, "Components"),
        table(["component", "state", "details"], health.components.map((c) => el("tr", {},
          el("td", {}, c.name),
          el("td", { class: `state-${c.state}` }, c.state),
          el("td", { class: "mono" }, Object.entries(c.details || {}).map(([k, v]) => `${k}=${v}`).join(", "))))),
        el("h2", {}, "Running and queued"),
        jobsTable(running),
        el("h2", {}, "Last failures"),
        jobsTable(failed.jobs));
      return running.length > 0;
    };
  };

  function stat(label, value) {
    return el("div", { class: "stat" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  }

  views.jobs = async (main) => {
    const status = el("select", { name: "status", id: "filter-status" }, el("option", { value: "" }, "any status"),
      STATUSES.map((s) => el("option", { value: s }, s)));
    const kind = el("input", { name: "job", id: "filter-job", placeholder: "job kind or prefix (backfill.)" });
    const limit = el("select", { name: "limit" }, [20, 50, 100, 200].map((n) => el("option", { value: String(n) }, String(n))));
    const list = el("div", { id: "jobs-list" });
    const form = el("form", { class: "inline toolbar", onsubmit: (ev) => { ev.preventDefault(); poller.soon(); } },
      status, kind, limit, el("button", { type: "submit" }, "Filter"));
    append(main, el("h1", {}, "Jobs"), form, list);
    return async () => {
      const q = new URLSearchParams({ limit: limit.value });
      if (status.value) q.set("status", status.value);
      if (kind.value.trim()) q.set("job", kind.value.trim());
      const answer = await get(`/jobs?${q}`);
      append(clear(list), jobsTable(answer.jobs));
      if (typeof answer.total === "number") list.append(el("p", { class: "muted" }, `${answer.jobs.length} of ${answer.total} jobs`));
      return anyActive(answer.jobs);
    };
  };

  views.job = async (main, runId) => {
    const body = el("div", { id: "job-detail" });
    append(main, el("p", {}, el("a", { href: "#/jobs" }, "← all jobs")), body);
    return async () => {
      const doc = await get(`/jobs/${encodeURIComponent(runId)}`);
      const facts = [
        ["run", doc.run_id], ["job", doc.job], ["requested", when(doc.requested_at)], ["started", when(doc.started_at)],
        ["finished", when(doc.finished_at)], ["took", took(doc)], ["trigger", doc.trigger], ["attempts", doc.attempts],
      ];
      for (const key of ["queue_position", "waiting_for"]) if (doc[key] !== undefined && doc[key] !== null) facts.push([key, fmt(doc[key])]);
      append(clear(body), 
        el("h1", {}, doc.job, " ", statusBadge(doc.status)),
        el("div", { class: "card" }, progressBar(doc), " ", jobActions(doc)),
        doc.error ? el("p", { class: "error", id: "job-error" }, doc.error) : null,
        el("dl", { class: "kv card" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, fmt(v))])),
        el("h2", {}, "Parameters"), el("pre", { id: "job-params" }, JSON.stringify(doc.params, null, 2)),
        el("h2", {}, "Progress"), el("pre", { id: "job-progress" }, JSON.stringify(doc.progress, null, 2)),
        el("h2", {}, "Result"), el("pre", { id: "job-result" }, JSON.stringify(doc.result, null, 2)));
      return !FINAL.includes(doc.status);
    };
  };

  views.retention = async (main) => {
    const panel = runsPanel();
    const list = el("div", { id: "policies" });
    const load = async () => {
      const answer = await get("/retention/policies");
      append(clear(list), table(["table", "retain", "enabled", "backend", "last applied", "cutoff", ""],
        answer.policies.map(policyRow)));
    };
    const policyRow = (p) => {
      const retain = el("input", { name: "retain", value: p.retain, size: 12, "aria-label": `retain ${p.table}` });
      const enabled = el("input", { type: "checkbox", name: "enabled", checked: p.enabled, "aria-label": `enabled ${p.table}` });
      const save = async (ev) => {
        ev.preventDefault();
        try {
          const { data } = await api("PUT", `/retention/policies/${encodeURIComponent(p.table)}`,
            { retain: retain.value.trim(), enabled: enabled.checked });
          flash(`${data.table}: keep ${data.retain} (${data.enabled ? "enabled" : "disabled"})`);
          await load();
        } catch (e) {
          if (!(e instanceof AuthError)) flash(e.message, true);
        }
      };
      return el("tr", { "data-table": p.table, class: "policy-row" },
        el("td", {}, p.table),
        el("td", {}, el("form", { class: "inline", onsubmit: save }, retain, el("button", { type: "submit", class: "save" }, "Save"))),
        el("td", {}, enabled),
        el("td", {}, p.backend || "–"),
        el("td", {}, when(p.last_applied_at)),
        el("td", {}, when(p.watermark)),
        el("td", {},
          el("button", { type: "button", class: "dry-run", onclick: () => startJob("/retention/apply", { table: p.table, dry_run: true }, panel) }, "Dry run"), " ",
          el("button", { type: "button", class: "apply", onclick: () => startJob("/retention/apply", { table: p.table }, panel) }, "Apply")));
    };
    append(main, el("h1", {}, "Retention"),
      el("div", { class: "toolbar" },
        el("button", { type: "button", id: "dry-run-all", onclick: () => startJob("/retention/apply", { dry_run: true }, panel) }, "Dry run, all tables"),
        el("button", { type: "button", class: "primary", id: "apply-all", onclick: () => startJob("/retention/apply", {}, panel) }, "Apply now, all tables")),
      list, panel.node);
    await load();
    return () => panel.refresh();
  };

  views.aggregates = async (main) => {
    const panel = runsPanel();
    const list = el("div", { id: "aggregates" });
    append(main, el("h1", {}, "Aggregates"),
      el("div", { class: "toolbar" },
        el("button", { type: "button", class: "primary", onclick: () => startJob("/refresh/aggregate", {}, panel) }, "Refresh all")),
      list, panel.node);
    return async () => {
      const [answer, active] = await Promise.all([get("/aggregates"), panel.refresh()]);
      append(clear(list), table(["name", "source", "bucket", "backend", "last refresh", "watermark", "pending", ""],
        answer.aggregates.map((a) => el("tr", { "data-name": a.name },
          el("td", {}, a.name), el("td", {}, a.source), el("td", {}, a.bucket_width), el("td", {}, a.backend),
          el("td", {}, when(a.last_refresh_at)), el("td", {}, when(a.watermark)), el("td", {}, fmt(a.pending_invalidations)),
          el("td", {}, el("button", { type: "button", class: "refresh", onclick: () => startJob("/refresh/aggregate", { name: a.name }, panel) }, "Refresh"))))));
      return active;
    };
  };

  function paramInput(p) {
    const attrs = { name: p.name, id: `param-${p.name}`, required: p.required };
    if (p.type === "integer") return el("input", { ...attrs, type: "number", step: 1, placeholder: p.default === null ? "" : String(p.default) });
    if (p.type === "boolean") return el("input", { ...attrs, type: "checkbox", checked: p.default === true });
    return el("input", { ...attrs, placeholder: p.default === null ? "" : String(p.default) });
  }

  function formBody(form, params) {
    const body = {};
    for (const p of params) {
      const input = form.elements.namedItem(p.name);
      if (p.type === "boolean") { if (input.checked !== (p.default === true)) body[p.name] = input.checked; continue; }
      const value = input.value.trim();
      if (value === "") continue;
      body[p.name] = p.type === "integer" ? Number(value) : value;
    }
    return body;
  }

  views.backfill = async (main) => {
    const panel = runsPanel();
    const catalogue = await get("/backfill");
    const sources = el("div", { id: "sources" });
    append(main, el("h1", {}, "Backfill"));
    for (const job of catalogue.jobs) {
      const form = el("form", { class: "stack card", "data-job": job.name });
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        startJob(`/backfill/${encodeURIComponent(job.name)}`, formBody(form, job.parameters), panel);
      });
      for (const p of job.parameters) {
        append(form, el("label", { for: `param-${p.name}` }, p.name, p.required ? " *" : ""), paramInput(p),
          el("span", { class: "hint" }, p.description));
      }
      append(form, el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, `Start ${job.job}`)));
      append(main, el("h2", {}, job.name), el("p", { class: "muted" }, job.description), form);
    }
    append(main, el("h2", {}, "Uploaded sources"), sources, panel.node);
    await loadSources(sources);
    return () => panel.refresh();
  };

  async function loadSources(box) {
    let answer;
    try {
      answer = await get("/backfill/sources");
    } catch (e) {
      if (e instanceof NotOffered) { append(clear(box), el("p", { class: "muted" }, "This store does not offer uploads.")); return; }
      throw e;
    }
    const file = el("input", { type: "file", name: "file" });
    const upload = async (ev) => {
      ev.preventDefault();
      const chosen = file.files[0];
      if (!chosen) return;
      const resp = await fetch(`/backfill/sources/${encodeURIComponent(chosen.name)}`, {
        method: "PUT", body: chosen, credentials: "omit",
        headers: { Authorization: "Bearer " + token(), "Content-Type": "application/octet-stream" },
      });
      const data = await resp.json().catch(() => ({}));
      if (resp.status === 401) { showLogin("The store refused the token. Type it again."); return; }
      flash(resp.ok ? `uploaded ${chosen.name}` : `upload failed: ${data.error || resp.status}`, !resp.ok);
      await loadSources(box);
    };
    const list = answer.sources || [];
    append(clear(box), 
      list.length ? table(["name", "bytes", "when"], list.map((s) => el("tr", {},
        el("td", { class: "mono" }, s.name), el("td", {}, fmt(s.size)), el("td", {}, when(s.uploaded_at || s.modified_at)))))
        : el("p", { class: "muted" }, "No uploaded sources."),
      el("form", { class: "inline toolbar", onsubmit: upload }, file, el("button", { type: "submit" }, "Upload")));
  }

  views.drift = async (main) => {
    const panel = runsPanel();
    const body = el("div", { id: "drift" });
    append(main, el("h1", {}, "Schema drift"),
      el("div", { class: "toolbar" },
        el("button", { type: "button", class: "primary", id: "drift-check", onclick: () => startJob("/drift/check", {}, panel) }, "Check now")),
      body, panel.node);
    return async () => {
      const [d, active] = await Promise.all([get("/drift"), panel.refresh()]);
      const reach = d.registry_reachable === null ? "unknown" : d.registry_reachable ? "reachable" : "unreachable";
      append(clear(body), 
        el("p", {}, `track ${d.track} · last check ${when(d.checked_at)} · registry ${reach}`),
        d.error ? el("p", { class: "error" }, d.error) : null,
        table(["schema", "status", "drift", "local", "registry", "last drift"], d.schemas.map((s) => el("tr", {},
          el("td", {}, s.schema), el("td", {}, s.status), el("td", {}, s.drift_type || "–"),
          el("td", {}, s.local_version || "–"), el("td", {}, s.registry_version || "–"), el("td", {}, when(s.last_drift_at))))));
      return active;
    };
  };

  views.schedules = async (main) => {
    const panel = runsPanel();
    const list = el("div", { id: "schedules" });
    append(main, el("h1", {}, "Schedules"), list, panel.node);
    const load = async () => {
      let answer;
      try {
        answer = await get("/schedules");
      } catch (e) {
        if (e instanceof NotOffered) { append(clear(list), el("p", { class: "muted", id: "not-offered" }, "This store does not offer schedules.")); return; }
        throw e;
      }
      append(clear(list), table(["name", "job", "every", "state", "last run", "next run", ""], answer.schedules.map((s) => {
        const every = el("input", { name: "every", value: s.every || "", size: 12 });
        const change = async (body) => {
          try {
            await api("PUT", `/schedules/${encodeURIComponent(s.name)}`, body);
            await load();
          } catch (e) {
            if (!(e instanceof AuthError)) flash(e.message, true);
          }
        };
        return el("tr", { "data-name": s.name },
          el("td", {}, s.name), el("td", {}, s.job),
          el("td", {}, el("form", { class: "inline", onsubmit: (ev) => { ev.preventDefault(); change({ every: every.value.trim() }); } },
            every, el("button", { type: "submit" }, "Save"))),
          el("td", { class: "schedule-state" }, s.paused ? "paused" : "active"),
          el("td", {}, s.last_status ? [statusBadge(s.last_status), " ", when(s.last_started_at)] : "–"),
          el("td", {}, when(s.next_run_at)),
          el("td", {},
            el("button", { type: "button", class: "pause", onclick: () => change({ paused: !s.paused }) }, s.paused ? "Resume" : "Pause"), " ",
            el("button", { type: "button", onclick: () => startJob(`/schedules/${encodeURIComponent(s.name)}/run`, {}, panel) }, "Run now")));
      })));
    };
    await load();
    return () => panel.refresh();
  };

  // -- polling and routing ----------------------------------------------------------------------
  const poller = {
    generation: 0,
    refresh: null,
    timer: null,
    start(refresh) {
      this.generation += 1;
      this.refresh = refresh;
      this.soon();
    },
    soon() {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.tick(this.generation), 0);
    },
    async tick(generation) {
      if (generation !== this.generation || !this.refresh) return;
      let active = false;
      try {
        active = await this.refresh();
      } catch (e) {
        if (e instanceof AuthError) return; // the login box is up; polling resumes after sign-in
        if (generation === this.generation) flash(e.message, true);
      }
      if (generation !== this.generation) return;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.tick(generation), active ? FAST_MS : SLOW_MS);
    },
    stop() {
      this.generation += 1;
      clearTimeout(this.timer);
    },
  };

  async function route() {
    if (!token()) { showLogin(""); return; }
    const hash = location.hash.replace(/^#\/?/, "") || "overview";
    const [name, arg] = hash.split("/");
    const view = name === "jobs" && arg ? views.job : views[name] || views.overview;
    const main = clear(document.getElementById("main"));
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("current", a.dataset.view === (views[name] ? name : "overview"));
    poller.stop();
    try {
      const refresh = await view(main, arg ? decodeURIComponent(arg) : undefined);
      poller.start(refresh);
    } catch (e) {
      if (!(e instanceof AuthError)) append(main, el("p", { class: "error" }, e.message));
    }
  }

  function showLogin(message) {
    poller.stop();
    document.getElementById("main").hidden = true;
    document.getElementById("nav").hidden = true;
    document.getElementById("logout").hidden = true;
    document.getElementById("login").hidden = false;
    document.getElementById("login-error").textContent = message || "";
    document.getElementById("token").focus();
  }

  function showApp() {
    document.getElementById("login").hidden = true;
    document.getElementById("main").hidden = false;
    document.getElementById("nav").hidden = false;
    document.getElementById("logout").hidden = false;
  }

  async function signIn(ev) {
    ev.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    try {
      await get("/jobs?limit=1");
    } catch (e) {
      if (!(e instanceof AuthError)) document.getElementById("login-error").textContent = e.message;
      return;
    }
    showApp();
    route();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("Signed out.");
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("login-form").addEventListener("submit", signIn);
    document.getElementById("logout").addEventListener("click", signOut);
    window.addEventListener("hashchange", () => { if (token()) route(); });
    if (token()) { showApp(); route(); } else showLogin("");
  });
})();
