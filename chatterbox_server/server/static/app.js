// The web page: register voices (file or microphone), speak text and hear it while it streams,
// watch the server's load. Plain ES module, no dependencies, works offline.

const SAMPLE_RATE = 24000; // the server's PCM: 16-bit little-endian mono at 24 kHz
const WAV_HEADER_BYTES = 44; // the streamed WAV's header (its sizes say "unknown length")
const PLAYBACK_LEAD_S = 0.05; // schedule each chunk at least this far ahead of the clock
const METRICS_INTERVAL_MS = 2000;
const MIN_CLIP_S = 5;
const MAX_CLIP_S = 30;
const RECORD_LIMIT_S = MAX_CLIP_S - 0.5; // stop a little early: the encoded clip runs slightly longer
const VOICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const KEY_STORAGE = "chatterbox.apiKey";
const VOICE_STORAGE = "chatterbox.voice";
// The paralinguistic tags the model speaks (chatterbox_server/text/normalize.py TAGS), commonest first.
const TAGS = [
  "[laugh]", "[chuckle]", "[sigh]", "[gasp]", "[cough]", "[clear throat]", "[sniff]", "[groan]", "[shush]",
  "[whispering]", "[happy]", "[sarcastic]", "[angry]", "[surprised]", "[fear]", "[crying]", "[dramatic]",
  "[narration]", "[advertisement]",
];

const $ = (id) => document.getElementById(id);

// Figures of the latest request, for people (the page) and for tests (window.ttsStats).
const stats = { samplesScheduled: 0, audioSeconds: 0, firstAudioMs: null, rtf: null, requests: 0, chunksScheduled: 0 };
window.ttsStats = stats;

// ----- storage (localStorage may be unavailable: private modes, file://) ------------------------

function stored(name) {
  try {
    return localStorage.getItem(name) || "";
  } catch {
    return "";
  }
}

function store(name, value) {
  try {
    if (value) localStorage.setItem(name, value);
    else localStorage.removeItem(name);
  } catch {
    /* the value then lasts for this page only */
  }
}

// ----- API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status = 0, type = "") {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** The server's error message (its JSON error shape), or a readable line for anything else. */
async function errorFrom(response) {
  let type = "";
  let message = "";
  try {
    const body = await response.json();
    type = body?.error?.type || "";
    message = body?.error?.message || (typeof body?.detail === "string" ? body.detail : "");
  } catch {
    /* not JSON: a proxy's page, say */
  }
  if (!message) message = `the server answered ${response.status} ${response.statusText}`.trim();
  if (response.status === 401) message += " (enter the API key above)";
  return new ApiError(message, response.status, type);
}

function networkError(error) {
  if (error?.name === "AbortError") return error;
  if (error instanceof ApiError) return error;
  return new ApiError("Cannot reach the server (network error). Check that it is running and try again.");
}

