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
      const transcribes = m.family !== "diarizer";  // a diarizer finds speakers for the others
      if (!m.default && m.installed !== false && transcribes) {
        actions.appendChild(button("make default", () =>
          json("/v1/settings/model", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify({model_id: m.id})})));
      }
      if (pulling.has(m.id)) actions.replaceChildren(...pulling.get(m.id));  // survives the table's refresh
      else if (m.installed === false) actions.appendChild(button("Pull", () => pull(m.id, actions)));
      body.appendChild(row);
      if (m.installed !== false && transcribes) {
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
  const speakers = $("#speakers").checked;
  if (speakers) form.append("response_format", "diarized_json");  // segments come with their speaker
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
        if (piece.type === "transcript.text.delta" && !speakers) $("#transcript").textContent += piece.delta;
        if (piece.type === "transcript.text.segment") $("#transcript").textContent += `${piece.speaker}: ${piece.text}\n`;
        if (piece.type === "transcript.text.done") {
          $("#transcript").textContent = speakers
            ? (piece.segments || []).map((s) => `${s.speaker}: ${s.text.trim()}`).join("\n")
            : piece.text;
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

// The microphone: live transcription through OpenAI's Realtime API (WS /v1/realtime?intent=transcription). The
// page captures the microphone as 16-bit mono PCM at 24 kHz (resampled here where the browser will not capture at
// that rate) and sends it every 100 ms as input_audio_buffer.append; the server's VAD cuts it into items, each shown
// with its deltas while it is spoken (class "partial"), then replaced by its completed transcript ("final").
const MIC_RATE = 24000;  // what audio/pcm is taken at
const MIC_SEND_MS = 100;
const MIC_HOLD_S = 10;  // audio held while the session is not open yet; older is dropped
const MIC_DELTA = "conversation.item.input_audio_transcription.delta";
const MIC_COMPLETED = "conversation.item.input_audio_transcription.completed";
const MIC_FAILED = "conversation.item.input_audio_transcription.failed";
// Each render quantum's samples (the first channel: the node mixes down to mono), posted to the page.
const MIC_WORKLET = `registerProcessor("asrpro-capture", class extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
});`;
let mic = null;  // the running capture: its socket, audio graph and the audio not sent yet
window.micDeltas = 0;  // deltas shown since the page opened (the console's tests read it)

function micStatus(text, kind) {
  $("#mic-status").textContent = text;
  $("#mic-status").className = kind || "";
}

function micItem(id) {
  const box = $("#mic-transcript");
  let item = Array.from(box.children).find((e) => e.dataset.itemId === id);
  if (!item) {
    item = document.createElement("p");
    item.className = "mic-item partial";
    item.dataset.itemId = id;
    box.appendChild(item);
  }
  return item;
}

// Linear interpolation from `from` Hz to `to` Hz over successive chunks (the position carried from one to the next).
function resampler(from, to) {
  if (from === to) return (samples) => samples;
  const step = from / to;
  let last = null;  // the previous chunk's last sample: index 0 of the next one's joined samples
  let at = 1;  // where the next output sample falls, as an index into [last, ...chunk]
  return (samples) => {
    if (!samples.length) return samples;
    if (last === null) last = samples[0];
    const value = (i) => (i === 0 ? last : samples[i - 1]);
    const out = new Float32Array(Math.max(0, Math.ceil((samples.length - at) / step) + 2));
    let n = 0;
    for (; at <= samples.length; at += step) {
      const i = Math.floor(at), f = at - i;
      out[n++] = f ? value(i) + (value(i + 1) - value(i)) * f : value(i);
    }
    at -= samples.length;
    last = samples[samples.length - 1];
    return out.subarray(0, n);
  };
}

function pcm16Base64(samples) {
  const bytes = new Uint8Array(samples.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function micHold(session, samples) {
  if (!samples.length) return;
  session.pending.push(samples);
  session.held += samples.length;
  while (session.held > MIC_HOLD_S * MIC_RATE) session.held -= session.pending.shift().length;
}

function micFlush(session) {
  const ws = session.ws;
  if (!session.open || !ws || ws.readyState !== WebSocket.OPEN || !session.held) return;
  const samples = new Float32Array(session.held);
  let at = 0;
  for (const chunk of session.pending) { samples.set(chunk, at); at += chunk.length; }
  session.pending = [];
  session.held = 0;
  ws.send(JSON.stringify({type: "input_audio_buffer.append", audio: pcm16Base64(samples)}));
}

// The audio graph: microphone -> capture node (an AudioWorklet, else a ScriptProcessor) -> muted gain -> speakers
// (a node the destination does not pull may not run).
async function micGraph(session) {
  let context, source;
  try {
    context = new AudioContext({sampleRate: MIC_RATE});
    source = context.createMediaStreamSource(session.stream);
  } catch (e) {
    // Some browsers take a microphone only at the device's rate: captured at it, resampled here.
    if (context) context.close().catch(() => {});
    context = new AudioContext();
    source = context.createMediaStreamSource(session.stream);
  }
  session.context = context;
  const resample = resampler(context.sampleRate, MIC_RATE);
  const take = (samples) => { if (mic === session) micHold(session, resample(samples)); };
  let capture = null;
  if (context.audioWorklet && window.AudioWorkletNode) {
    const url = URL.createObjectURL(new Blob([MIC_WORKLET], {type: "text/javascript"}));
    try {
      await context.audioWorklet.addModule(url);
      capture = new AudioWorkletNode(context, "asrpro-capture", {numberOfInputs: 1, numberOfOutputs: 1,
        outputChannelCount: [1], channelCount: 1, channelCountMode: "explicit"});
      capture.port.onmessage = (message) => take(message.data);
    } catch (e) {
      capture = null;
    } finally {
      URL.revokeObjectURL(url);
    }
  }
  if (!capture) {
    capture = context.createScriptProcessor(4096, 1, 1);
    capture.onaudioprocess = (e) => take(e.inputBuffer.getChannelData(0).slice(0));
  }
  const mute = context.createGain();
  mute.gain.value = 0;
  source.connect(capture);
  capture.connect(mute);
  mute.connect(context.destination);
  session.nodes = [source, capture, mute];
  await context.resume();
}

function micEvent(session, e) {
  switch (e.type) {
    case "session.created": {
      const transcription = {model: $("#upload-model").value || "whisper-1"};
      const language = $("#mic-language").value.trim();
      if (language) transcription.language = language;
      session.ws.send(JSON.stringify({type: "session.update", session: {type: "transcription", audio: {input: {
        format: {type: "audio/pcm", rate: MIC_RATE},
        transcription,
        turn_detection: {type: "server_vad", silence_duration_ms: 500},
      }}}}));
      session.open = true;
      micStatus("listening");
      break;
    }
    case "input_audio_buffer.speech_started":
      micItem(e.item_id);
      micStatus("speech", "speech");
      break;
    case "input_audio_buffer.speech_stopped":
      micStatus("listening");
      break;
    case "input_audio_buffer.committed":
      micItem(e.item_id);
      break;
    case MIC_DELTA: {
      const item = micItem(e.item_id);
      item.textContent += e.delta;
      window.micDeltas += 1;
      break;
    }
    case MIC_COMPLETED: {
      const item = micItem(e.item_id);
      item.textContent = e.transcript;
      item.className = "mic-item final";
      break;
    }
    case MIC_FAILED: {
      const item = micItem(e.item_id);
      item.className = "mic-item failed";
      item.title = e.error ? e.error.message : "";
      micStatus("transcription failed: " + item.title, "error");
      break;
    }
    case "error":
      // A client event the session could not take (it stays open), or the session ended by the server (it closes).
      session.error = e.error ? e.error.message : "error";
      micStatus("error: " + session.error, "error");
      break;
    default:
      break;
  }
}

function micSocket(session) {
  const params = new URLSearchParams({intent: "transcription"});
  if ($("#upload-model").value) params.set("model", $("#upload-model").value);
  // Browsers cannot set headers on a WebSocket: the key goes as OpenAI's subprotocol, or as ?token= where it is no
  // valid subprotocol name.
  const protocols = ["realtime"];
  const key = apiKey();
  if (key && /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(key)) protocols.push("openai-insecure-api-key." + key);
  else if (key) params.set("token", key);
  const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  const ws = new WebSocket(base + "/v1/realtime?" + params, protocols);
  session.ws = ws;
  ws.onmessage = (message) => { if (mic === session) micEvent(session, JSON.parse(message.data)); };
  ws.onclose = (close) => {
    if (mic !== session) return;  // stopped from the page
    const why = session.error || `the connection closed (${close.code}${close.reason ? ": " + close.reason : ""})`;
    stopMic("stopped: " + why, "error");
  };
}

function micTeardown(session) {
  clearInterval(session.timer);
  if (session.ws) {
    session.ws.onclose = null;
    session.ws.close(1000);
    session.ws = null;
  }
  for (const node of session.nodes) node.disconnect();
  session.nodes = [];
  if (session.stream) for (const track of session.stream.getTracks()) track.stop();
  session.stream = null;
  if (session.context) session.context.close().catch(() => {});
  session.context = null;
}

async function startMic() {
  if (mic) return;
  const session = {ws: null, context: null, stream: null, nodes: [], timer: null, pending: [], held: 0,
                   open: false, error: null};
  mic = session;
  $("#mic-start").disabled = true;
  $("#mic-stop").disabled = false;
  micStatus("starting");
  try {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this page cannot use a microphone here: it needs https (or localhost)");
    }
    // Without the call-oriented processing: nothing is played back to cancel, and noise suppression clips the
    // starts of words after a pause, which Whisper hears worse than the noise.
    session.stream = await navigator.mediaDevices.getUserMedia(
      {audio: {echoCancellation: false, noiseSuppression: false}});
    if (mic !== session) return micTeardown(session);  // stopped meanwhile
    await micGraph(session);
    if (mic !== session) return micTeardown(session);
    micStatus("connecting");
    micSocket(session);
    session.timer = setInterval(() => micFlush(session), MIC_SEND_MS);
  } catch (e) {
    if (mic === session) stopMic("stopped: " + (e.message || e.name || e), "error");
    else micTeardown(session);
  }
}

function stopMic(text, kind) {
  const session = mic;
  mic = null;
  if (session) micTeardown(session);
  $("#mic-start").disabled = false;
  $("#mic-stop").disabled = true;
  micStatus(text || "stopped", kind);
}

$("#job-form").addEventListener("submit", submitJob);
$("#mic-start").addEventListener("click", startMic);
$("#mic-stop").addEventListener("click", () => stopMic());
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
