// The operator's console: plain JavaScript against the gateway's own API (no build step, no dependency).
"use strict";

const $ = (selector) => document.querySelector(selector);

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.appendChild(td);
  return td;
}

function button(label, action) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await action(); } finally { b.disabled = false; await refresh(); }
  });
  return b;
}

// The API key, when the gateway requires one: kept in this browser only, sent as a Bearer header (and as
// ?token= on the WebSocket, which cannot carry headers).
const apiKey = () => localStorage.getItem("asrpro-api-key") || "";

function authorized(options) {
  const headers = Object.assign({}, (options || {}).headers);
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  return Object.assign({}, options, {headers});
}

async function send(path, options) {
  const response = await fetch(path, authorized(options));
  if (response.status === 401) $("#key-needed").hidden = false;
  return response;
}

async function json(path, options) {
  const response = await send(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

let expiries = [];

// Pull a model's weights onto this gateway's node (POST /api/pull, admin), with a progress bar fed by the
// newline-delimited JSON the route streams; the catalogue shows it installed once done.
const pulling = new Map();  // model -> its progress bar and note, while a pull runs (or just failed)

async function pull(model, where) {
  const bar = document.createElement("progress");
  const note = document.createElement("span");
  where.replaceChildren(bar, note);
  pulling.set(model, [bar, note]);
  try {
    const response = await send("/api/pull", {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify({model})});
    if (!response.ok) throw new Error((await response.json()).error.message);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffered += value;
      let end;
      while ((end = buffered.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffered.slice(0, end));
        buffered = buffered.slice(end + 1);
        if (line.error) throw new Error(line.error.message);
        if (line.total) { bar.max = line.total; bar.value = line.completed; } else bar.removeAttribute("value");
        note.textContent = " " + line.status;
      }
    }
    pulling.delete(model);
    refresh();
  } catch (e) {
    note.textContent = " " + e.message;
    note.className = "error";
    setTimeout(() => pulling.delete(model), 15000);  // then the Pull button again
  }
}

async function refresh() {
  try {
    const health = await json("/health");
    $("#health").textContent = health.status;
    $("#health").className = "badge " + health.status;
    $("#device").textContent = health.device || "";
  } catch (e) { $("#health").textContent = "unreachable"; }

  try {
    // OpenAI's names (whisper-1, ...) are entries of their own pointing at a model (`target`): shown once, as it.
    const models = (await json("/v1/models")).data.filter((m) => !m.target);
    const body = $("#models tbody");
    body.replaceChildren();
    const select = $("#upload-model");
    const chosen = select.value;
    select.replaceChildren();
    for (const m of models) {
      const row = document.createElement("tr");
      row.dataset.model = m.id;
      cell(row, m.id);
      cell(row, m.installed === false ? "no" : "yes");
      cell(row, m.ready ? "yes" : "no");
      cell(row, m.default ? "default" : "");
      const actions = cell(row, "");
      if (!m.default && m.installed !== false) {
        actions.appendChild(button("make default", () =>
          json("/v1/settings/model", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify({model_id: m.id})})));
      }
      if (pulling.has(m.id)) actions.replaceChildren(...pulling.get(m.id));  // survives the table's refresh
      else if (m.installed === false) actions.appendChild(button("Pull", () => pull(m.id, actions)));
      body.appendChild(row);
      if (m.installed !== false) {
        const option = document.createElement("option");
        option.value = m.id;
        option.textContent = m.id + (m.default ? " (default)" : "");
        select.appendChild(option);
      }
    }
    if (chosen) select.value = chosen;
  } catch (e) { /* shown by the health badge */ }

  try {
    const ps = await json("/api/ps");
    const body = $("#servers tbody");
    body.replaceChildren();
    expiries = [];
    for (const s of ps.models) {
      const row = document.createElement("tr");
      row.dataset.model = s.model;
      cell(row, s.model);
      cell(row, s.runtime);
      cell(row, s.container_id ? s.container_id.slice(0, 12) : s.pid);
      cell(row, s.device);
      cell(row, (s.rss_mb ? s.rss_mb + " MB" : "") + (s.memory_mb ? " / GPU " + s.memory_mb + " MB" : ""));
      cell(row, s.inflight);
      const countdown = cell(row, "");
      expiries.push([countdown, s.expires_at ? Date.parse(s.expires_at) : null]);
      cell(row, "").appendChild(button("unload", () =>
        json("/api/ps/" + encodeURIComponent(s.model) + "?force=true", {method: "DELETE"})));
      body.appendChild(row);
    }
    tick();
  } catch (e) { /* the lifecycle actor may be restarting */ }

  try {
    const gpu = await json("/api/gpu");
    const box = $("#gpus");
    box.replaceChildren();
    if (!gpu.devices.length) box.textContent = "no GPU: " + gpu.reason;
    for (const d of gpu.devices) {
      const line = document.createElement("div");
      line.textContent = `cuda:${d.index} ${d.name}: ${d.allocated_mb} of ${d.total_mb} MB allocated`;
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("div");
      fill.style.width = Math.min(100, 100 * d.allocated_mb / Math.max(1, d.total_mb)) + "%";
      bar.appendChild(fill);
      box.append(line, bar);
    }
  } catch (e) { $("#gpus").textContent = "the gpu actor does not answer"; }

  try {
    const list = $("#breakers");
    list.replaceChildren();
    for (const b of (await json("/api/breakers")).breakers) {
      const item = document.createElement("li");
      item.textContent = `${b.model}: ${b.state} (${b.reason}) `;
      item.appendChild(button("close", () =>
        json("/api/breakers/" + encodeURIComponent(b.model) + "/close", {method: "POST"})));
      list.appendChild(item);
    }
    if (!list.children.length) list.textContent = "none open";
  } catch (e) { /* as above */ }
}