/** fetch with the key; resolves to the Response when it is 2xx, throws ApiError otherwise. */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (error) {
    throw networkError(error);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

// ----- messages ----------------------------------------------------------------------------------

function showError(error) {
  if (error?.name === "AbortError") return;
  const message = error instanceof ApiError ? error.message : `Something went wrong: ${error?.message || error}`;
  $("alert-text").textContent = message;
  $("alert").hidden = false;
}

function clearError() {
  $("alert").hidden = true;
  $("alert-text").textContent = "";
}

function setStatus(state, text) {
  const el = $("tts-status");
  el.dataset.state = state;
  el.textContent = text;
}

// ----- health ------------------------------------------------------------------------------------

async function loadHealth() {
  try {
    const response = await fetch("/health", { headers: authHeaders() });
    const health = await response.json();
    const parts = [health.model_id, health.device, health.dtype].filter(Boolean);
    $("server-info").textContent =
      health.status === "ok" ? `Ready · ${parts.join(" · ")}` : `Server ${health.status || "not ready"}…`;
    $("stand-in-banner").hidden = health.stand_in !== true;
    if (health.status !== "ok") setTimeout(loadHealth, 3000);
  } catch {
    $("server-info").textContent = "Server unreachable";
    setTimeout(loadHealth, 5000);
  }
}

// ----- voices ------------------------------------------------------------------------------------

function formatCreated(value) {
  if (value === null || value === undefined || value === "") return "–";
  let date;
  if (typeof value === "number") date = new Date(value * 1000);
  else if (/^\d+(\.\d+)?$/.test(String(value))) date = new Date(Number(value) * 1000);
  else date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function renderVoices(voices) {
  const list = $("voice-list");
  list.replaceChildren();
  for (const voice of voices) {
    const row = document.createElement("tr");
    row.dataset.voiceId = voice.voice_id;
    const id = document.createElement("td");
    id.className = "voice-id";
    id.textContent = voice.voice_id;
    const duration = document.createElement("td");
    duration.className = "nowrap";
    duration.textContent = typeof voice.duration === "number" ? `${voice.duration.toFixed(1)} s` : "–";
    const created = document.createElement("td");
    created.textContent = formatCreated(voice.created_at);
    const actions = document.createElement("td");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link-button danger";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete voice ${voice.voice_id}`);
    remove.addEventListener("click", () => deleteVoice(voice.voice_id));
    actions.append(remove);
    row.append(id, duration, created, actions);
    list.append(row);
  }
  $("voice-empty").hidden = voices.length > 0;

  const select = $("voice-select");
  const wanted = select.value || stored(VOICE_STORAGE);
  select.replaceChildren();
  if (!voices.length) select.append(new Option("(register a voice first)", ""));
  for (const voice of voices) select.append(new Option(voice.voice_id, voice.voice_id));
  if (voices.some((v) => v.voice_id === wanted)) select.value = wanted;
}

async function loadVoices() {
  try {
    const response = await api("/voices");
    const body = await response.json();
    renderVoices(body.voices || []);
    return true;
  } catch (error) {
    showError(error);
    return false;
  }
}

async function deleteVoice(voiceId) {
  if (!window.confirm(`Delete voice '${voiceId}'? Requests naming it will then fail.`)) return;
  try {
    await api(`/voices/${encodeURIComponent(voiceId)}`, { method: "DELETE" });
    clearError();
  } catch (error) {
    showError(error);
  }
  await loadVoices();
}

// The clip to register: the file chosen or the latest recording, whichever came last.
let pendingClip = null; // {blob, name}

async function registerVoice(event) {
  event.preventDefault();
  const voiceId = $("voice-id").value.trim();
  if (voiceId && !VOICE_ID_PATTERN.test(voiceId)) {
    showError(new ApiError("A voice id is 1–64 letters, digits, '-' or '_'."));
    $("voice-id").focus();
    return;
  }
  if (!pendingClip) {
    showError(new ApiError("Choose an audio file or record a clip first."));
    return;
  }
  const form = new FormData();
  form.append("voice_file", pendingClip.blob, pendingClip.name);
  if (voiceId) form.append("voice_id", voiceId);
  const button = $("register-button");
  button.disabled = true;
  $("register-status").textContent = "Registering…";
  try {
    const response = await api("/voices/register", { method: "POST", body: form });
    const body = await response.json();
    clearError();
    $("register-status").textContent = `Registered '${body.voice_id}' (${Number(body.duration).toFixed(1)} s).`;
    $("voice-select").value = body.voice_id; // kept by renderVoices if the list has it
    store(VOICE_STORAGE, body.voice_id);
    await loadVoices();
    $("voice-select").value = body.voice_id;
  } catch (error) {
    $("register-status").textContent = "";
    showError(error);
  } finally {
    button.disabled = false;
  }
}

// ----- microphone --------------------------------------------------------------------------------

let recorder = null;
let recordTimer = null;
let recordStart = 0;
let previewUrl = null;

function formatClock(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function micErrorMessage(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was refused. Allow the microphone for this page in the browser, or upload a file instead.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone found. Connect one, or upload a file instead.";
    case "NotReadableError":
      return "The microphone is in use by another program or cannot be read.";
    default:
      return `Cannot record: ${error?.message || error}`;
  }
}

async function startRecording() {
  clearError();
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    showError(new ApiError("Recording needs a secure page (https or localhost) in a browser with MediaRecorder; upload a file instead."));
    return;
  }
  audioContext(); // created inside the click, so decoding the clip later is allowed
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false } });
  } catch (error) {
    showError(new ApiError(micErrorMessage(error)));
    $("record-info").textContent = "";
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (e) => e.data.size && chunks.push(e.data));
  recorder.addEventListener("stop", async () => {
    stream.getTracks().forEach((t) => t.stop());
    clearInterval(recordTimer);
    $("record-start").disabled = false;
    $("record-stop").disabled = true;
    $("record-start").classList.remove("recording");
    const recorded = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
    recorder = null;
    await useRecording(recorded);
  });
  recorder.start(250);
  recordStart = performance.now();
  $("record-timer").textContent = "0:00";
  $("record-info").textContent = `Recording… speak for ${MIN_CLIP_S}–${MAX_CLIP_S} s.`;
  $("record-start").disabled = true;
  $("record-start").classList.add("recording");
  $("record-stop").disabled = false;
  $("record-stop").focus();
  recordTimer = setInterval(() => {
    const elapsed = (performance.now() - recordStart) / 1000;
    $("record-timer").textContent = formatClock(elapsed);
    if (elapsed >= RECORD_LIMIT_S) stopRecording();
  }, 200);
}

