// Copies the first input channel out of the audio thread, 128 frames at a time (the page batches them).
class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const frames = input[0].length, mono = new Float32Array(frames);
      for (const channel of input) for (let i = 0; i < frames; i++) mono[i] += channel[i] / input.length;
      this.port.postMessage(mono, [mono.buffer]);
    }
    return true;
  }
}
registerProcessor("s5-capture", CaptureProcessor);