function tick() {
  const now = Date.now();
  for (const [td, at] of expiries) {
    td.textContent = at === null ? "—" : Math.max(0, Math.round((at - now) / 1000)) + " s";
  }
}

function event(text, at) {
  const item = document.createElement("li");
  item.textContent = (at ? new Date(at * 1000) : new Date()).toLocaleTimeString() + " " + text;
  $("#events").prepend(item);
  while ($("#events").children.length > 200) $("#events").lastChild.remove();
}

// The Events panel: the last hour of the lifecycle stream, then live, through the resumable /v1/events (an
// EventSource reconnects by itself with Last-Event-ID and gets what it missed meanwhile).
const EVENT_KINDS = ["starting", "ready", "stopped", "failed", "crashed", "unhealthy", "restart_scheduled",
  "breaker", "transcribing", "transcribed", "transcription_failed", "default_changed"];
const LIFECYCLE = new Set(["starting", "ready", "stopped", "failed", "crashed", "default_changed"]);

function follow() {
  const params = new URLSearchParams({since: String(Math.floor(Date.now() / 1000) - 3600)});
  if (apiKey()) params.set("token", apiKey());
  const source = new EventSource("/v1/events?" + params);
  const show = (message) => {
    const data = JSON.parse(message.data);
    const why = data.reason || "";
    event(`${message.type} ${data.model || ""} ${why}`.trim(), data.at);
    if (LIFECYCLE.has(message.type)) refresh();
  };
  for (const kind of EVENT_KINDS) source.addEventListener(kind, show);
}

function connect() {
  const token = apiKey() ? "?token=" + encodeURIComponent(apiKey()) : "";
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + token);
  ws.onmessage = (message) => {
    const {type, data} = JSON.parse(message.data);
    if (type === "transcription_progress") {
      if (data.filename === uploading) {
        $("#progress").value = data.progress;
        $("#progress-text").textContent = data.progress + " %";
      }
      return;
    }
    // Lifecycle events come through the resumable event stream (follow); the WebSocket brings live progress.
  };
  ws.onclose = () => setTimeout(connect, 2000);
}

let uploading = null;

