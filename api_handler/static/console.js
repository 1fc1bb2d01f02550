// The pijobs customer console: plain JS over the API's own JSON (GET /functions, GET/POST/DELETE /jobs,
// POST/GET /uploads, the /webhooks calls). Rules kept throughout: the API key lives in sessionStorage only
// and goes out only as the x-api-key header of a same-origin request (never in a URL, never logged; a
// file's presigned POST to the bucket carries no key); nothing the API returns is parsed as HTML (all text
// goes in through textContent); the page has no dependency outside this file and its CSS.
"use strict";
(() => {
  const KEY_STORE = "pijobs.apiKey";
  const BASE = location.pathname.replace(/\/console\/?$/, ""); // the API's root (a stage prefix on AWS)
  const PAGE_SIZE = 20;
  const POLL_FIRST_MS = 1000;
  const POLL_MAX_MS = 15000;
  const $ = (id) => document.getElementById(id);

  // ---- small DOM helpers (text only) --------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }
  const setText = (id, text) => { $(id).textContent = text === null || text === undefined ? "" : String(text); };

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" }).format(date);
  }
  function seconds(fromIso, toIso) {
    if (!fromIso) return null;
    const from = Date.parse(fromIso);
    const to = toIso ? Date.parse(toIso) : Date.now();
    return Number.isNaN(from) || Number.isNaN(to) ? null : Math.max(0, (to - from) / 1000);
  }
  function formatDuration(s) {
    if (s === null) return "";
    if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }
  function formatBytes(n) {
    if (typeof n !== "number") return "";
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = n;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
    const short = unit === 0 ? `${n} bytes` : `${value.toFixed(1)} ${units[unit]}`;
    return unit === 0 ? short : `${short} (${n.toLocaleString("en-US")} bytes)`;
  }
  const display = (value) => (typeof value === "string" ? value : JSON.stringify(value));
  function clip(text, max) {
    const chars = Array.from(text);
    return chars.length > max ? `${chars.slice(0, max - 1).join("")}…` : text;
  }
  function paramsSummary(params) {
    const parts = Object.entries(params || {}).map(([k, v]) => `${k}=${clip(display(v), 40)}`);
    return clip(parts.join(", "), 90);
  }
  function isWebLink(url) { // only http(s) links are followed (never javascript: or data:)
    try { return /^https?:$/.test(new URL(url, location.href).protocol); } catch (exc) { return false; }
  }
  const isLive = (job) => !job.finished_at; // the API sets finished_at exactly when a job ends
  const percent = (job) => (job.status === "SUCCEEDED" ? 100 : Math.round((job.progress || 0) * 100));

  // ---- the API --------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, envelope) {
      const error = (envelope && envelope.error) || {};
      super(error.message || `the API answered ${status}`);
      this.status = status;
      this.code = error.code || "http_" + status;
      this.details = Array.isArray(error.details) ? error.details.filter((d) => d && d.field) : [];
    }
  }

  async function api(method, path, body, key) {
    const headers = { Accept: "application/json" };
    const apiKey = key || sessionStorage.getItem(KEY_STORE);
    if (apiKey) headers["x-api-key"] = apiKey;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(BASE + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer",
      });
    } catch (exc) {
      throw new ApiError(0, { error: { code: "network", message: "the API cannot be reached; try again" } });
    }
    let data = null;
    try { data = await response.json(); } catch (exc) { data = null; }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      if (response.status === 403 && !key && sessionStorage.getItem(KEY_STORE)) signOut("Your API key was refused; sign in again.");
      throw error;
    }
    return data;
  }
  const query = (params) => {
    const pairs = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
    return pairs.length ? "?" + new URLSearchParams(pairs).toString() : "";
  };

  // ---- polling with backoff ---------------------------------------------------------------------------
  // While something shown is still running, the view asks again: after 1 s, then 1.6x longer each time
  // nothing changed (up to 15 s), back to 1 s when something did; never while the tab is hidden.
  const poller = {
    timer: null, delay: POLL_FIRST_MS, refresh: null,
    start(refresh) { this.stop(); this.refresh = refresh; this.delay = POLL_FIRST_MS; },
    next(live, changed) {
      clearTimeout(this.timer);
      if (!live || !this.refresh) return;
      this.delay = changed ? POLL_FIRST_MS : Math.min(POLL_MAX_MS, Math.round(this.delay * 1.6));
      const refresh = this.refresh;
      this.timer = setTimeout(() => { if (!document.hidden && this.refresh === refresh) refresh(); }, this.delay);
    },
    stop() { clearTimeout(this.timer); this.timer = null; this.refresh = null; },
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && poller.refresh) poller.refresh();
  });

  // ---- state shared by the views ----------------------------------------------------------------------
  const state = {
    functions: null, // GET /functions
    document: null, // GET /openapi.json: the job states and the labels' schemas, as the API declares them
    filters: { status: "", function: "", name_contains: "" },
    tokens: [null], // tokens[i]: the `next` that reads page i
    page: 0,
    prefill: null, // a job to submit again
    keepNotice: false,
  };

  async function loadFunctions() {
    if (!state.functions) state.functions = (await api("GET", "/functions")).functions || [];
    return state.functions;
  }
  async function loadDocument() {
    if (!state.document) {
      try { state.document = await api("GET", "/openapi.json"); } catch (exc) { state.document = {}; }
    }
    return state.document;
  }
  function jobStates(doc) {
    const schema = ((doc.components || {}).schemas || {}).JobStatus || {};
    return Array.isArray(schema.enum) ? schema.enum : [];
  }
  function labelSchemas(doc) {
    try {
      const choices = doc.paths["/jobs"].post.requestBody.content["application/json"].schema.oneOf;
      const named = choices.find((c) => c.properties && c.properties.function);
      return { name: named.properties.name || {}, cost_center: named.properties.cost_center || {} };
    } catch (exc) {
      return { name: {}, cost_center: {} };
    }
  }

  // ---- navigation -------------------------------------------------------------------------------------
  const VIEWS = ["signin", "jobs", "detail", "submit", "webhooks", "webhook"];
  function show(view, focus) {
    for (const name of VIEWS) $("view-" + name).hidden = name !== view;
    $("nav").hidden = view === "signin";
    for (const [id, current] of [["nav-jobs", "jobs"], ["nav-submit", "submit"], ["nav-webhooks", "webhooks"]]) {
      if (view === current) $(id).setAttribute("aria-current", "page");
      else $(id).removeAttribute("aria-current");
    }
    focusOn(focus || document.querySelector(`#view-${view} h1`));
  }
  function focusOn(target) { // a heading or message takes the focus too, so a screen reader reads it
    if (!target) return;
    if (!/^(INPUT|SELECT|TEXTAREA|BUTTON|A)$/.test(target.tagName)) target.tabIndex = -1;
    target.focus();
  }
  function notify(text, { untilNextView = false } = {}) {
    setText("notice", text);
    $("notice").hidden = !text;
    state.keepNotice = untilNextView; // shown on the view it leads to, gone after that
  }

  function route() {
    poller.stop();
    if (state.keepNotice) state.keepNotice = false;
    else notify("");
    forgetSecret(); // shown once: gone as soon as the view changes
    if (!sessionStorage.getItem(KEY_STORE)) { showSignIn(); return; }
    const hash = location.hash.replace(/^#/, "");
    const detail = hash.match(/^\/jobs\/([a-f0-9]{32})$/);
    const hook = hash.match(/^\/webhooks\/([^/]+)$/); // the API says which ids exist (404 otherwise)
    if (detail) openDetail(detail[1]);
    else if (hash === "/submit") openSubmit();
    else if (hash === "/webhooks") openWebhooks();
    else if (hook) openWebhook(decodeURIComponent(hook[1]));
    else openJobs();
  }
  function go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  // ---- sign in ----------------------------------------------------------------------------------------
  function showSignIn(message) {
    document.title = "Sign in · pijobs console";
    setText("signin-error", message || "");
    show("signin", $("api-key"));
  }
  function signOut(message) {
    sessionStorage.removeItem(KEY_STORE);
    Object.assign(state, {
      functions: null, tokens: [null], page: 0, prefill: null,
      filters: { status: "", function: "", name_contains: "" },
    });
    poller.stop();
    notify("");
    forgetSecret();
    showSignIn(message);
  }
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    setText("signin-error", "");
    input.removeAttribute("aria-invalid");
    if (!key) {
      input.setAttribute("aria-invalid", "true");
      setText("signin-error", "Enter your API key.");
      input.focus();
      return;
    }
    try {
      const catalog = await api("GET", "/functions", undefined, key);
      sessionStorage.setItem(KEY_STORE, key);
      state.functions = catalog.functions || [];
      input.value = "";
      route(); // where the address pointed (a job's link, say), else the jobs
    } catch (exc) {
      input.setAttribute("aria-invalid", "true");
      setText("signin-error", exc.status === 403
        ? "That API key was refused (403). Check it and try again."
        : `Could not sign in: ${exc.message}`);
      input.focus();
    }
  });
  $("sign-out").addEventListener("click", () => { signOut(""); history.replaceState(null, "", "#/jobs"); });

  // ---- jobs -------------------------------------------------------------------------------------------
  async function openJobs() {
    document.title = "Jobs · pijobs console";
    show("jobs");
    await fillFilters();
    if ($("view-jobs").hidden) return; // left meanwhile (a job's link): its view polls, not this one
    poller.start(() => loadJobs(false));
    await loadJobs(true);
  }

  async function fillFilters() {
    const status = $("filter-status");
    if (status.options.length <= 1) {
      for (const name of jobStates(await loadDocument())) status.append(el("option", { value: name, text: name }));
    }
    const fn = $("filter-function");
    if (fn.options.length <= 1) {
      try {
        for (const f of await loadFunctions()) fn.append(el("option", { value: f.name, text: f.name }));
      } catch (exc) { /* the list still works without the choice */ }
    }
    status.value = state.filters.status;
    fn.value = state.filters.function;
    $("filter-name").value = state.filters.name_contains;
  }

  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.filters = {
      status: $("filter-status").value,
      function: $("filter-function").value,
      name_contains: $("filter-name").value.trim(),
    };
    state.tokens = [null];
    state.page = 0;
    poller.start(() => loadJobs(false));
    loadJobs(true);
  });
  $("page-older").addEventListener("click", () => { state.page += 1; loadJobs(true); });
  $("page-newer").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); loadJobs(true); });

  let shownRows = "";
  async function loadJobs(fresh) {
    const view = $("view-jobs");
    if (view.hidden) return;
    let page;
    try {
      page = await api("GET", "/jobs" + query({ limit: PAGE_SIZE, next: state.tokens[state.page], ...state.filters }));
    } catch (exc) {
      if (exc.status === 403) return;
      setText("jobs-error", `Could not load the jobs: ${exc.message}`);
      poller.next(true, false);
      return;
    }
    if (view.hidden) return;
    setText("jobs-error", "");
    state.tokens[state.page + 1] = page.next || null;
    state.tokens.length = state.page + 2;
    $("page-older").disabled = !page.next;
    $("page-newer").disabled = state.page === 0;
    setText("page-label", `Page ${state.page + 1}`);
    const jobs = page.jobs || [];
    const signature = jobs.map((j) => `${j.job_id}:${j.status}:${j.progress}`).join(",");
    if (fresh || signature !== shownRows) renderRows(jobs);
    else updateDurations(jobs);
    const changed = signature !== shownRows;
    shownRows = signature;
    $("jobs-empty").hidden = jobs.length > 0;
    // A filter is applied to a bounded number of jobs per page, so a page can be empty with older ones
    // still to read.
    setText("jobs-empty", page.next ? "None of the jobs read so far match; older ones may: Older →" : "No jobs match.");
    poller.next(jobs.some(isLive), changed);
  }

  function progressCell(job) {
    const cell = el("td", { "data-label": "Progress" });
    if (job.status !== "SUCCEEDED" && !isLive(job)) { cell.append("—"); return cell; }
    const bar = el("progress", { max: 100, "aria-label": `Progress of ${job.name || job.job_id}` });
    if (job.status === "SUCCEEDED" || typeof job.progress === "number") bar.value = percent(job);
    const label = el("span", { className: "pct", text: bar.hasAttribute("value") ? `${percent(job)} %` : "waiting" });
    cell.append(el("span", { className: "bar" }, bar, " ", label));
    return cell;
  }

  function renderRows(jobs) {
    const body = $("jobs-body");
    const focused = document.activeElement && body.contains(document.activeElement)
      ? document.activeElement.getAttribute("data-job-id") : null;
    const rows = jobs.map((job) => {
      const link = el("a", { href: `#/jobs/${job.job_id}`, "data-job-id": job.job_id, text: job.name || `Job ${job.job_id.slice(0, 8)}` });
      return el("tr", { "data-job-id": job.job_id, "data-status": job.status },
        el("td", { "data-label": "Job" }, link, el("br"), el("span", { className: "muted mono", text: job.job_id.slice(0, 12) })),
        el("td", { "data-label": "Status" }, el("span", { className: `badge ${job.status}`, text: job.status })),
        el("td", { "data-label": "Function", text: job.function }),
        el("td", { "data-label": "Parameters", className: "params mono", title: paramsSummary(job.params), text: paramsSummary(job.params) }),
        el("td", { "data-label": "Created" }, el("time", { datetime: job.created_at, text: formatTime(job.created_at) })),
        el("td", { "data-label": "Duration", className: "duration", text: formatDuration(seconds(job.created_at, job.finished_at)) }),
        progressCell(job));
    });
    body.replaceChildren(...rows);
    if (focused) {
      const again = body.querySelector(`a[data-job-id="${focused}"]`);
      if (again) again.focus();
    }
  }
  function updateDurations(jobs) {
    for (const job of jobs) {
      const cell = document.querySelector(`#jobs-body tr[data-job-id="${job.job_id}"] .duration`);
      if (cell) cell.textContent = formatDuration(seconds(job.created_at, job.finished_at));
    }
  }

  // ---- one job ------------------------------------------------------------------------------------------
  let currentJob = null;
  async function openDetail(jobId) {
    document.title = "Job · pijobs console";
    currentJob = null;
    for (const id of ["detail-title", "detail-status", "detail-id", "detail-error", "detail-attempts"]) setText(id, "");
    for (const id of ["detail-timeline", "detail-history", "detail-params", "detail-result"]) $(id).replaceChildren();
    for (const id of ["detail-download", "detail-cancel", "detail-progress", "detail-result-card", "history-title"]) $(id).hidden = true;
    show("detail");
    poller.start(() => loadDetail(jobId));
    await loadDetail(jobId);
    focusOn($("detail-title"));
  }

  async function loadDetail(jobId) {
    if ($("view-detail").hidden) return;
    let job;
    try {
      job = await api("GET", `/jobs/${jobId}`);
    } catch (exc) {
      if (exc.status === 403) return;
      setText("detail-error", exc.status === 404 ? "No such job (or not one of yours)." : `Could not load the job: ${exc.message}`);
      if (exc.status !== 404) poller.next(true, false);
      return;
    }
    if ($("view-detail").hidden) return;
    const before = currentJob ? `${currentJob.status}:${currentJob.progress}` : "";
    currentJob = job;
    renderDetail(job);
    poller.next(isLive(job), before !== `${job.status}:${job.progress}`);
  }

  function renderDetail(job) {
    const title = job.name || `Job ${job.job_id.slice(0, 8)}`;
    document.title = `${title} · pijobs console`;
    setText("detail-title", title);
    setText("detail-status", job.status);
    $("detail-status").className = `badge ${job.status}`;
    setText("detail-id", `${job.job_id} · ${job.function}${job.version ? " v" + job.version : ""}`);
    setText("detail-error", "");
    $("detail-cancel").hidden = !isLive(job);

    const download = $("detail-download");
    const url = job.result && job.result.url;
    if (url && isWebLink(url)) {
      download.href = url;
      download.setAttribute("download", job.result.filename || "");
      download.hidden = false;
    } else {
      download.hidden = true;
      download.removeAttribute("href");
    }

    const live = isLive(job);
    $("detail-progress").hidden = !(live || job.status === "SUCCEEDED");
    const bar = $("detail-progressbar");
    if (job.status === "SUCCEEDED" || typeof job.progress === "number") bar.value = percent(job);
    else bar.removeAttribute("value");
    const eta = etaText(job);
    setText("detail-progress-label", bar.hasAttribute("value") ? `${percent(job)} %${eta ? ` · ${eta}` : ""}` : `${job.status.toLowerCase()}…`);
    renderFailure(job);

    renderTimeline(job);
    const params = $("detail-params");
    params.replaceChildren(...Object.entries(job.params || {}).flatMap(([k, v]) => [el("dt", { text: k }),
      k === "inputs" && v && typeof v === "object" ? inputsList(v) : el("dd", { className: "mono", text: display(v) })]));
    if (job.cost_center) params.append(el("dt", { text: "cost center" }), el("dd", { text: job.cost_center }));

    $("detail-result-card").hidden = !job.result;
    if (!job.result) renderColumns(null);
    if (job.result) {
      const r = job.result;
      const pairs = [["file", r.filename], ["size", formatBytes(r.bytes)], ["sha256", r.sha256], ["type", r.content_type]];
      const metadata = { ...(r.metadata || {}) };
      const columns = Array.isArray(metadata.columns) ? metadata.columns : null;
      delete metadata.columns;
      if (typeof metadata.rows === "number") { pairs.push(["rows", metadata.rows.toLocaleString()]); delete metadata.rows; }
      for (const [k, v] of Object.entries(metadata)) pairs.push([k, display(v)]);
      renderColumns(columns);
      pairs.push(["kept until", r.expires_at ? formatTime(r.expires_at) : ""]);
      if (!r.url) pairs.push(["download", "expired: submit the job again"]);
      $("detail-result").replaceChildren(...pairs.filter(([, v]) => v !== "").flatMap(([k, v]) => [
        el("dt", { text: k }), el("dd", { className: k === "sha256" ? "mono" : null, "data-key": k, text: v })]));
    }
  }

  // A running job's expected finish, from its own rate so far (the API's estimated_finish_at).
  function etaText(job) {
    if (job.status !== "RUNNING" || !job.estimated_finish_at) return "";
    const left = Math.max(0, Math.round((Date.parse(job.estimated_finish_at) - Date.now()) / 1000));
    return `about ${formatDuration(left)} left (done by ${formatTime(job.estimated_finish_at)})`;
  }

  const FAILURE_TITLES = {
    FAILED: "This job failed",
    TIMED_OUT: "This job ran out of time",
    CANCELLED: "This job was cancelled",
  };

  // Why a job ended without a result, first thing on the page, in the words the API gave.
  function renderFailure(job) {
    const box = $("detail-failure");
    box.hidden = !job.error;
    if (!job.error) return;
    setText("detail-failure-title", FAILURE_TITLES[job.status] || "This job did not finish");
    setText("detail-failure-message", job.error.message || "");
    setText("detail-failure-code", `Error code: ${job.error.code}`);
  }

  // A job's input files by name: the file name and size of each upload (its id while they load, or once
  // the upload has expired).
  const uploadLookups = new Map(); // upload id -> its GET /uploads/{id}, once per page
  function inputsList(inputs) {
    const list = el("ul", { className: "inputs-list" });
    for (const [name, uploadId] of Object.entries(inputs)) {
      const item = el("li", {}, el("strong", { text: name }), ": ", el("span", { className: "mono", text: String(uploadId) }));
      list.append(item);
      if (!uploadLookups.has(uploadId)) uploadLookups.set(uploadId, api("GET", `/uploads/${encodeURIComponent(uploadId)}`));
      uploadLookups.get(uploadId).then((upload) => {
        item.replaceChildren(el("strong", { text: name }), `: ${upload.filename || uploadId} (${formatBytes(upload.bytes)})`);
        item.title = String(uploadId);
      }).catch(() => { /* expired or gone: the id stays */ });
    }
    return el("dd", {}, list);
  }

  // A table result's columns (sql's metadata.columns: [{name, type}]) as a table, not JSON.
  function renderColumns(columns) {
    const table = $("detail-columns");
    table.hidden = !columns || columns.length === 0;
    const body = table.querySelector("tbody");
    if (table.hidden) { body.replaceChildren(); return; }
    setText("detail-columns-caption", `${columns.length} column${columns.length === 1 ? "" : "s"}`);
    body.replaceChildren(...columns.map((c) => el("tr", {}, el("td", { className: "mono", text: String(c.name) }), el("td", { text: String(c.type) }))));
  }

  function renderTimeline(job) {
    const phases = [
      ["Queued", job.created_at, job.dispatched_at || (job.status === "QUEUED" ? null : job.finished_at)],
      ["Provisioning", job.dispatched_at, job.started_at || (job.status === "PROVISIONING" ? null : job.finished_at)],
      ["Running", job.started_at, job.finished_at],
    ];
    const items = phases.map(([label, from, to]) => {
      if (!from) return el("li", { className: "pending", text: `${label}: ${isLive(job) ? "not yet" : "skipped"}` });
      const took = formatDuration(seconds(from, to));
      const text = to ? `${label}: ${took}` : `${label}: ${took} so far`;
      return el("li", {}, text, " ", el("span", { className: "muted", text: `(from ${formatTime(from)})` }));
    });
    if (job.finished_at) {
      items.push(el("li", {}, `${job.status} at ${formatTime(job.finished_at)}`, " ",
        el("span", { className: "muted", text: `(${formatDuration(seconds(job.created_at, job.finished_at))} in all)` })));
    }
    $("detail-timeline").replaceChildren(...items);
    setText("detail-attempts", `Attempts: ${job.attempts}`);
    const history = job.history || [];
    $("history-title").hidden = history.length === 0;
    $("detail-history").replaceChildren(...history.map((h) =>
      el("li", {}, `Attempt ${h.attempt}: `, el("code", { text: h.code }), ` — ${h.message} `, el("span", { className: "muted", text: `(${formatTime(h.at)})` }))));
  }

  const dialog = $("confirm-cancel");
  $("detail-cancel").addEventListener("click", () => { if (currentJob) dialog.showModal(); });
  $("confirm-no").addEventListener("click", () => dialog.close("keep"));
  $("confirm-yes").addEventListener("click", async () => {
    dialog.close("cancel");
    const job = currentJob;
    if (!job) return;
    try {
      await api("DELETE", `/jobs/${job.job_id}`);
      notify("The job was cancelled.");
    } catch (exc) {
      if (exc.status !== 403) setText("detail-error", `Could not cancel: ${exc.message}`);
    }
    poller.start(() => loadDetail(job.job_id));
    await loadDetail(job.job_id);
    focusOn($("detail-title"));
  });
  $("detail-resubmit").addEventListener("click", () => {
    if (!currentJob) return;
    const { function: fn, params, name, cost_center: costCenter } = currentJob;
    state.prefill = { function: fn, params, name, cost_center: costCenter };
    go("#/submit");
  });

  // ---- submit: a form from each function's JSON Schema ------------------------------------------------
  function resolve(schema, root) {
    let s = schema || {};
    for (let i = 0; i < 8 && s.$ref; i += 1) {
      const name = s.$ref.replace(/^#\/(\$defs|definitions)\//, "");
      s = ((root.$defs || root.definitions || {})[name]) || {};
    }
    const options = s.anyOf || s.oneOf;
    if (Array.isArray(options)) { // an optional field: its schema without the null branch
      const real = options.filter((o) => o.type !== "null");
      if (real.length === 1) return { ...real[0], ...Object.fromEntries(Object.entries(s).filter(([k]) => !["anyOf", "oneOf"].includes(k))) };
    }
    return s;
  }

  const fields = []; // {path, input, error, schema, required, kind}

  function fieldFor(path, name, schema, required, value, container) {
    if (path === "params.inputs" && schema.type === "object") { inputsField(path, schema, required, value, container); return; }
    const id = "field-" + path.replace(/[^A-Za-z0-9_-]/g, "-");
    const hintId = id + "-hint";
    const errorId = id + "-error";
    let kind;
    let input;
    if (Array.isArray(schema.enum)) {
      kind = "enum";
      input = el("select", { id });
      if (!required) input.append(el("option", { value: "", text: "—" }));
      for (const option of schema.enum) input.append(el("option", { value: JSON.stringify(option), text: display(option) }));
    } else if (schema.type === "boolean") {
      kind = "boolean";
      input = el("input", { id, type: "checkbox" });
    } else if (schema.type === "integer" || schema.type === "number") {
      kind = schema.type;
      input = el("input", { id, type: "text", inputmode: schema.type === "integer" ? "numeric" : "decimal", autocomplete: "off" });
    } else if (schema.type === "object" || schema.type === "array") {
      kind = "json";
      input = el("textarea", { id, rows: 3, spellcheck: "false", className: "mono" });
    } else {
      kind = "string";
      const long = schema.maxLength === undefined ? !schema.pattern : schema.maxLength > 200;
      input = long ? el("textarea", { id, rows: 4 }) : el("input", { id, type: "text", autocomplete: "off" });
    }
    const label = el("label", { for: id, text: (schema.title || name) + (required ? " (required)" : "") });
    const hintText = [schema.description, bounds(schema)].filter(Boolean).join(" · ");
    const hint = el("p", { id: hintId, className: "hint", text: hintText });
    const error = el("p", { id: errorId, className: "error" });
    input.setAttribute("aria-describedby", `${hintId} ${errorId}`);
    input.dataset.path = path;
    if (required && kind !== "boolean") input.setAttribute("aria-required", "true");
    if (Array.isArray(schema.examples) && schema.examples.length && kind !== "boolean" && kind !== "enum") {
      input.setAttribute("placeholder", `e.g. ${display(schema.examples[0])}`);
    }
    const initial = value !== undefined ? value : schema.default;
    if (initial !== undefined && initial !== null) {
      if (kind === "boolean") input.checked = Boolean(initial);
      else if (kind === "enum") input.value = JSON.stringify(initial);
      else if (kind === "json") input.value = JSON.stringify(initial);
      else input.value = String(initial);
    }
    const box = el("div", { className: kind === "boolean" ? "field check" : "field" });
    if (kind === "boolean") box.append(input, label, hint, error);
    else box.append(label, input, hint, error);
    container.append(box);
    fields.push({ path, input, error, schema, required, kind });
  }

  function bounds(schema) {
    const n = (v) => Number(v).toLocaleString("en-US");
    const parts = [];
    if (schema.minimum !== undefined && schema.maximum !== undefined) parts.push(`${n(schema.minimum)} to ${n(schema.maximum)}`);
    else if (schema.minimum !== undefined) parts.push(`at least ${n(schema.minimum)}`);
    else if (schema.maximum !== undefined) parts.push(`at most ${n(schema.maximum)}`);
    if (schema.maxLength !== undefined) parts.push(`up to ${n(schema.maxLength)} characters`);
    return parts.join(", ");
  }

  // The schema's own rules, worded like the API's problems; the API has the last word (and its limits,
  // such as a deployment's maximum digits, come back as field errors).
  function check(field) {
    const { input, schema, required, kind } = field;
    if (kind === "boolean") return { value: input.checked };
    if (kind === "inputs") return checkInputs(field);
    const raw = input.value;
    if (raw.trim() === "") return required ? { problem: "Field required" } : { skip: true };
    let value = raw;
    if (kind === "enum") return { value: JSON.parse(raw) };
    if (kind === "integer" || kind === "number") {
      const text = raw.trim();
      if (kind === "integer" && !/^-?[0-9]+$/.test(text)) return { problem: "must be a whole number" };
      if (kind === "number" && (!/^-?[0-9.eE+-]+$/.test(text) || !Number.isFinite(Number(text)))) return { problem: "must be a number" };
      value = Number(text);
      const n = (v) => Number(v).toLocaleString("en-US");
      if (schema.minimum !== undefined && value < schema.minimum) return { problem: `must be at least ${n(schema.minimum)}` };
      if (schema.maximum !== undefined && value > schema.maximum) return { problem: `must be at most ${n(schema.maximum)}` };
      if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) return { problem: `must be greater than ${n(schema.exclusiveMinimum)}` };
      if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) return { problem: `must be less than ${n(schema.exclusiveMaximum)}` };
      return { value };
    }
    if (kind === "json") {
      try { value = JSON.parse(raw); } catch (exc) { return { problem: "must be JSON" }; }
      const isObject = value !== null && typeof value === "object" && !Array.isArray(value);
      if (schema.type === "object" && !isObject) return { problem: "must be a JSON object" };
      if (schema.type === "array" && !Array.isArray(value)) return { problem: "must be a JSON list" };
      const count = isObject ? Object.keys(value).length : value.length;
      if (schema.minProperties !== undefined && count < schema.minProperties) return { problem: `must have at least ${schema.minProperties} entries` };
      if (schema.maxProperties !== undefined && count > schema.maxProperties) return { problem: `must have at most ${schema.maxProperties} entries` };
      return { value };
    }
    const length = Array.from(value).length;
    if (schema.minLength !== undefined && length < schema.minLength) return { problem: `must have at least ${schema.minLength} characters` };
    if (schema.maxLength !== undefined && length > schema.maxLength) return { problem: `must have at most ${schema.maxLength} characters` };
    if (schema.pattern) {
      let pattern = null;
      try { pattern = new RegExp(schema.pattern, "u"); } catch (exc) { pattern = null; } // the API checks it
      if (pattern && !pattern.test(value)) return { problem: `does not have the expected form` };
    }
    return { value };
  }

  function showProblem(field, problem) {
    field.error.textContent = problem;
    field.input.setAttribute("aria-invalid", "true");
  }
  function clearProblems() {
    for (const f of fields) {
      f.error.textContent = "";
      f.input.removeAttribute("aria-invalid");
      for (const row of f.rows || []) showRowProblem(row, "");
    }
    setText("submit-error", "");
  }

  async function openSubmit() {
    document.title = "New job · pijobs console";
    show("submit");
    let functions;
    try {
      [functions] = await Promise.all([loadFunctions(), loadDocument()]);
    } catch (exc) {
      if (exc.status !== 403) setText("submit-error", `Could not load the functions: ${exc.message}`);
      return;
    }
    const select = $("submit-function");
    select.replaceChildren(...functions.map((f) => el("option", { value: f.name, text: `${f.title} (${f.name})` })));
    const prefill = state.prefill;
    state.prefill = null;
    if (prefill && functions.some((f) => f.name === prefill.function)) select.value = prefill.function;
    renderForm(prefill);
  }

  function renderForm(prefill) {
    const fn = (state.functions || []).find((f) => f.name === $("submit-function").value);
    fields.length = 0;
    clearProblems();
    const params = $("submit-params");
    params.replaceChildren(el("legend", { text: "Parameters" }));
    setText("submit-function-description", fn ? fn.description : "");
    if (fn) {
      const schema = fn.parameters || {};
      const required = new Set(schema.required || []);
      const given = (prefill && prefill.params) || {};
      for (const [name, prop] of Object.entries(schema.properties || {})) {
        fieldFor(`params.${name}`, name, resolve(prop, schema), required.has(name), given[name], params);
      }
    }
    const labels = $("submit-labels");
    labels.replaceChildren();
    const schemas = labelSchemas(state.document || {});
    fieldFor("name", "name", { title: "Name", description: "to find the job again", ...schemas.name }, false, prefill ? prefill.name : undefined, labels);
    fieldFor("cost_center", "cost_center", { title: "Cost center", description: "a label for the bill", ...schemas.cost_center }, false, prefill ? prefill.cost_center : undefined, labels);
    $("submit-function").setAttribute("data-path", "function");
  }
  $("submit-function").addEventListener("change", () => renderForm(null));

  $("submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearProblems();
    const body = { function: $("submit-function").value, params: {} };
    let firstBad = null;
    for (const field of fields) {
      const outcome = check(field);
      if (outcome.problem) {
        showProblem(field, outcome.problem);
        const badRow = (field.rows || []).find((r) => r.error.textContent);
        firstBad = firstBad || (badRow ? badRow.name : field.input);
      } else if (!outcome.skip) {
        if (field.path.startsWith("params.")) body.params[field.path.slice(7)] = outcome.value;
        else body[field.path] = outcome.value;
      }
    }
    if (firstBad) {
      setText("submit-error", "Some fields need a change (marked below).");
      firstBad.focus();
      return;
    }
    const button = $("submit-button");
    button.disabled = true;
    try {
      const picker = fields.find((f) => f.kind === "inputs");
      if (picker && body.params.inputs) {
        const inputs = await uploadedInputs(picker);
        if (!inputs) {
          setText("submit-error", "An input needs a change (marked below).");
          return;
        }
        body.params.inputs = inputs;
      }
      const accepted = await api("POST", "/jobs", body);
      notify(`Job submitted (${accepted.job_id.slice(0, 8)}).`, { untilNextView: true });
      go(`#/jobs/${accepted.job_id}`);
    } catch (exc) {
      if (exc.status !== 403) showServerErrors(exc);
    } finally {
      button.disabled = false;
    }
  });

  // ---- submit: a function's input files (sql's `inputs`: {name: upload_id}) ------------------------------
  // One row per input: its name and either a new file or one of the caller's AVAILABLE uploads. A new file
  // is sent as soon as it is chosen: its sha256 computed here, POST /uploads declares it, the file goes in
  // the presigned POST's form (its fields first, the file last) straight to the bucket, and GET /uploads/{id}
  // is asked (with backoff) until pijobs checked it: AVAILABLE, or REJECTED with the reason on the row.
  const NEW_FILE = "";
  const UPLOAD_POLL_FIRST_MS = 250;
  const UPLOAD_POLL_MAX_MS = 5000;
  const UPLOAD_WAIT_MS = 10 * 60 * 1000;
  let rowCount = 0;

  function inputsField(path, schema, required, value, container) {
    const id = "field-" + path.replace(/[^A-Za-z0-9_-]/g, "-");
    const group = el("div", { id, role: "group", "aria-labelledby": `${id}-label`, "aria-describedby": `${id}-hint ${id}-error` });
    const rowsBox = el("div", { className: "input-rows" });
    const add = el("button", { type: "button", id: `${id}-add`, text: "Add an input" });
    const hint = [schema.description, schema.maxProperties ? `up to ${schema.maxProperties}` : ""].filter(Boolean).join(" · ");
    const error = el("p", { id: `${id}-error`, className: "error" });
    const field = { path, input: group, error, schema, required, kind: "inputs", rows: [], rowsBox, uploads: [] };
    group.append(el("span", { id: `${id}-label`, className: "label", text: (schema.title || "Inputs") + (required ? " (required)" : "") }),
      el("p", { id: `${id}-hint`, className: "hint", text: hint }), rowsBox, add, error);
    container.append(el("div", { className: "field" }, group));
    fields.push(field);
    add.addEventListener("click", () => { const row = addInputRow(field, "", ""); row.name.focus(); });
    const given = value && typeof value === "object" ? Object.entries(value) : [];
    if (given.length) for (const [name, uploadId] of given) addInputRow(field, name, String(uploadId));
    else addInputRow(field, "", "");
    loadAvailableUploads(field);
  }

  async function loadAvailableUploads(field) {
    let page;
    try { page = await api("GET", "/uploads" + query({ limit: 100 })); } catch (exc) { return; } // a new file still works
    field.uploads = (page.uploads || []).filter((u) => u.status === "AVAILABLE");
    for (const row of field.rows) fillUploadChoices(field, row);
  }

  function uploadLabel(upload) {
    return `${upload.filename} (${formatBytes(upload.bytes).replace(/ \(.*\)$/, "")}, ${formatTime(upload.created_at)})`;
  }

  function fillUploadChoices(field, row) {
    const chosen = row.source.value;
    const options = [el("option", { value: NEW_FILE, text: "a new file (choose below)" })];
    for (const upload of field.uploads) options.push(el("option", { value: upload.upload_id, text: uploadLabel(upload) }));
    if (chosen && !field.uploads.some((u) => u.upload_id === chosen)) options.push(el("option", { value: chosen, text: `upload ${chosen.slice(0, 12)}` }));
    row.source.replaceChildren(...options);
    row.source.value = chosen;
  }

  function addInputRow(field, name, uploadId) {
    rowCount += 1;
    const id = `input-${rowCount}`;
    const row = {
      id, upload: null, sending: null, failure: "",
      name: el("input", { id: `${id}-name`, type: "text", autocomplete: "off", spellcheck: "false", "aria-describedby": `${id}-error`, "data-row": id }),
      source: el("select", { id: `${id}-source`, "aria-describedby": `${id}-error` }),
      bar: el("progress", { id: `${id}-progress`, max: 100, value: 0, "aria-labelledby": `${id}-progress-label` }),
      barLabel: el("span", { id: `${id}-progress-label`, text: "" }),
      state: el("span", { id: `${id}-state`, className: "upload-state" }),
      error: el("p", { id: `${id}-error`, className: "error", role: "alert" }),
    };
    row.picker = el("input", { id: `${id}-file`, type: "file", "aria-describedby": `${id}-error` });
    const remove = el("button", { type: "button", className: "link", id: `${id}-remove`, text: "Remove", "aria-label": "Remove this input" });
    row.progress = el("div", { className: "progress-line", hidden: true }, row.bar, row.barLabel, row.state);
    row.box = el("div", { className: "input-row", "data-row": id },
      el("div", { className: "field" }, el("label", { for: row.name.id, text: "Name" }), row.name),
      el("div", { className: "field grow" }, el("label", { for: row.source.id, text: "File" }), row.source,
        el("label", { for: row.picker.id, className: "visually-hidden", text: "New file" }), row.picker, row.progress),
      remove, row.error);
    row.name.value = name;
    row.source.append(el("option", { value: uploadId, text: uploadId }));
    fillUploadChoices(field, row);
    row.picker.hidden = row.source.value !== NEW_FILE;
    row.source.addEventListener("change", () => {
      row.picker.hidden = row.source.value !== NEW_FILE;
      row.progress.hidden = row.source.value !== NEW_FILE || !row.sending;
      showRowProblem(row, "");
    });
    row.picker.addEventListener("change", () => {
      const file = row.picker.files && row.picker.files[0];
      row.upload = null;
      row.sending = file ? sendFile(row, file) : null;
      if (row.sending) row.sending.catch(() => {}); // shown on the row; asked again at submit
    });
    remove.addEventListener("click", () => {
      field.rows = field.rows.filter((r) => r !== row);
      row.box.remove();
      focusOn(field.rows.length ? field.rows[field.rows.length - 1].name : $(`${field.input.id}-add`));
    });
    field.rows.push(row);
    field.rowsBox.append(row.box);
    return row;
  }

  function showRowProblem(row, problem) {
    row.error.textContent = problem;
    if (problem) row.name.setAttribute("aria-invalid", "true");
    else row.name.removeAttribute("aria-invalid");
  }

  function showUploadProgress(row, fraction, state) {
    row.progress.hidden = false;
    const pct = Math.round(fraction * 100);
    row.bar.value = pct;
    row.barLabel.textContent = `${pct} %`;
    row.state.textContent = state;
    row.state.setAttribute("data-state", state);
  }

  // The file's sha256, read a slice at a time: the tab holds one slice, never the whole file (WebCrypto's
  // digest takes all its input at once, which a multi-GB upload cannot be). SHA-256 as FIPS 180-4 gives it.
  const HASH_SLICE_BYTES = 4 * 1024 * 1024;
  const SHA256_K = new Int32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);

  function sha256Stream() {
    const state = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    const w = new Int32Array(64);
    const pending = new Uint8Array(64); // the bytes of a block not complete yet
    let held = 0;
    let length = 0;

    function blocks(bytes, start, end) { // compresses bytes[start, end), a whole number of 64-byte blocks
      let h0 = state[0] | 0, h1 = state[1] | 0, h2 = state[2] | 0, h3 = state[3] | 0;
      let h4 = state[4] | 0, h5 = state[5] | 0, h6 = state[6] | 0, h7 = state[7] | 0;
      for (let at = start; at < end; at += 64) {
        for (let i = 0, j = at; i < 16; i++, j += 4) {
          w[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
        }
        for (let i = 16; i < 64; i++) {
          const x = w[i - 15];
          const y = w[i - 2];
          const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
          const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
          w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
        }
        let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
        for (let i = 0; i < 64; i++) {
          const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
          const t1 = (h + s1 + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i]) | 0;
          const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
          const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
          h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
        }
        h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
        h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
      }
      state[0] = h0; state[1] = h1; state[2] = h2; state[3] = h3; state[4] = h4; state[5] = h5; state[6] = h6; state[7] = h7;
    }

    function update(bytes) {
      length += bytes.length;
      let at = 0;
      if (held) { // complete the block the last call left
        at = Math.min(64 - held, bytes.length);
        pending.set(bytes.subarray(0, at), held);
        held += at;
        if (held < 64) return;
        blocks(pending, 0, 64);
        held = 0;
      }
      const whole = at + Math.floor((bytes.length - at) / 64) * 64;
      blocks(bytes, at, whole);
      pending.set(bytes.subarray(whole), 0);
      held = bytes.length - whole;
    }

    function hex() { // padding: 0x80, zeros, the length in bits as 64 bits big-endian
      const tail = new Uint8Array(held < 56 ? 64 : 128);
      tail.set(pending.subarray(0, held), 0);
      tail[held] = 0x80;
      const bits = new DataView(tail.buffer);
      bits.setUint32(tail.length - 8, Math.floor(length / 0x20000000)); // length * 8 / 2**32
      bits.setUint32(tail.length - 4, (length * 8) >>> 0);
      blocks(tail, 0, tail.length);
      return Array.from(state, (word) => word.toString(16).padStart(8, "0")).join("");
    }

    return { update, hex };
  }

  async function sha256Hex(file, onProgress) {
    const hash = sha256Stream();
    for (let offset = 0; offset < file.size; offset += HASH_SLICE_BYTES) {
      hash.update(new Uint8Array(await file.slice(offset, offset + HASH_SLICE_BYTES).arrayBuffer()));
      onProgress(Math.min(file.size, offset + HASH_SLICE_BYTES) / file.size);
    }
    return hash.hex();
  }

  // The presigned POST through XMLHttpRequest, whose upload events (unlike fetch's) report the bytes sent.
  function postFile(url, formFields, file, onProgress) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      for (const [name, value] of Object.entries(formFields)) form.append(name, value);
      form.append("file", file); // last: S3 reads the fields before the file
      const request = new XMLHttpRequest();
      request.open("POST", url);
      request.upload.addEventListener("progress", (event) => { if (event.lengthComputable) onProgress(event.loaded / event.total); });
      request.addEventListener("load", () => (request.status >= 200 && request.status < 300
        ? resolve() : reject(new Error(`the storage refused the file (${request.status}); choose it again`))));
      request.addEventListener("error", () => reject(new Error("the file could not be sent; check the connection and choose it again")));
      request.send(form);
    });
  }

  const sleep = (ms) => new Promise((done) => { setTimeout(done, ms); });

  async function checkedUpload(uploadId) {
    const deadline = Date.now() + UPLOAD_WAIT_MS;
    let delay = UPLOAD_POLL_FIRST_MS;
    for (;;) {
      const upload = await api("GET", `/uploads/${uploadId}`);
      if (upload.status !== "PENDING") return upload;
      if (Date.now() > deadline) throw new Error("the file is still being checked; submit again in a moment");
      await sleep(delay);
      delay = Math.min(UPLOAD_POLL_MAX_MS, Math.round(delay * 1.6));
    }
  }

  async function sendFile(row, file) {
    showRowProblem(row, "");
    showUploadProgress(row, 0, "reading");
    try {
      const sha256 = await sha256Hex(file, (fraction) => showUploadProgress(row, fraction, "reading"));
      const created = await api("POST", "/uploads", { filename: file.name, bytes: file.size, sha256 });
      showUploadProgress(row, 0, "sending");
      await postFile(created.url, created.fields || {}, file, (fraction) => showUploadProgress(row, fraction, "sending"));
      showUploadProgress(row, 1, "checking");
      const upload = await checkedUpload(created.upload_id);
      showUploadProgress(row, 1, upload.status);
      if (upload.status !== "AVAILABLE") throw new Error(`the file was refused: ${upload.reason || upload.status}`);
      row.upload = upload;
      return upload.upload_id;
    } catch (exc) {
      const fieldProblems = exc.details && exc.details.length ? exc.details.map((d) => `${d.field}: ${d.problem}`).join("; ") : "";
      row.failure = fieldProblems ? `${exc.message} (${fieldProblems})` : exc.message;
      showRowProblem(row, row.failure);
      row.state.textContent = row.state.textContent === "REJECTED" ? "REJECTED" : "not sent";
      throw exc;
    }
  }

  function checkInputs(field) {
    const { rows, schema, required } = field;
    if (!rows.length) return required ? { problem: "Add at least one input" } : { skip: true };
    const namePattern = Object.keys(schema.patternProperties || {})[0];
    const seen = new Set();
    let bad = false;
    for (const row of rows) {
      const name = row.name.value.trim();
      let problem = "";
      if (!name) problem = "Name required";
      else if (namePattern && !new RegExp(namePattern, "u").test(name)) problem = "the name must be lowercase letters, digits and _ (not starting with a digit)";
      else if (seen.has(name)) problem = "another input has this name";
      else if (row.source.value === NEW_FILE && !row.sending) problem = "choose a file or one of your uploads";
      seen.add(name);
      showRowProblem(row, problem);
      bad = bad || Boolean(problem);
    }
    if (schema.maxProperties !== undefined && rows.length > schema.maxProperties) return { problem: `at most ${schema.maxProperties} inputs` };
    return bad ? { problem: "An input needs a change" } : { value: true }; // the upload_ids come once the files are checked
  }

  // {name: upload_id} once every new file is AVAILABLE; null (with the reason on its row) if one is not.
  async function uploadedInputs(field) {
    const inputs = {};
    let firstBad = null;
    for (const row of field.rows) {
      let uploadId = row.source.value;
      if (uploadId === NEW_FILE) {
        try { uploadId = await row.sending; } catch (exc) {
          if (exc.status === 403) throw exc;
          showRowProblem(row, `${row.failure || exc.message}; choose the file again`);
          firstBad = firstBad || row.name;
          continue;
        }
      }
      inputs[row.name.value.trim()] = uploadId;
    }
    if (firstBad) { focusOn(firstBad); return null; }
    return inputs;
  }

  // The API's `details` name the field at fault (`params.digits`, `name`, `function`, ...): each problem is
  // shown on the field it names (or the closest enclosing one), the rest above the button.
  function showServerErrors(exc) {
    const unplaced = [];
    let firstBad = null;
    for (const detail of exc.details) {
      const field = fields
        .filter((f) => detail.field === f.path || detail.field.startsWith(f.path + "."))
        .sort((a, b) => b.path.length - a.path.length)[0];
      const inner = field ? detail.field.slice(field.path.length + 1) : "";
      const row = field && field.kind === "inputs" ? field.rows.find((r) => r.name.value.trim() === inner.split(".")[0]) : null;
      if (row) {
        showRowProblem(row, detail.problem);
        firstBad = firstBad || row.name;
      } else if (field) {
        showProblem(field, (field.error.textContent ? field.error.textContent + "; " : "") + (inner ? `${inner}: ` : "") + detail.problem);
        firstBad = firstBad || field.input;
      } else {
        unplaced.push(`${detail.field}: ${detail.problem}`);
      }
    }
    setText("submit-error", [`The API refused the job: ${exc.message}`, ...unplaced].join(" — "));
    focusOn(firstBad || $("submit-error"));
  }

  // ---- webhooks -------------------------------------------------------------------------------------------
  // Add one (the secret is shown once, in the box above the view, and forgotten when the view changes), the
  // list with each webhook's state, and per webhook: a test event, its recent deliveries (asked again while
  // one is pending), a new secret (shown once), delete. The event types and the fields' limits are the
  // API's own: GET /openapi.json's POST /webhooks body.
  const WEBHOOK_FIELDS = ["url", "events", "description"];

  function webhookSchema(doc) {
    try {
      let body = doc.paths["/webhooks"].post.requestBody.content["application/json"].schema;
      if (body.$ref) body = doc.components.schemas[body.$ref.replace(/^#\/components\/schemas\//, "")];
      const props = body.properties || {};
      const events = resolve(props.events, {});
      return {
        url: resolve(props.url, {}),
        description: resolve(props.description, {}),
        events: events.items && Array.isArray(events.items.enum) ? events.items.enum : [],
        eventsHint: events.description || "",
      };
    } catch (exc) {
      return { url: {}, description: {}, events: [], eventsHint: "" };
    }
  }
  function eventsSummary(events) {
    const every = webhookSchema(state.document || {}).events;
    const given = events || [];
    return every.length && every.every((type) => given.includes(type)) ? "all" : given.join(", ");
  }
  const hookPath = (webhookId, rest) => `/webhooks/${encodeURIComponent(webhookId)}${rest || ""}`;
  const visibleView = () => VIEWS.find((name) => !$("view-" + name).hidden);

  // ---- webhooks: the secret, shown once -----------------------------------------------------------------
  function showSecret(title, about, secret, note) {
    setText("secret-title", title);
    setText("secret-for", about);
    $("secret-value").value = secret;
    setText("secret-note", note);
    setText("secret-copied", "");
    $("secret-box").hidden = false;
    focusOn($("secret-value"));
  }
  function forgetSecret() {
    $("secret-value").value = "";
    for (const id of ["secret-for", "secret-note", "secret-copied"]) setText(id, "");
    $("secret-box").hidden = true;
  }
  $("secret-copy").addEventListener("click", async () => {
    const input = $("secret-value");
    input.focus();
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      setText("secret-copied", "Copied to the clipboard.");
    } catch (exc) { // no clipboard for this page (an insecure origin, a refused permission): it is selected
      setText("secret-copied", "This browser did not let the page copy it: it is selected, press Ctrl+C (⌘C).");
    }
  });
  $("secret-done").addEventListener("click", () => {
    forgetSecret();
    focusOn(document.querySelector(`#view-${visibleView()} h1`));
  });

  // ---- webhooks: the list and the form ------------------------------------------------------------------
  async function openWebhooks() {
    document.title = "Webhooks · pijobs console";
    show("webhooks");
    await fillWebhookForm();
    await loadWebhooks();
  }

  async function fillWebhookForm() {
    const choices = $("webhook-events-choices");
    if (choices.childElementCount) return;
    const schema = webhookSchema(await loadDocument());
    const url = $("webhook-url");
    if (Array.isArray(schema.url.examples) && schema.url.examples.length) url.placeholder = `e.g. ${schema.url.examples[0]}`;
    setText("webhook-url-hint", [schema.url.description, bounds(schema.url)].filter(Boolean).join(" · "));
    setText("webhook-description-hint", ["a note for yourself", bounds(schema.description)].filter(Boolean).join(" · "));
    setText("webhook-events-hint", schema.eventsHint);
    choices.replaceChildren(...schema.events.map((type) => {
      const id = "webhook-event-" + type.replace(/[^A-Za-z0-9_-]/g, "-");
      return el("label", { for: id }, el("input", { id, type: "checkbox", name: "events", value: type, checked: true }), type);
    }));
  }

  async function loadWebhooks() {
    const view = $("view-webhooks");
    let page;
    try {
      page = await api("GET", "/webhooks");
    } catch (exc) {
      if (exc.status !== 403) setText("webhooks-error", `Could not load the webhooks: ${exc.message}`);
      return;
    }
    if (view.hidden) return;
    setText("webhooks-error", "");
    const hooks = page.webhooks || [];
    $("webhooks-body").replaceChildren(...hooks.map(webhookRow));
    $("webhooks-empty").hidden = hooks.length > 0;
  }

  function webhookRow(hook) {
    const link = el("a", { href: "#" + hookPath(hook.webhook_id), className: "mono", "data-webhook-id": hook.webhook_id, text: hook.url });
    const about = hook.description ? [el("br"), el("span", { className: "muted", text: hook.description })] : [];
    return el("tr", { "data-webhook-id": hook.webhook_id, "data-state": hook.state },
      el("td", { "data-label": "URL", className: "url" }, link, ...about),
      el("td", { "data-label": "State" }, el("span", { className: `badge ${hook.state}`, text: hook.state })),
      el("td", { "data-label": "Events", text: eventsSummary(hook.events) }),
      el("td", { "data-label": "Created" }, el("time", { datetime: hook.created_at, text: formatTime(hook.created_at) })));
  }

  const webhookInput = (name) => $(name === "events" ? "webhook-events" : `webhook-${name}`);
  function showWebhookProblem(name, problem) { // the control to focus
    const error = $(`webhook-${name}-error`);
    error.textContent = error.textContent ? `${error.textContent}; ${problem}` : problem;
    webhookInput(name).setAttribute("aria-invalid", "true");
    return name === "events" ? $("webhook-events-choices").querySelector("input") : webhookInput(name);
  }
  function clearWebhookProblems() {
    for (const name of WEBHOOK_FIELDS) {
      setText(`webhook-${name}-error`, "");
      webhookInput(name).removeAttribute("aria-invalid");
    }
    setText("webhook-form-error", "");
  }
  // The API's `details` name the field (`url` for an address webhooks may not call, `events.0`, ...).
  function showWebhookServerErrors(exc) {
    const unplaced = [];
    let firstBad = null;
    for (const detail of exc.details) {
      const name = WEBHOOK_FIELDS.find((f) => detail.field === f || detail.field.startsWith(f + "."));
      if (name) firstBad = firstBad || showWebhookProblem(name, detail.problem);
      else unplaced.push(`${detail.field}: ${detail.problem}`);
    }
    setText("webhook-form-error", [`The API refused the webhook: ${exc.message}`, ...unplaced].join(" — "));
    focusOn(firstBad || $("webhook-form-error"));
  }

  $("webhook-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearWebhookProblems();
    const url = $("webhook-url").value.trim();
    const boxes = Array.from($("webhook-events-choices").querySelectorAll("input[type=checkbox]"));
    const events = boxes.filter((box) => box.checked).map((box) => box.value);
    const description = $("webhook-description").value.trim();
    let firstBad = null;
    if (!url) firstBad = showWebhookProblem("url", "Field required");
    if (boxes.length && !events.length) firstBad = firstBad || showWebhookProblem("events", "choose at least one event type");
    if (firstBad) {
      setText("webhook-form-error", "Some fields need a change (marked above).");
      focusOn(firstBad);
      return;
    }
    const body = { url };
    if (boxes.length) body.events = events; // none offered (no API document): the API's default, all
    if (description) body.description = description;
    const button = $("webhook-add");
    button.disabled = true;
    try {
      const made = await api("POST", "/webhooks", body);
      $("webhook-form").reset();
      await loadWebhooks();
      showSecret("Signing secret", `of the webhook to ${made.url}`, made.secret, "");
    } catch (exc) {
      if (exc.status !== 403) showWebhookServerErrors(exc);
    } finally {
      button.disabled = false;
    }
  });

  // ---- webhooks: one, its deliveries and actions --------------------------------------------------------
  let currentHook = null;
  let shownDeliveries = "";
  const HOOK_ACTIONS = ["webhook-test", "webhook-rotate", "webhook-delete"];

  async function openWebhook(webhookId) {
    document.title = "Webhook · pijobs console";
    currentHook = null;
    shownDeliveries = "";
    for (const id of ["webhook-title", "webhook-state", "webhook-id", "webhook-about", "webhook-problem", "webhook-error"]) setText(id, "");
    $("webhook-state").className = "badge";
    $("webhook-facts").replaceChildren();
    $("deliveries-body").replaceChildren();
    $("deliveries-empty").hidden = true;
    for (const id of HOOK_ACTIONS) $(id).disabled = true;
    show("webhook");
    let hook;
    try {
      hook = await api("GET", hookPath(webhookId));
    } catch (exc) {
      if (exc.status !== 403) setText("webhook-error", exc.status === 404 ? "No such webhook (or not one of yours)." : `Could not load the webhook: ${exc.message}`);
      return;
    }
    if ($("view-webhook").hidden) return;
    await loadDocument(); // the event types, to say "all"
    currentHook = hook;
    renderWebhook(hook);
    for (const id of HOOK_ACTIONS) $(id).disabled = false;
    poller.start(() => loadDeliveries(hook.webhook_id));
    await loadDeliveries(hook.webhook_id);
    if (!$("view-webhook").hidden) focusOn($("webhook-title"));
  }

  function renderWebhook(hook) {
    setText("webhook-title", hook.url);
    setText("webhook-state", hook.state);
    $("webhook-state").className = `badge ${hook.state}`;
    setText("webhook-id", hook.webhook_id);
    setText("webhook-about", hook.description || "");
    let problem = "";
    if (hook.state === "disabled") problem = `Disabled: ${hook.disabled_reason || "the receiver answered 410 Gone"}. Nothing more is sent to it.`;
    else if (hook.state === "failing") problem = `Failing since ${formatTime(hook.failing_since)}: a delivery used up its retries (the next one delivered clears it).`;
    setText("webhook-problem", problem);
    $("webhook-facts").replaceChildren(
      el("dt", { text: "events" }), el("dd", { text: eventsSummary(hook.events) }),
      el("dt", { text: "created" }), el("dd", { text: formatTime(hook.created_at) }));
  }

  async function loadDeliveries(webhookId) {
    if ($("view-webhook").hidden) return;
    let page;
    try {
      page = await api("GET", hookPath(webhookId, "/deliveries"));
    } catch (exc) {
      if (exc.status === 403) return;
      setText("webhook-error", exc.status === 404 ? "This webhook is gone." : `Could not load the deliveries: ${exc.message}`);
      if (exc.status !== 404) poller.next(true, false);
      return;
    }
    if ($("view-webhook").hidden || !currentHook || currentHook.webhook_id !== webhookId) return;
    const deliveries = page.deliveries || [];
    const signature = deliveries.map((d) => `${d.event_id}:${d.state}:${d.attempts}`).join(",");
    const changed = signature !== shownDeliveries;
    if (changed && signature) { // a delivery's outcome can change the webhook's state (failing, disabled)
      try { currentHook = await api("GET", hookPath(webhookId)); renderWebhook(currentHook); } catch (exc) { /* shown next time */ }
    }
    shownDeliveries = signature;
    $("deliveries-body").replaceChildren(...deliveries.map(deliveryRow));
    $("deliveries-empty").hidden = deliveries.length > 0;
    poller.next(deliveries.some((d) => d.state === "pending"), changed);
  }

  function deliveryRow(d) {
    const job = d.job_id ? [el("a", { href: `#/jobs/${encodeURIComponent(d.job_id)}`, className: "mono", text: d.job_id.slice(0, 12) })] : [];
    if (d.job_id && d.job_attempt) job.push(el("br"), el("span", { className: "muted", text: `attempt ${d.job_attempt}` }));
    const at = d.last_attempt_at || d.created_at;
    const answer = d.response_status ? String(d.response_status) : d.error || ""; // the status, else why none came
    return el("tr", { "data-event-id": d.event_id, "data-state": d.state },
      el("td", { "data-label": "Event", className: "event mono", text: d.event_id }),
      el("td", { "data-label": "Type", className: "type", text: d.type }),
      el("td", { "data-label": "State" }, el("span", { className: `badge ${d.state}`, text: d.state })),
      el("td", { "data-label": "Job" }, ...(job.length ? job : ["—"])),
      el("td", { "data-label": "Tries", className: "tries", text: String(d.attempts) }),
      el("td", { "data-label": "Time" }, el("time", { datetime: at, text: formatTime(at) })),
      el("td", { "data-label": "Answer", className: "answer", title: d.error, text: answer }),
      el("td", { "data-label": "Duration", className: "duration", text: typeof d.duration_ms === "number" ? `${d.duration_ms} ms` : "" }),
      el("td", { "data-label": "Next retry", className: "next", text: d.next_attempt_at ? formatTime(d.next_attempt_at) : "" }));
  }

  $("webhook-test").addEventListener("click", async () => {
    const hook = currentHook;
    if (!hook) return;
    const button = $("webhook-test");
    button.disabled = true;
    try {
      const queued = await api("POST", hookPath(hook.webhook_id, "/test"));
      notify(`Test event ${queued.event_id} sent: its delivery shows below.`);
    } catch (exc) {
      if (exc.status !== 403) setText("webhook-error", `Could not send a test event: ${exc.message}`);
    } finally {
      button.disabled = false;
    }
    poller.start(() => loadDeliveries(hook.webhook_id));
    await loadDeliveries(hook.webhook_id);
  });

  $("webhook-rotate").addEventListener("click", async () => {
    const hook = currentHook;
    if (!hook) return;
    setText("webhook-error", "");
    try {
      const rotated = await api("POST", hookPath(hook.webhook_id, "/rotate-secret"));
      showSecret("New signing secret", `of the webhook to ${hook.url}`, rotated.secret,
        `The previous secret also signs until ${formatTime(rotated.previous_until)}: give your receiver this one before then.`);
    } catch (exc) {
      if (exc.status !== 403) setText("webhook-error", `Could not rotate the secret: ${exc.message}`);
    }
  });

  const deleteDialog = $("confirm-delete");
  $("webhook-delete").addEventListener("click", () => { if (currentHook) deleteDialog.showModal(); });
  $("confirm-delete-no").addEventListener("click", () => deleteDialog.close("keep"));
  $("confirm-delete-yes").addEventListener("click", async () => {
    deleteDialog.close("delete");
    const hook = currentHook;
    if (!hook) return;
    try {
      await api("DELETE", hookPath(hook.webhook_id));
      notify(`The webhook to ${hook.url} was deleted.`, { untilNextView: true });
      go("#/webhooks");
    } catch (exc) {
      if (exc.status !== 403) setText("webhook-error", `Could not delete the webhook: ${exc.message}`);
    }
  });

  window.addEventListener("hashchange", route);
  route();
})();
