// AudioWorklet processor: copies the microphone's first channel at the context's native rate and
// posts it to the page in ~50 ms blocks (posting every 128-frame render quantum would flood the
// main thread with tiny messages). The page sends each block to the daemon as pcm_f32le.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.blockFrames = Math.round(sampleRate / 20);
    this.buffer = new Float32Array(this.blockFrames);
    this.filled = 0;
    this.port.onmessage = (e) => { if (e.data === "flush") this.flush(); };
  }

  flush() {
    if (this.filled === 0) return;
    const out = this.buffer.slice(0, this.filled);
    this.port.postMessage(out, [out.buffer]);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    let offset = 0;
    while (offset < channel.length) {
      const n = Math.min(channel.length - offset, this.blockFrames - this.filled);
      this.buffer.set(channel.subarray(offset, offset + n), this.filled);
      this.filled += n;
      offset += n;
      if (this.filled === this.blockFrames) this.flush();
    }
    return true;
  }
}

registerProcessor("capture-processor", CaptureProcessor);
