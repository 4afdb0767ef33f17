// Plays the separated audio the page mixes: a FIFO of Float32 chunks at the playback context's rate.
class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunks = []; this.offset = 0; this.underruns = 0; this.queued = 0;
    this.port.onmessage = (e) => {
      if (e.data === "clear") { this.chunks = []; this.offset = 0; this.queued = 0; return; }
      this.chunks.push(e.data); this.queued += e.data.length;
      while (this.queued > sampleRate) { this.queued -= this.chunks.shift().length - this.offset; this.offset = 0; }
    };
  }
  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    while (i < out.length && this.chunks.length) {
      const head = this.chunks[0], n = Math.min(out.length - i, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), i);
      i += n; this.offset += n; this.queued -= n;
      if (this.offset >= head.length) { this.chunks.shift(); this.offset = 0; }
    }
    if (i < out.length) { out.fill(0, i); if (i > 0) this.underruns++; }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}
registerProcessor("s5-player", PlayerProcessor);