function stopRecording() {
  if (recorder && recorder.state !== "inactive") recorder.stop();
}

/** The server reads WAV/FLAC/OGG/MP3, not the browser's WebM: decode the recording and send WAV. */
async function useRecording(recorded) {
  let blob = recorded;
  let name = "recording.webm";
  let seconds = (performance.now() - recordStart) / 1000;
  try {
    const decoded = await audioContext().decodeAudioData(await recorded.arrayBuffer());
    const mono = new Float32Array(decoded.length);
    for (let c = 0; c < decoded.numberOfChannels; c++) {
      const channel = decoded.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / decoded.numberOfChannels;
    }
    blob = wavBlob([floatToInt16(mono)], decoded.sampleRate);
    name = "recording.wav";
    seconds = decoded.duration;
  } catch {
    /* send the recording as it is; the server says if it cannot read it */
  }
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(blob);
  $("record-preview").src = previewUrl;
  $("record-preview").hidden = false;
  $("voice-file").value = "";
  pendingClip = { blob, name };
  const hint = seconds < MIN_CLIP_S ? ` Too short: a voice needs at least ${MIN_CLIP_S} s; record again.` : " Ready to register.";
  $("record-info").textContent = `Recorded ${seconds.toFixed(1)} s.${hint}`;
}

// ----- audio -------------------------------------------------------------------------------------

let ctx = null;

/** The one AudioContext, created or resumed in a click (browsers' autoplay policy). */
function audioContext() {
  if (!ctx) ctx = new (window.AudioContext || window.webkitAudioContext)();
  if (ctx.state === "suspended") ctx.resume();
  return ctx;
}

function floatToInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

/** A WAV file (16-bit mono PCM) with its real length, from Int16Array chunks. */
function wavBlob(chunks, sampleRate = SAMPLE_RATE) {
  const samples = chunks.reduce((n, c) => n + c.length, 0);
  const dataBytes = samples * 2;
  const header = new DataView(new ArrayBuffer(WAV_HEADER_BYTES));
  const text = (offset, s) => [...s].forEach((ch, i) => header.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  text(8, "WAVE");
  text(12, "fmt ");
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true); // byte rate
  header.setUint16(32, 2, true); // block align
  header.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  header.setUint32(40, dataBytes, true);
  const body = new Uint8Array(dataBytes);
  const view = new DataView(body.buffer);
  let offset = 0;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++, offset += 2) view.setInt16(offset, chunk[i], true);
  }
  return new Blob([header.buffer, body], { type: "audio/wav" });
}

// ----- speak -------------------------------------------------------------------------------------

let current = null; // {controller, sources, stopped}
let downloadUrl = null;

function showFigures() {
  $("stat-first-audio").textContent = stats.firstAudioMs === null ? "–" : String(Math.round(stats.firstAudioMs));
  $("stat-audio-length").textContent = stats.samplesScheduled ? stats.audioSeconds.toFixed(2) : "–";
  $("stat-rtf").textContent = stats.rtf === null ? "–" : stats.rtf.toFixed(3);
}

function offerDownload(chunks, voiceId) {
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = null;
  const link = $("download");
  if (!chunks.length) {
    link.hidden = true;
    link.removeAttribute("href");
    return;
  }
  downloadUrl = URL.createObjectURL(wavBlob(chunks));
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  link.href = downloadUrl;
  link.download = `${voiceId}-${stamp}.wav`;
  link.hidden = false;
}

function speakOptions(form) {
  const temperature = Number($("temperature").value);
  form.append("temperature", String(temperature));
  const topP = Number($("top-p").value);
  if (temperature > 0 && topP < 1) form.append("top_p", String(topP));
  const seed = $("seed").value.trim();
  if (seed !== "") form.append("seed", seed);
  form.append("speed", $("speed").value);
}

