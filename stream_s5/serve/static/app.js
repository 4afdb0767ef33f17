// stream-s5 live monitor: captures the microphone (or a dropped WAV) at the audio context's rate,
// streams it to the server (protocol v1, docs/protocol.md), and shows what comes back: per-class SED
// probability and tracker state, events, latency counters; plays the separated classes you pick.
"use strict";

const AUDIO_IN = 1, CLASS_AUDIO = 2, BACKFILL = 3, STEP = 4, HEADER = 8;
const FRAME_S = 0.02;  // input frame length sent to the server
// closes after which the stream was lost, not refused: its replica died, drained or restarted (docs/protocol.md)
const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012]), MAX_RECONNECTS = 5;
const $ = (id) => document.getElementById(id);

const state = {
  ws: null, ctx: null, player: null, playCtx: null, source: null, media: null, capture: null, analyser: null,
  seq: 0, pending: [], pendingFrames: 0, sentAt: new Map(), lags: [], classes: [], rate: 16000,
  listen: new Set(), solo: null, mute: new Set(), audioFrames: 0, backfillFrames: 0, events: [],
  rows: new Map(), ready: null, timing: null, mix: new Map(), streaming: false, reconnects: [],
};
window.s5 = state;  // read by tests and assistive tools

function setStatus(text, kind) { const s = $("status"); s.textContent = text; s.dataset.state = kind; }