function stamp(seconds, separator) {
  const ms = Math.round(seconds * 1000);
  const pad = (n, w) => String(n).padStart(w, "0");
  return `${pad(Math.floor(ms / 3600000), 2)}:${pad(Math.floor(ms / 60000) % 60, 2)}:` +
         `${pad(Math.floor(ms / 1000) % 60, 2)}${separator}${pad(ms % 1000, 3)}`;
}

function subtitles(segments) {
  const srt = segments.map((s, i) =>
    `${i + 1}\n${stamp(s.start, ",")} --> ${stamp(s.end, ",")}\n${s.text.trim()}\n`).join("\n");
  const vtt = "WEBVTT\n\n" + segments.map((s) =>
    `${stamp(s.start, ".")} --> ${stamp(s.end, ".")}\n${s.text.trim()}\n`).join("\n");
  return [srt, vtt];
}

async function transcribe(submit) {
  submit.preventDefault();
  const file = $("#file").files[0];
  if (!file) return;
  uploading = file.name;
  $("#transcript").textContent = "";
  $("#upload-error").textContent = "";
  $("#downloads").hidden = true;
  $("#progress").value = 0;
  $("#progress-text").textContent = "";
  const form = new FormData();
  form.append("file", file);
  form.append("model", $("#upload-model").value);
  form.append("stream", "true");
  const path = $("#translate").checked ? "/v1/audio/translations" : "/v1/audio/transcriptions";
  try {
    const response = await send(path, {method: "POST", body: form});
    if (!response.ok) throw new Error((await response.json()).error.message);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("");
        if (!data) continue;
        const piece = JSON.parse(data);
        if (piece.type === "transcript.text.delta") $("#transcript").textContent += piece.delta;
        if (piece.type === "transcript.text.done") {
          $("#transcript").textContent = piece.text;
          $("#progress").value = 100;
          $("#progress-text").textContent = "done";
          const [srt, vtt] = subtitles(piece.segments || []);
          $("#download-srt").href = URL.createObjectURL(new Blob([srt], {type: "application/x-subrip"}));
          $("#download-vtt").href = URL.createObjectURL(new Blob([vtt], {type: "text/vtt"}));
          $("#downloads").hidden = false;
        }
        if (piece.type === "error") throw new Error(piece.error.message);
      }
    }
  } catch (e) {
    $("#upload-error").textContent = String(e.message || e);
  } finally {
    uploading = null;
    refresh();
  }
}

// Durable jobs (/v1/audio/jobs): this key's jobs, newest first, with their progress; a result downloads as a file
// (fetched with the key: a plain link could not carry it); a queued or running job can be cancelled.
const ENDED = new Set(["completed", "failed", "cancelled"]);

async function download(job, format) {
  const response = await send(`/v1/audio/jobs/${job.id}/result?format=${format}`);
  if (!response.ok) throw new Error((await response.json()).error.message);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `${(job.metadata.filename || job.id).replace(/\.[^.]*$/, "")}.${format === "text" ? "txt" : format}`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function refreshJobs() {
  let jobs;
  try { jobs = (await json("/v1/audio/jobs?limit=20")).data; } catch (e) { return; }
  const body = $("#jobs tbody");
  body.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.dataset.job = job.id;
    row.dataset.status = job.status;
    cell(row, job.id);
    cell(row, job.metadata.filename || "");
    cell(row, job.status + (job.attempts > 1 ? ` (attempt ${job.attempts})` : ""))
      .title = job.error ? job.error.message : "";
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = job.progress;
    cell(row, "").append(bar, ` ${Math.round(job.progress * 100)}%`);
    cell(row, job.audio_seconds ? `${Math.round(job.audio_seconds)} s` : "");
    cell(row, job.model);
    cell(row, new Date(job.created_at * 1000).toLocaleTimeString());
    const actions = cell(row, "");
    if (job.status === "completed") {
      for (const format of ["text", "srt", "vtt", "json"]) {
        const get = document.createElement("a");
        get.href = "#";
        get.className = "result";
        get.dataset.format = format;
        get.textContent = format;
        get.addEventListener("click", (click) => {
          click.preventDefault();
          download(job, format).catch((e) => { $("#job-error").textContent = e.message; });
        });
        actions.appendChild(get);
      }
    } else if (!ENDED.has(job.status)) {
      actions.appendChild(button("Cancel", () => json(`/v1/audio/jobs/${job.id}`, {method: "DELETE"})));
    } else if (job.error) {
      actions.textContent = job.error.message;
    }
    body.appendChild(row);
  }
}