async function speak(event) {
  event.preventDefault();
  const ac = audioContext(); // in the click: playback may start without a further gesture
  stopSpeaking(false);
  clearError();
  const voiceId = $("voice-select").value;
  const text = $("text").value;
  if (!voiceId) {
    showError(new ApiError("Choose a voice (register one first)."));
    return;
  }
  if (!text.trim()) {
    showError(new ApiError("Type some text to speak."));
    $("text").focus();
    return;
  }
  const seed = $("seed").value.trim();
  if (seed !== "" && !/^\d+$/.test(seed)) {
    showError(new ApiError("The seed is a whole number, 0 or more (or empty for a random one)."));
    $("seed").focus();
    return;
  }
  store(VOICE_STORAGE, voiceId);

  const form = new FormData();
  form.append("text", text);
  form.append("voice_id", voiceId);
  form.append("stream", "true");
  speakOptions(form);

  const controller = new AbortController();
  const job = { controller, sources: [], stopped: false };
  current = job;
  Object.assign(stats, { samplesScheduled: 0, audioSeconds: 0, firstAudioMs: null, rtf: null, chunksScheduled: 0 });
  stats.requests += 1;
  showFigures();
  offerDownload([], voiceId);
  $("speak-button").disabled = true;
  $("stop-button").disabled = false;
  setStatus("speaking", "Waiting for the first audio…");

  const chunks = [];
  const started = performance.now();
  let nextStartTime = 0;
  let header = new Uint8Array(0);
  let odd = null; // a byte of a sample split across reads
  try {
    const response = await api("/tts", { method: "POST", body: form, signal: controller.signal });
    const reader = response.body.getReader();
    for (;;) {
      let { value, done } = await reader.read();
      if (done) break;
      if (header.length < WAV_HEADER_BYTES) {
        const take = Math.min(WAV_HEADER_BYTES - header.length, value.length);
        header = concat(header, value.subarray(0, take));
        value = value.subarray(take);
        if (header.length === WAV_HEADER_BYTES && String.fromCharCode(...header.subarray(0, 4)) !== "RIFF") {
          throw new ApiError("The server sent something other than WAV audio.");
        }
      }
      if (odd) {
        value = concat(odd, value);
        odd = null;
      }
      const usable = value.length - (value.length % 2);
      if (usable < value.length) odd = value.slice(usable);
      if (!usable) continue;
      const view = new DataView(value.buffer, value.byteOffset, usable);
      const pcm = new Int16Array(usable / 2);
      const floats = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) {
        pcm[i] = view.getInt16(i * 2, true);
        floats[i] = pcm[i] / 32768;
      }
      if (stats.firstAudioMs === null) {
        stats.firstAudioMs = performance.now() - started;
        setStatus("speaking", "Speaking…");
      }
      chunks.push(pcm);
      const buffer = ac.createBuffer(1, floats.length, SAMPLE_RATE);
      buffer.copyToChannel(floats, 0);
      const source = ac.createBufferSource();
      source.buffer = buffer;
      source.connect(ac.destination);
      const at = Math.max(nextStartTime, ac.currentTime + PLAYBACK_LEAD_S);
      source.start(at);
      nextStartTime = at + buffer.duration;
      job.sources.push(source);
      source.addEventListener("ended", () => {
        const i = job.sources.indexOf(source);
        if (i >= 0) job.sources.splice(i, 1);
        if (!job.sources.length && current === job && !$("speak-button").disabled) $("stop-button").disabled = true;
      });
      stats.samplesScheduled += pcm.length;
      stats.chunksScheduled += 1;
      stats.audioSeconds = stats.samplesScheduled / SAMPLE_RATE;
      showFigures();
    }
    const wall = (performance.now() - started) / 1000;
    stats.rtf = stats.audioSeconds > 0 ? wall / stats.audioSeconds : null;
    showFigures();
    offerDownload(chunks, voiceId);
    if (!stats.samplesScheduled) throw new ApiError("The server sent no audio.");
    setStatus("done", `Done: ${stats.audioSeconds.toFixed(2)} s of audio in ${wall.toFixed(2)} s.`);
  } catch (error) {
    if (current !== job) return; // replaced by a newer request, which owns the page now
    if (error?.name === "AbortError" || job.stopped) {
      offerDownload(chunks, voiceId);
      setStatus("idle", chunks.length ? `Stopped after ${stats.audioSeconds.toFixed(2)} s of audio.` : "Stopped.");
    } else {
      const shown = networkError(error);
      showError(shown);
      offerDownload(chunks, voiceId);
      setStatus("error", `Failed: ${shown.message}`);
    }
  } finally {
    if (current === job) {
      $("speak-button").disabled = false;
      $("stop-button").disabled = job.sources.length === 0;
    }
  }
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Cancel the request and silence what is scheduled. */
function stopSpeaking(announce = true) {
  const job = current;
  if (!job) return;
  job.stopped = true;
  job.controller.abort();
  for (const source of job.sources) {
    try {
      source.stop();
    } catch {
      /* not started yet or already ended */
    }
  }
  job.sources = [];
  $("stop-button").disabled = true;
  if (announce && $("tts-status").dataset.state !== "speaking") setStatus("idle", "Stopped.");
}