function wsURL() {
  const token = new URLSearchParams(location.search).get("token");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws${token ? "?token=" + encodeURIComponent(token) : ""}`;
}

// ---------------------------------------------------------------- rows
function buildRows(classes) {
  const rows = $("rows");
  rows.textContent = "";
  state.rows.clear();
  for (const name of classes) {
    const row = document.createElement("div");
    row.className = "row"; row.setAttribute("role", "row");
    row.dataset.class = name; row.dataset.active = "false"; row.dataset.frames = "0";
    const label = document.createElement("span"); label.className = "name"; label.textContent = name;
    const prob = document.createElement("span"); prob.className = "prob"; prob.textContent = "0.00";
    const canvas = document.createElement("canvas"); canvas.width = 600; canvas.height = 18;
    const buttons = document.createElement("span");
    for (const [action, text] of [["listen", "listen"], ["solo", "solo"], ["mute", "mute"]]) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "small"; b.textContent = text; b.dataset.action = action;
      b.setAttribute("aria-pressed", "false"); b.setAttribute("aria-label", `${text} ${name}`);
      b.addEventListener("click", () => toggle(name, action));
      buttons.appendChild(b);
    }
    row.append(label, prob, canvas, buttons);
    rows.appendChild(row);
    state.rows.set(name, { row, prob, canvas, g: canvas.getContext("2d"), buttons });
  }
}

function toggle(name, action) {
  if (action === "listen") state.listen.has(name) ? state.listen.delete(name) : state.listen.add(name);
  if (action === "solo") state.solo = state.solo === name ? null : name;
  if (action === "mute") state.mute.has(name) ? state.mute.delete(name) : state.mute.add(name);
  for (const [n, r] of state.rows) {
    for (const b of r.buttons.children) {
      const on = b.dataset.action === "listen" ? state.listen.has(n)
        : b.dataset.action === "solo" ? state.solo === n : state.mute.has(n);
      b.setAttribute("aria-pressed", String(on));
    }
  }
  ensurePlayer();
  sendSubscriptions();
}

function audible(name) {
  if (state.mute.has(name)) return false;
  return state.solo ? state.solo === name : state.listen.has(name);
}

function subscribed() {
  const s = new Set(state.listen); if (state.solo) s.add(state.solo);
  return [...s];
}

function sendSubscriptions() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN && state.ready)
    state.ws.send(JSON.stringify({ type: "subscribe", classes: subscribed() }));
}

function scrollRow(r, p, active) {
  const { g, canvas } = r, w = canvas.width, h = canvas.height;
  g.drawImage(canvas, -2, 0);
  g.fillStyle = `rgba(45,108,223,${Math.min(1, p).toFixed(3)})`; g.fillRect(w - 2, 0, 2, h - 5);
  g.fillStyle = active ? "#6fd16f" : "#0b0d10"; g.fillRect(w - 2, h - 4, 2, 4);
}

// ---------------------------------------------------------------- server messages
function onMessage(ev) {
  if (typeof ev.data !== "string") return onBinary(new DataView(ev.data), ev.data);
  onJSON(JSON.parse(ev.data));
}

function onJSON(m) {
  if (m.type === "ready") {
    state.ready = m; state.classes = m.classes; state.rate = m.rate;
    buildRows(m.classes);
    $("replica").textContent = m.replica;
    $("algo").textContent = `${(1000 * m.algorithmic_latency / m.rate).toFixed(0)} ms`;
    setStatus("streaming", "streaming"); state.streaming = true;
    sendSubscriptions();
  } else if (m.type === "activity") {
    const active = new Set(m.active);
    m.probs.forEach((p, i) => {
      const r = state.rows.get(state.classes[i]);
      r.prob.textContent = p.toFixed(2);
      r.row.dataset.active = String(active.has(state.classes[i]));
      scrollRow(r, p, active.has(state.classes[i]));
    });
  } else if (m.type === "output") {
    if (m.input_seq !== null && state.sentAt.has(m.input_seq)) {
      state.lags.push(performance.now() - state.sentAt.get(m.input_seq));
      if (state.lags.length > 2000) state.lags.shift();
      for (const k of state.sentAt.keys()) { if (k <= m.input_seq) state.sentAt.delete(k); else break; }
    }
    for (const e of m.events) addEvent(e);
    if (m.final) finish("finished");
  } else if (m.type === "timing") {
    state.timing = m; showCounters();
  } else if (m.type === "error") {
    setStatus(`server: ${m.message}`, "error");
  } else if (m.type === "end") {
    state.timing = m.timing; showCounters();
  }
}

function onBinary(view, buffer) {
  const kind = view.getUint8(0), index = view.getUint8(1), start = view.getUint32(4, true);
  if (kind === STEP) return onStep(view, buffer);
  onAudio(kind, state.classes[index], start, new Float32Array(buffer.slice(HEADER)));
}

// one STEP frame (docs/protocol.md): the output JSON (with the activity when due), then its audio parts
function onStep(view, buffer) {
  const length = view.getUint32(HEADER, true), body = HEADER + 4 + length;
  const m = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, HEADER + 4, length)));
  onJSON(m);
  if (m.activity) onJSON(m.activity);
  let offset = body;
  for (const name of m.audio) {
    onAudio(CLASS_AUDIO, name, m.start, new Float32Array(buffer, offset, m.length)); offset += 4 * m.length;
  }
  for (const b of m.backfills) { onAudio(BACKFILL, b.label, b.start, null); offset += 4 * b.length; }
}

function onAudio(kind, name, start, samples) {
  const r = state.rows.get(name);
  if (kind === BACKFILL) { state.backfillFrames++; return; }  // too late to play; the files get it
  if (kind !== CLASS_AUDIO || !r) return;
  state.audioFrames++;
  r.row.dataset.frames = String(Number(r.row.dataset.frames) + 1);
  $("audio-frames").textContent = String(state.audioFrames);
  if (!state.player || !audible(name)) return;
  // mix the audible classes of one output block, then hand it to the player
  let mixed = state.mix.get(start);
  if (!mixed) { mixed = new Float32Array(samples.length); state.mix.set(start, mixed); }
  for (let i = 0; i < samples.length; i++) mixed[i] += samples[i];
  queueMicrotask(flushMix);
}

function flushMix() {
  for (const [start, block] of state.mix) { state.player.port.postMessage(block, [block.buffer]); }
  state.mix.clear();
}

function addEvent(e) {
  const li = document.createElement("li");
  li.dataset.class = e.label;
  // a retracted onset (its event was shorter than the minimum) is struck out, not silently kept
  li.textContent = e.retracted ? `${e.label} ${e.onset.toFixed(2)} s retracted (shorter than the minimum event)`
    : e.offset === null ? `${e.label} on at ${e.onset.toFixed(2)} s`
    : `${e.label} ${e.onset.toFixed(2)}–${e.offset.toFixed(2)} s (peak ${e.peak.toFixed(2)})`;
  if (e.retracted) li.classList.add("retracted");
  state.events.push(e);
  const list = $("events"); list.prepend(li);
  while (list.children.length > 100) list.lastChild.remove();
}

function pct(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function showCounters() {
  const t = state.timing || {}, f = (v) => (v === null || v === undefined ? "–" : v.toFixed(1));
  $("hop").textContent = `${f(t.hop_ms_p50)} / ${f(t.hop_ms_p99)} ms`;
  $("budget").textContent = `${f(t.budget_ms)} ms (hop ${f(t.hop_ms)} ms)`;
  $("lag").textContent = `${f(pct(state.lags, 0.5))} / ${f(pct(state.lags, 0.99))} ms`;
  $("dropped").textContent = `${t.dropped_frames ?? "–"} / ${t.late_outputs ?? "–"}`;
  $("streams").textContent = `${t.streams ?? "–"} of ${t.capacity ?? "–"}`;
}

// ---------------------------------------------------------------- audio in
async function ensureContext() {
  if (!state.ctx) {
    state.ctx = new AudioContext();
    await state.ctx.audioWorklet.addModule("/static/capture-worklet.js");
  }
  await state.ctx.resume();
  return state.ctx;
}

async function ensurePlayer() {
  if (state.player || !state.ready) return;
  state.playCtx = new AudioContext({ sampleRate: state.rate });  // the browser resamples to the device
  await state.playCtx.audioWorklet.addModule("/static/player-worklet.js");
  state.player = new AudioWorkletNode(state.playCtx, "s5-player");
  state.player.connect(state.playCtx.destination);
  await state.playCtx.resume();
}

function sendAudio(block, force = false) {
  state.pending.push(block); state.pendingFrames += block.length;
  const frame = Math.round(FRAME_S * state.ctx.sampleRate);
  if ((state.pendingFrames < frame && !force) || !state.pendingFrames || !state.ready
      || state.ws.readyState !== WebSocket.OPEN) return;
  const all = new Float32Array(state.pendingFrames); let o = 0;
  for (const b of state.pending) { all.set(b, o); o += b.length; }
  state.pending = []; state.pendingFrames = 0;
  // audio held back while reconnecting can exceed one frame's size limit: split it
  const most = Math.floor((state.ready.limits.max_frame_bytes) / 4);
  for (let i = 0; i < all.length; i += most) {
    const part = all.subarray(i, i + most);
    const buf = new ArrayBuffer(HEADER + 4 * part.length), view = new DataView(buf);
    view.setUint8(0, AUDIO_IN); view.setUint32(4, state.seq, true);
    new Float32Array(buf, HEADER).set(part);
    state.sentAt.set(state.seq, performance.now()); state.seq++;
    state.ws.send(buf);
  }
}

function drawSpectrogram() {
  if (!state.analyser) return;
  const c = $("spectrogram"), g = c.getContext("2d"), bins = new Uint8Array(state.analyser.frequencyBinCount);
  state.analyser.getByteFrequencyData(bins);
  g.drawImage(c, -2, 0);
  const usable = Math.floor(bins.length * Math.min(1, 8000 / (state.ctx.sampleRate / 2)));  // up to 8 kHz
  for (let y = 0; y < c.height; y++) {
    const v = bins[Math.floor((1 - y / c.height) * (usable - 1))];
    g.fillStyle = `rgb(${v},${Math.floor(v * 0.7)},${Math.floor(40 + v * 0.4)})`; g.fillRect(c.width - 2, y, 2, 1);
  }
  if (state.streaming) requestAnimationFrame(drawSpectrogram);
}

function connect(onReady, resume = false) {
  // resume: after a lost stream, audio captured meanwhile is kept and sent to the new one
  state.ready = null; state.seq = 0; state.sentAt.clear();
  if (!resume) { state.pending = []; state.pendingFrames = 0; }
  const ws = new WebSocket(wsURL());
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(JSON.stringify({
    type: "start", version: 1, rate: state.ctx.sampleRate, channels: 1, format: "f32le",
    classes: "auto", subscribe: subscribed(), client: "page", framing: "step",
  }));
  ws.onmessage = (ev) => { onMessage(ev); if (state.ready && onReady) { const f = onReady; onReady = null; f(); } };
  ws.onclose = (ev) => {
    if (!state.streaming || state.ws !== ws) return;
    if (RECONNECT_CODES.has(ev.code) && state.reconnects.length < MAX_RECONNECTS) return reconnect(ev);
    finish(ev.reason ? `closed: ${ev.reason}` : "connection closed");
  };
  ws.onerror = () => { if (!state.streaming) setStatus("connection error", "error"); };
  state.ws = ws;
}

function reconnect(ev) {
  // Behind Ray Serve the new connection lands on a live replica; the stream starts again with a fresh state.
  const lost = state.lostReplica || (state.ready ? state.ready.replica : "?");
  const record = { lost, code: ev.code, reason: ev.reason, replica: null };
  state.reconnects.push(record); state.lostReplica = lost;
  $("reconnects").textContent = String(state.reconnects.length);
  setStatus(`replica ${lost} lost (${ev.reason || "close " + ev.code}); reconnecting…`, "reconnecting");
  const delay = Math.min(2000, 200 * 2 ** (state.reconnects.length - 1));
  setTimeout(() => connect(() => {
    record.replica = state.ready.replica; state.lostReplica = null;
    setStatus(`reconnected to replica ${record.replica} with a fresh state (replica ${lost} lost)`, "streaming");
  }, true), delay);
}

async function startGraph(sourceNode) {
  state.capture = new AudioWorkletNode(state.ctx, "s5-capture");
  state.capture.port.onmessage = (e) => sendAudio(e.data);
  state.analyser = state.ctx.createAnalyser(); state.analyser.fftSize = 1024;
  sourceNode.connect(state.capture); sourceNode.connect(state.analyser);
  const sink = state.ctx.createGain(); sink.gain.value = 0;  // keeps the worklet pulled, silently
  state.capture.connect(sink).connect(state.ctx.destination);
  state.source = sourceNode;
  $("stop").disabled = false; $("mic").disabled = true;
  requestAnimationFrame(drawSpectrogram);
}

async function startMic() {
  await ensureContext();
  setStatus("asking for the microphone…", "idle");
  const media = await navigator.mediaDevices.getUserMedia({ audio: {
    echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 } });
  state.media = media;
  connect(() => startGraph(state.ctx.createMediaStreamSource(media)));
}

async function startFile(file) {
  await ensureContext();
  const audio = await state.ctx.decodeAudioData(await file.arrayBuffer());  // at the context's rate
  connect(() => {
    const node = state.ctx.createBufferSource(); node.buffer = audio;
    node.onended = () => endStream();
    startGraph(node); node.start();
  });
}

function endStream() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) sendAudio(new Float32Array(0), true);
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ type: "end" }));
  stopCapture();
}

function stopCapture() {
  if (state.source) { try { state.source.disconnect(); if (state.source.stop) state.source.stop(); } catch (e) {} }
  if (state.media) state.media.getTracks().forEach((t) => t.stop());
  state.source = state.media = null;
  $("mic").disabled = false; $("stop").disabled = true;
}

function finish(text) {
  state.streaming = false; stopCapture(); setStatus(text, text === "finished" ? "idle" : "error");
}

$("mic").addEventListener("click", () => startMic().catch((e) => setStatus(`microphone: ${e.message}`, "error")));
$("stop").addEventListener("click", () => endStream());
$("file").addEventListener("change", (e) => e.target.files[0] && startFile(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  const file = e.dataTransfer.files[0];
  if (file) startFile(file).catch((err) => setStatus(`file: ${err.message}`, "error"));
});
fetch("/healthz").then((r) => r.json()).then((h) => {
  $("replica").textContent = h.replica; $("streams").textContent = `${h.streams} of ${h.capacity}`;
  if (!state.ready) { state.classes = h.classes; buildRows(h.classes); }
}).catch(() => {});
