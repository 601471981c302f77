// The talking head in the browser: gsplat.js draws the splats, we move them frame by frame.
//
// The static head arrives once (splat_portrait/web/payload.py documents the bytes); each frame is
// a uint32 index, a float32 step and deflated int16 world-space offsets in steps, as three planes. The frame on screen is always the one
// the audio clock is at (floor(currentTime * fps)), so picture and sound stay within a frame of
// each other however the frames arrive; a frame that has not arrived yet keeps the newest before it
// (live streams with no audio element show each frame as it comes: show(index)).

export async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// One frame message -> {index, offsets: Float32Array (count * 3, xyz per splat)}.
export async function decodeFrame(buffer, count) {
  const view = new DataView(buffer);
  const index = view.getUint32(0, true);
  const step = view.getFloat32(4, true);
  const raw = await inflate(new Uint8Array(buffer, 8));
  const planes = new Int16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
  const offsets = new Float32Array(count * 3);
  for (let c = 0; c < 3; c++)
    for (let i = 0; i < count; i++) offsets[3 * i + c] = planes[c * count + i] * step;
  return { index, offsets };
}

export class HeadViewer {
  // keepPast: how many frames behind the one shown stay in memory (Infinity: all, for replay).
  constructor(SPLAT, canvas, meta, headBytes, keepPast = 50) {
    const n = meta.count;
    const bytes = headBytes instanceof Uint8Array ? headBytes : new Uint8Array(headBytes);
    const floats = new Float32Array(bytes.slice(0, n * 40).buffer);
    const positions = floats.slice(0, n * 3);
    const rotations = floats.slice(n * 3, n * 7);
    const scales = floats.slice(n * 7, n * 10);
    const colors = bytes.slice(n * 40, n * 44);
    this.meta = meta;
    this.base = positions.slice();
    this.data = new SPLAT.SplatData(n, positions, rotations, scales, colors);
    this.splat = new SPLAT.Splat(this.data);
    this.scene = new SPLAT.Scene();
    this.scene.addObject(this.splat);
    this.camera = new SPLAT.Camera();
    this.renderer = new SPLAT.WebGLRenderer(canvas);
    this.renderer.backgroundColor = new SPLAT.Color32(24, 24, 28, 255);
    // Start at the portrait's own camera (alpha = beta = 0: on -z, looking at the head).
    this.controls = new SPLAT.OrbitControls(this.camera, canvas, meta.alpha, meta.beta, meta.distance, false);
    this.controls.minZoom = meta.distance / 4;
    this.controls.maxZoom = meta.distance * 4;
    this.camera.data.far = meta.distance * 10;
    this.keepPast = keepPast;
    this.frames = new Map(); // index -> Float32Array offsets
    this.shown = -1; // frame whose offsets the splats hold
    this.wanted = 0;
    this.drawn = 0; // animation ticks rendered (tests wait on it)
    this.clock = null; // an <audio> element whose time picks the frame (followAudio)
    this.running = true;
    this._fit();
    const tick = () => {
      if (!this.running) return;
      if (this.clock) this.wanted = Math.floor(this.clock.currentTime * this.meta.fps);
      this._fit();
      this.controls.update();
      this._apply();
      this.renderer.render(this.scene, this.camera);
      this.drawn++;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  // From now on show the frame `audio` is at: picture and sound stay within a frame of each other.
  followAudio(audio) {
    this.clock = audio;
  }

  dispose() {
    this.running = false;
    this.controls.dispose();
    this.renderer.dispose();
  }

  // Draw at the model's resolution (meta.size) and let the page scale the canvas: the splats were
  // made for that many pixels, and drawn much larger the smallest of them show as separate dots.
  // The source camera's focal length is normalised by the image side.
  _fit() {
    const canvas = this.renderer.canvas;
    const aspect = (canvas.clientWidth || 1) / (canvas.clientHeight || 1);
    const height = this.meta.size;
    const width = Math.max(1, Math.round(height * aspect));
    if (canvas.width !== width || canvas.height !== height) this.renderer.setSize(width, height);
    this.camera.data.fx = this.camera.data.fy = this.meta.focal * height;
  }

  addFrame(index, offsets) {
    this.frames.set(index, offsets);
  }

  // Show frame `index`, or the newest frame before it that has arrived.
  show(index) {
    this.wanted = index;
  }

  latestAvailable(index) {
    for (let i = index; i >= 0 && i >= index - 50; i--) if (this.frames.has(i)) return i;
    return -1;
  }

  _apply() {
    const index = this.latestAvailable(this.wanted);
    if (index < 0 || index === this.shown || this.data.detached) return;
    const offsets = this.frames.get(index);
    const positions = this.data.positions;
    for (let i = 0; i < positions.length; i++) positions[i] = this.base[i] + offsets[i];
    this.data.changed = true;
    this.splat.raiseChangeEvent();
    this.shown = index;
    // Frames long past are not needed again (live); a file keeps them all to replay.
    if (Number.isFinite(this.keepPast)) for (const key of this.frames.keys()) if (key < index - this.keepPast) this.frames.delete(key);
  }
}