function insertTag(tag) {
  const area = $("text");
  const start = area.selectionStart ?? area.value.length;
  const end = area.selectionEnd ?? start;
  const before = area.value.slice(0, start);
  const after = area.value.slice(end);
  const lead = before && !/\s$/.test(before) ? " " : "";
  const trail = after && !/^\s/.test(after) ? " " : "";
  area.focus();
  area.setRangeText(lead + tag + trail, start, end, "end");
}

// ----- metrics -----------------------------------------------------------------------------------

let metricsTimer = null;

async function pollMetrics() {
  try {
    const response = await fetch("/metrics?format=json", { headers: authHeaders() });
    if (!response.ok) throw new Error(String(response.status));
    const m = await response.json();
    $("metric-in-flight").textContent = String(m.concurrent_requests ?? "–");
    $("metric-queued").textContent = String(m.queued_requests ?? "–");
    $("metric-rtf").textContent = typeof m.average_rtf === "number" ? m.average_rtf.toFixed(3) : "–";
    $("metric-total").textContent = String(m.total_requests ?? "–");
    const slots = m.max_concurrent_allowed ? `${m.max_concurrent_allowed} slots` : "";
    $("metrics-note").textContent = slots ? `live · ${slots}` : "live";
  } catch {
    $("metrics-note").textContent = "metrics unavailable";
    for (const id of ["metric-in-flight", "metric-queued", "metric-rtf", "metric-total"]) $(id).textContent = "–";
  }
}

function startMetrics() {
  if (metricsTimer !== null) return;
  pollMetrics();
  metricsTimer = setInterval(pollMetrics, METRICS_INTERVAL_MS);
}

function stopMetrics() {
  clearInterval(metricsTimer);
  metricsTimer = null;
}

// ----- wiring ------------------------------------------------------------------------------------

function bindRange(id, format) {
  const input = $(id);
  const output = $(`${id}-value`);
  const update = () => (output.textContent = format(Number(input.value)));
  input.addEventListener("input", update);
  update();
}

function init() {
  $("api-key").value = stored(KEY_STORAGE);
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    store(KEY_STORAGE, $("api-key").value.trim());
    clearError();
    if (await loadVoices()) $("register-status").textContent = "";
    pollMetrics();
  });
  $("alert-close").addEventListener("click", clearError);

  $("voice-file").addEventListener("change", () => {
    const file = $("voice-file").files[0];
    pendingClip = file ? { blob: file, name: file.name } : null;
    if (file) $("record-info").textContent = "";
  });
  $("record-start").addEventListener("click", startRecording);
  $("record-stop").addEventListener("click", stopRecording);
  $("register-form").addEventListener("submit", registerVoice);
  $("voices-refresh").addEventListener("click", () => {
    clearError();
    loadVoices();
  });

  for (const tag of TAGS) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "tag";
    button.textContent = tag;
    button.setAttribute("aria-label", `Insert ${tag}`);
    button.addEventListener("click", () => insertTag(tag));
    $("tag-buttons").append(button);
  }
  bindRange("temperature", (v) => v.toFixed(2));
  bindRange("top-p", (v) => v.toFixed(2));
  bindRange("speed", (v) => `${v.toFixed(2)}×`);
  $("speak-form").addEventListener("submit", speak);
  $("stop-button").addEventListener("click", () => stopSpeaking(true));

  document.addEventListener("visibilitychange", () => (document.hidden ? stopMetrics() : startMetrics()));
  if (!document.hidden) startMetrics();
  loadHealth();
  loadVoices();
}

init();