async function submitJob(submit) {
  submit.preventDefault();
  const file = $("#job-file").files[0];
  if (!file) return;
  $("#job-error").textContent = "";
  const form = new FormData();
  form.append("file", file);
  form.append("model", $("#upload-model").value || "whisper-1");
  form.append("metadata", JSON.stringify({filename: file.name.slice(0, 500)}));
  $("#job-submit").disabled = true;
  try {
    await json("/v1/audio/jobs", {method: "POST", body: form});
    $("#job-form").reset();
  } catch (e) {
    $("#job-error").textContent = String(e.message || e);
  } finally {
    $("#job-submit").disabled = false;
    refreshJobs();
  }
}

$("#job-form").addEventListener("submit", submitJob);
setInterval(refreshJobs, 2000);
refreshJobs();
$("#upload").addEventListener("submit", transcribe);
$("#api-key").value = apiKey();
$("#api-key").addEventListener("change", () => {
  localStorage.setItem("asrpro-api-key", $("#api-key").value.trim());
  $("#key-needed").hidden = true;
  refresh();
});
connect();
follow();
refresh();
// Activity: requests and their mean latency per interval, over the last 10 minutes, from the counters /metrics
// already has (asrpro_requests_total, asrpro_request_duration_seconds): differences between two scrapes.
const ACTIVITY_EVERY_S = 10;
const activity = [];  // {requests, meanS} per interval, oldest first
let lastTotals = null;

function totals(text) {
  let requests = 0, sum = 0, count = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (line.startsWith("asrpro_requests_total{")) requests += value;
    else if (line.startsWith("asrpro_request_duration_seconds_sum{")) sum += value;
    else if (line.startsWith("asrpro_request_duration_seconds_count{")) count += value;
  }
  return {requests, sum, count};
}

async function sample() {
  try {
    const now = totals(await (await send("/metrics")).text());
    if (lastTotals) {
      const done = now.count - lastTotals.count;
      activity.push({requests: Math.max(0, now.requests - lastTotals.requests),
                     meanS: done > 0 ? (now.sum - lastTotals.sum) / done : null});
      while (activity.length > 600 / ACTIVITY_EVERY_S) activity.shift();
      draw();
    }
    lastTotals = now;
  } catch (e) { /* the next sample tries again */ }
}

function draw() {
  const canvas = $("#activity");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, slot = w / (600 / ACTIVITY_EVERY_S);
  g.clearRect(0, 0, w, h);
  const most = Math.max(1, ...activity.map((a) => a.requests));
  const slowest = Math.max(0.001, ...activity.map((a) => a.meanS || 0));
  g.fillStyle = "#37a";
  activity.forEach((a, i) => {
    const bar = (a.requests / most) * (h - 10);
    g.fillRect(w - (activity.length - i) * slot, h - bar, slot - 1, bar);
  });
  g.strokeStyle = "#c80";
  g.beginPath();
  activity.forEach((a, i) => {
    if (a.meanS === null) return;
    const x = w - (activity.length - i - 0.5) * slot, y = h - (a.meanS / slowest) * (h - 10);
    g.lineTo(x, y);
  });
  g.stroke();
  const total = activity.reduce((n, a) => n + a.requests, 0);
  const timed = activity.filter((a) => a.meanS !== null);
  const mean = timed.length ? timed.reduce((n, a) => n + a.meanS, 0) / timed.length : null;
  $("#activity-text").textContent = `${total} requests` +
    (mean === null ? "" : `, mean latency ${mean.toFixed(2)} s (line; bars: requests per ${ACTIVITY_EVERY_S} s)`);
}

sample();
setInterval(sample, ACTIVITY_EVERY_S * 1000);
setInterval(refresh, 5000);
setInterval(tick, 1000);
