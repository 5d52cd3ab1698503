// The page's half of resuming a stream (docs/protocol.md, "Resuming a stream"): keep the audio the
// daemon has not committed yet, remember the latest signed resume token, and after a dropped
// connection (or a draining daemon's "reconnect" + close 1012) claim the stream back and replay
// only that audio, so the captions go on as one session with no word lost or shown twice.
"use strict";

/** Float32 microphone blocks sent but not yet committed, bounded to ``maxSeconds``; plus up to
 * ``contextSeconds`` of committed audio before the acknowledged point, which a resume replays first
 * as context for the new connection's first window (the daemon commits nothing from it again). */
class RetainedAudio {
  constructor(sampleRate, maxSeconds = 30, contextSeconds = 2) {
    this.rate = sampleRate;
    this.max = Math.round(maxSeconds * sampleRate);
    this.context = Math.round(contextSeconds * sampleRate);
    this.blocks = [];        // Float32Array, oldest first
    this.startSample = 0;    // page-timeline position of blocks[0][0]
    this.ackedSample = 0;    // audio before this sample is committed (what is kept of it is context)
    this.size = 0;
    this.gapUntil = null;    // audio before this sample was dropped unacknowledged
  }

  get start() { return this.startSample / this.rate; }
  get seconds() { return this.size / this.rate; }
  get complete() { return this.gapUntil === null; }
  get contextSeconds() { return Math.max(0, Math.min(this.size, this.ackedSample - this.startSample)) / this.rate; }

  append(block) {
    this.blocks.push(block);
    this.size += block.length;
    if (this.size > this.max) {
      this.drop(this.size - this.max);
      if (this.startSample > this.ackedSample) this.gapUntil = this.startSample;
    }
  }

  /** The daemon committed everything before page-timeline second ``until``: keep only context. */
  ack(until) {
    const target = Math.round(until * this.rate);
    if (target <= this.ackedSample) return;
    this.ackedSample = target;
    this.drop(Math.min(this.size, target - this.context - this.startSample));
    if (this.gapUntil !== null && target >= this.gapUntil) this.gapUntil = null;
  }

  /** Keep at most ``keepSeconds`` of committed context (a new session gets none: it would commit it again). */
  dropContext(keepSeconds = 0) {
    const keep = Math.round(keepSeconds * this.rate);
    this.drop(Math.min(this.size, this.ackedSample - keep - this.startSample));
  }

  drop(samples) {
    while (samples > 0 && this.blocks.length) {
      const first = this.blocks[0];
      const n = Math.min(samples, first.length);
      if (n === first.length) this.blocks.shift(); else this.blocks[0] = first.subarray(n);
      this.startSample += n;
      this.size -= n;
      samples -= n;
    }
  }
}

/** The latest resume state the daemon signed for this stream. */
class ResumePoint {
  constructor() { this.clear(); }

  clear() { this.session = null; this.token = null; this.seq = 0; this.committedUntil = 0; }

  /** Take the token from ready/transcript/reconnect; true when there was one. */
  update(ev) {
    if (!ev.resume) return false;
    this.token = ev.resume;
    this.session = ev.session || this.session;
    if (typeof ev.seq === "number") this.seq = ev.seq;
    if (typeof ev.committed_until === "number") this.committedUntil = ev.committed_until;
    return true;
  }

  claim(retainedSeconds, contextSeconds = 0) {
    const claim = { session: this.session, token: this.token, seq: this.seq, committed_until: this.committedUntil,
                    retained_seconds: Math.round(retainedSeconds * 1000) / 1000 };
    if (contextSeconds > 0) claim.context_seconds = Math.round(contextSeconds * 1e6) / 1e6;
    return claim;
  }
}
