// streamer live captions page: microphone -> AudioWorklet -> /v1/listen (pcm_f32le at the device's
// native rate), or listen-only /v1/captions. Protocol v1 only; see docs/protocol.md.
"use strict";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const TOKEN = query.get("token");
const BASE_URL = query.get("server") ||
  `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;

/** Exponential backoff with jitter so a restarting daemon is not hammered. */
class Backoff {
  constructor(first = 500, max = 10000) { this.first = first; this.max = max; this.attempt = 0; }
  next() {
    const d = Math.min(this.max, this.first * 2 ** this.attempt++);
    return d * (0.8 + 0.4 * Math.random());
  }
  reset() { this.attempt = 0; }
}

function wsUrl(path, params) {
  const u = new URL(BASE_URL + path);
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") u.searchParams.set(k, v);
  if (TOKEN) u.searchParams.set("token", TOKEN);
  return u.toString();
}

function setState(state, detail = "") {
  const el = $("state");
  el.dataset.state = state;
  el.textContent = detail ? `${state} · ${detail}` : state;
}

function info(text) { $("info").textContent = text; }

/** What the page shows: committed words steady, the tentative tail dimmed and replaced in place. */
const view = {
  words: [],           // every committed word, on one timeline (download source)
  para: null,
  committedNode: null,
  tentativeNode: null,
  lastEnd: null,

  reset() {
    this.words = [];
    $("transcript").replaceChildren();
    this.para = null;
    this.lastEnd = null;
  },

  newParagraph() {
    this.para = document.createElement("p");
    this.committedNode = document.createElement("span");
    this.committedNode.className = "committed";
    this.tentativeNode = document.createElement("span");
    this.tentativeNode.className = "tentative";
    this.para.append(this.committedNode, this.tentativeNode);
    $("transcript").append(this.para);
  },

  /** Apply one transcript event; ``offset`` shifts a reconnected session onto the page's timeline. */
  apply(event, offset) {
    const main = $("transcript");
    const nearBottom = main.scrollHeight - main.scrollTop - main.clientHeight < 80;
    for (const w of event.committed || []) {
      const word = { word: w.word, start: w.start + offset, end: w.end + offset };
      if (!this.para || (this.lastEnd !== null && word.start - this.lastEnd > 2.0)) {
        if (this.para) this.tentativeNode.textContent = "";
        this.newParagraph();
      }
      this.committedNode.append(document.createTextNode(word.word));
      this.words.push(word);
      this.lastEnd = word.end;
    }
    const tail = (event.tentative || []).map((w) => w.word).join("");
    if (tail && !this.para) this.newParagraph();
    if (this.para) this.tentativeNode.textContent = tail;
    if (nearBottom || document.body.classList.contains("caption-mode")) main.scrollTop = main.scrollHeight;
  },

  clearTentative() { if (this.tentativeNode) this.tentativeNode.textContent = ""; },
};

/** Microphone capture through an AudioWorklet at the context's (= the device's) native rate. */
class MicCapture {
  async start(onChunk) {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.ctx = new AudioContext();
    await this.ctx.audioWorklet.addModule("capture-worklet.js");
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "capture-processor", { numberOfOutputs: 1 });
    this.node.port.onmessage = (e) => onChunk(e.data);
    this.mute = this.ctx.createGain();
    this.mute.gain.value = 0;  // keep the graph pulled without echoing the mic to the speakers
    this.source.connect(this.node).connect(this.mute).connect(this.ctx.destination);
    await this.ctx.resume();
    return this.ctx.sampleRate;
  }

  async stop() {
    if (!this.ctx) return;
    this.node.port.postMessage("flush");
    await new Promise((r) => setTimeout(r, 30));
    this.stream.getTracks().forEach((t) => t.stop());
    await this.ctx.close();
    this.ctx = null;
  }
}

/** A microphone session: capture runs continuously; the socket reconnects around it and resumes the
 * stream (resume.js): audio the daemon has not committed is kept and replayed, so nothing is lost. */
class MicSession {
  constructor(options) {
    this.options = options;   // {language, task}
    this.capture = new MicCapture();
    this.backoff = new Backoff();
    this.point = new ResumePoint();
    this.ws = null;
    this.running = false;
    this.offset = 0;          // page-timeline seconds where the current daemon session's clock is 0
    this.lastSeq = 0;
    this.resumes = 0;
    this.sessions = [];
    this.ended = null;
  }

  async start() {
    this.running = true;
    this.sampleRate = await this.capture.start((chunk) => this.onAudio(chunk));
    this.retained = new RetainedAudio(this.sampleRate, Number(query.get("max_buffer")) || 30);
    info(`microphone at ${this.sampleRate} Hz`);
    this.connect();
  }

  onAudio(chunk) {
    if (!this.retained) return;
    this.retained.append(chunk);  // kept (while disconnected too) until the daemon commits it
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.ready) this.ws.send(chunk.buffer);
  }

  connect() {
    if (!this.running && !this.stopping) return;
    setState(this.backoff.attempt || this.sessions.length ? "reconnecting" : "connecting");
    this.ready = false;
    const ws = new WebSocket(wsUrl("/v1/listen", {}));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      const start = {
        type: "start", sample_rate: this.sampleRate, encoding: "pcm_f32le", channels: 1,
        language: this.options.language || null, task: this.options.task,
      };
      this.resuming = Boolean(this.point.token) && this.retained.complete;
      if (this.resuming) {
        // context before the stream's own start does not exist on the daemon's timeline
        this.retained.dropContext(this.point.committedUntil);
        start.resume = this.point.claim(this.retained.seconds, this.retained.contextSeconds);
      }
      ws.send(JSON.stringify(start));
    };
    ws.onmessage = (e) => this.onEvent(JSON.parse(e.data));
    ws.onclose = (e) => this.onClose(e);
  }

  onReady(ev) {
    this.sessions.push(ev.session);
    if (ev.resumed) {
      this.resumes += 1;
      this.point.update(ev);
      this.lastSeq = this.point.seq;
    } else {
      this.point.clear();
      this.point.update(ev);
      this.retained.dropContext();  // a new session would commit the context's words again
      this.offset = this.retained.start;
      this.lastSeq = 0;
    }
    for (const block of this.retained.blocks) this.ws.send(block.slice().buffer);  // the replay
    this.ready = true;
    if (this.stopping) this.ws.send(JSON.stringify({ type: "stop" }));
    this.backoff.reset();
    setState("connected", `session ${ev.session}`);
    info(`model ${ev.model} · microphone ${this.sampleRate} Hz` + (this.resumes ? ` · resumed ${this.resumes}x` : ""));
  }

  acknowledge(ev) {
    if (this.point.update(ev)) this.retained.ack(this.offset + this.point.committedUntil);
  }

  onEvent(ev) {
    if (ev.type === "ready") {
      this.onReady(ev);
    } else if (ev.type === "transcript") {
      if (typeof ev.seq === "number" && ev.seq <= this.lastSeq) return;  // already shown
      if (typeof ev.seq === "number") this.lastSeq = ev.seq;
      this.acknowledge(ev);
      view.apply(ev, this.offset);
    } else if (ev.type === "reconnect") {
      this.acknowledge(ev);       // the close 1012 that follows resumes elsewhere
    } else if (ev.type === "end") {
      view.clearTentative();
      if (!this.stopping) {       // the daemon ended the stream on its side: the rest is a new session
        this.retained.ack(this.offset + (ev.audio_seconds || 0));
        this.point.clear();
        return;
      }
      this.ended = ev;
      if (this.onEnded) this.onEnded(ev);
    } else if (ev.type === "error") {
      info(`daemon: ${ev.code}: ${ev.message}`);
    }
  }

  onClose(e) {
    if (this.ws && e.target !== this.ws) return;
    this.ready = false;
    view.clearTentative();
    if (this.ended || (!this.running && !this.stopping)) { if (this.onEnded) this.onEnded(this.ended); return; }
    if ([1003, 1008, 1009].includes(e.code) || e.code === 4401) {
      setState("error", `closed ${e.code} ${e.reason || ""}`.trim());
      this.running = false;
      this.capture.stop();
      ui.stopped();
      if (this.onEnded) this.onEnded(null);
      return;
    }
    const delay = this.backoff.next();
    setState("reconnecting", `retry in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(() => this.connect(), delay);
  }

  /** Stop capture, ask the daemon for every remaining word (resuming if need be), wait for ``end``. */
  async stop() {
    this.running = false;
    this.stopping = true;
    await this.capture.stop();
    const ended = new Promise((resolve) => { this.onEnded = resolve; setTimeout(resolve, 30000); });
    setState("finishing");
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.ready) this.ws.send(JSON.stringify({ type: "stop" }));
    await ended;
    this.stopping = false;
    if (this.ws) this.ws.close();
    setState("idle");
  }
}

/** Listen-only: follow a daemon source or session, reconnecting until stopped. */
class ListenSession {
  constructor(params) { this.params = params; this.backoff = new Backoff(); this.running = false; }

  start() { this.running = true; this.connect(); }

  connect() {
    if (!this.running) return;
    setState(this.backoff.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(wsUrl("/v1/captions", this.params));
    this.ws = ws;
    ws.onopen = () => { this.backoff.reset(); setState("connected", "listening"); };
    ws.onmessage = (e) => {
      const ev = JSON.parse(e.data);
      if (ev.type === "transcript") view.apply(ev, 0);
      else if (ev.type === "end") view.clearTentative();
      else if (ev.type === "error") info(`daemon: ${ev.code}: ${ev.message}`);
    };
    ws.onclose = (e) => {
      if (!this.running || e.target !== this.ws) return;
      view.clearTentative();
      const delay = this.backoff.next();
      setState("reconnecting", `retry in ${(delay / 1000).toFixed(1)} s`);
      setTimeout(() => this.connect(), delay);
    };
  }

  async stop() { this.running = false; if (this.ws) this.ws.close(); setState("idle"); }
}

function download(format) {
  const text = { txt: Subtitles.toTxt, srt: Subtitles.toSrt, vtt: Subtitles.toVtt }[format](view.words);
  const type = format === "vtt" ? "text/vtt" : "text/plain";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  a.download = `transcript-${stamp}.${format}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 5000);
}

const ui = {
  session: null,

  async start() {
    $("start").disabled = true;
    $("stop").disabled = false;
    view.reset();
    const mode = $("mode").value;
    try {
      if (mode === "mic") {
        this.session = new MicSession({ language: $("language").value, task: $("task").value });
        await this.session.start();
      } else {
        const params = mode === "listen" ? { source: query.get("source") || "mic" }
          : { session: $("session").value.trim() };
        this.session = new ListenSession(params);
        this.session.start();
      }
    } catch (err) {
      setState("error", String(err.message || err));
      this.stopped();
    }
  },

  async stop() {
    $("stop").disabled = true;
    if (this.session) await this.session.stop();
    this.stopped();
  },

  stopped() {
    $("start").disabled = false;
    $("stop").disabled = true;
  },
};

function init() {
  $("start").onclick = () => ui.start();
  $("stop").onclick = () => ui.stop();
  $("mode").onchange = () => {
    $("session").hidden = $("mode").value !== "session";
    const listen = $("mode").value !== "mic";
    $("language").disabled = listen;
    $("task").disabled = listen;
  };
  $("caption-mode").onchange = (e) => document.body.classList.toggle("caption-mode", e.target.checked);
  for (const b of document.querySelectorAll(".downloads button")) b.onclick = () => download(b.dataset.format);
  if (query.get("captions") === "1") { $("caption-mode").checked = true; document.body.classList.add("caption-mode"); }
  if (query.get("mode")) { $("mode").value = query.get("mode"); $("mode").onchange(); }
  if (query.get("session")) $("session").value = query.get("session");
  if (query.get("language")) chooseLanguage(query.get("language"));
  window.streamerPage = { view, ui };
}

// ?language= may name a code the list lacks, or the speaker's expected languages ("en,de": the daemon
// detects among those only): either becomes an option of its own rather than silently "auto".
function chooseLanguage(value) {
  const select = $("language");
  if (![...select.options].some((option) => option.value === value)) select.add(new Option(value, value));
  select.value = value;
}

init();
