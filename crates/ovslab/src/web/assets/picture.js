// The picture: the SVG that `ovslab graph --format svg` draws (each box,
// frame and line in a group named by its index), zoomable and pannable,
// with marks (classes on the groups) and an overlay for paths and labels.

const SVG = "http://www.w3.org/2000/svg";

export class Picture {
  constructor(container, { onHover, onSelect }) {
    this.container = container;
    this.onHover = onHover;
    this.onSelect = onSelect;
    this.svg = null;
    this.full = null;
    this.view = null;
    this.dragging = null;
    container.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    container.addEventListener("pointerdown", (e) => this.down(e));
    container.addEventListener("pointermove", (e) => this.move(e));
    container.addEventListener("pointerup", (e) => this.up(e));
    container.addEventListener("pointercancel", (e) => this.up(e));
  }

  // Shows a lab: `model` is the server's Picture.
  show(model) {
    this.model = model;
    this.container.innerHTML = model.svg;
    this.svg = this.container.querySelector("svg");
    const [x, y, w, h] = this.svg.getAttribute("viewBox").split(" ").map(Number);
    this.full = { x, y, w, h };
    this.svg.removeAttribute("width");
    this.svg.removeAttribute("height");
    this.svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    for (const b of model.boxes) {
      const g = this.group(b.id);
      if (!g) continue;
      g.dataset.namespace = b.namespace;
      g.dataset.object = b.object;
      g.dataset.kind = b.kind;
      g.addEventListener("pointerenter", () => this.onHover(b));
      g.addEventListener("click", (e) => {
        if (this.moved) return;
        e.stopPropagation();
        this.onSelect(b);
      });
    }
    for (const c of model.clusters) {
      const g = this.svg.querySelector(`g.frame[data-cluster="${c.id}"]`);
      if (g) {
        g.dataset.namespace = c.namespace;
        g.dataset.object = c.object;
      }
    }
    this.overlay = document.createElementNS(SVG, "g");
    this.overlay.id = "overlay";
    this.svg.appendChild(this.overlay);
    this.fit();
  }

  group(i) {
    return this.svg ? this.svg.querySelector(`g.box[data-box="${i}"]`) : null;
  }

  frame(c) {
    return this.svg ? this.svg.querySelector(`g.frame[data-cluster="${c}"]`) : null;
  }

  // The centre of a box, in the picture's coordinates.
  centre(i) {
    const rect = this.group(i)?.querySelector("rect");
    if (!rect) return null;
    const n = (a) => Number(rect.getAttribute(a));
    return { x: n("x") + n("width") / 2, y: n("y") + n("height") / 2, top: n("y"), left: n("x"), right: n("x") + n("width") };
  }

  // Where a path meets a box: its centre, or on a wide box (br-int across
  // a node, a network's bar) the point nearest to where the path comes from.
  meet(c, from) {
    if (!from || c.right - c.left < 260) return { x: c.x, y: c.y };
    return { x: Math.min(Math.max(from.x, c.left + 12), c.right - 12), y: c.y };
  }

  // Puts `cls` on exactly these boxes (and frames), off every other.
  mark(cls, boxes = [], clusters = [], title = null) {
    this.unmark(cls);
    this.add(cls, boxes, clusters, title);
  }

  add(cls, boxes = [], clusters = [], title = null) {
    for (const i of boxes) this.tag(this.group(i), cls, title);
    for (const c of clusters) this.tag(this.frame(c), cls, title);
  }

  tag(g, cls, title) {
    if (!g) return;
    g.classList.add(cls);
    if (title) {
      let t = g.querySelector(`title[data-mark="${cls}"]`);
      if (!t) {
        t = document.createElementNS(SVG, "title");
        t.dataset.mark = cls;
        g.prepend(t);
      }
      t.textContent = title;
    }
  }

  unmark(cls) {
    if (!this.svg) return;
    for (const g of this.svg.querySelectorAll(`.${cls}`)) {
      g.classList.remove(cls);
      g.querySelector(`title[data-mark="${cls}"]`)?.remove();
    }
  }

  clearOverlay() {
    if (this.overlay) this.overlay.replaceChildren();
  }

  // A line through the centres of `boxes` (consecutive repeats once).
  // `shift` moves it a little (the answer beside the request).
  path(boxes, cls, shift = 0) {
    const centres = [];
    let last = null;
    for (const i of boxes) {
      if (i === null || i === last) continue;
      const c = this.centre(i);
      if (c) centres.push(c);
      last = i;
    }
    if (centres.length < 2) return null;
    // Along a wide box from where the path comes in to where it leaves.
    const points = [];
    let from = null;
    centres.forEach((c, k) => {
      const next = centres[k + 1];
      const enter = this.meet(c, from ?? next);
      const leave = next ? this.meet(c, next) : enter;
      for (const p of enter.x === leave.x ? [enter] : [enter, leave]) {
        points.push(`${(p.x + shift).toFixed(1)},${(p.y + shift).toFixed(1)}`);
      }
      from = leave;
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.classList.add(cls);
    this.overlay.appendChild(line);
    return line;
  }

  // Text beside a box; `row` stacks several labels of one box.
  label(i, text, cls, row = 0) {
    const c = this.centre(i);
    if (!c) return null;
    const t = document.createElementNS(SVG, "text");
    // On the left of a box near the right edge, so it stays in the picture.
    const left = this.full && c.right + 200 > this.full.x + this.full.w;
    t.setAttribute("x", (left ? c.left - 6 : c.right + 6).toFixed(1));
    if (left) t.setAttribute("text-anchor", "end");
    t.setAttribute("y", (c.top + 14 + row * 18).toFixed(1));
    t.classList.add(cls);
    t.textContent = text;
    this.overlay.appendChild(t);
    return t;
  }

  probe(i) {
    this.overlay.querySelector("circle.probe")?.remove();
    const c = i === null ? null : this.centre(i);
    if (!c) return;
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", c.x.toFixed(1));
    dot.setAttribute("cy", c.y.toFixed(1));
    dot.setAttribute("r", "9");
    dot.classList.add("probe");
    this.overlay.appendChild(dot);
  }

  // Zoom and pan: the viewBox is the camera.
  setView(v) {
    this.view = v;
    this.svg?.setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
  }

  fit() {
    if (this.full) this.setView({ ...this.full });
  }

  zoom(factor, at = null) {
    if (!this.view) return;
    const v = this.view;
    const cx = at ? at.x : v.x + v.w / 2;
    const cy = at ? at.y : v.y + v.h / 2;
    const w = Math.min(Math.max(v.w * factor, 100), this.full.w * 4);
    const h = (v.h * w) / v.w;
    this.setView({ x: cx - ((cx - v.x) * w) / v.w, y: cy - ((cy - v.y) * h) / v.h, w, h });
  }

  // A point of the screen in the picture's coordinates.
  toPicture(e) {
    const m = this.svg.getScreenCTM();
    if (!m) return null;
    const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(m.inverse());
    return { x: p.x, y: p.y };
  }

  wheel(e) {
    if (!this.svg) return;
    e.preventDefault();
    this.zoom(e.deltaY > 0 ? 1.15 : 1 / 1.15, this.toPicture(e));
  }

  down(e) {
    if (!this.svg || e.button !== 0) return;
    this.dragging = { start: this.toPicture(e), view: { ...this.view }, x: e.clientX, y: e.clientY };
    this.moved = false;
  }

  move(e) {
    if (!this.dragging) return;
    if (Math.abs(e.clientX - this.dragging.x) + Math.abs(e.clientY - this.dragging.y) < 4) return;
    if (!this.moved) {
      this.moved = true;
      this.container.setPointerCapture(e.pointerId);
      this.container.classList.add("dragging");
    }
    const m = this.svg.getScreenCTM();
    const scale = m ? m.a : 1;
    const v = this.dragging.view;
    this.setView({
      ...v,
      x: v.x - (e.clientX - this.dragging.x) / scale,
      y: v.y - (e.clientY - this.dragging.y) / scale,
    });
  }

  up(e) {
    if (this.moved && this.container.hasPointerCapture(e.pointerId)) {
      this.container.releasePointerCapture(e.pointerId);
    }
    this.container.classList.remove("dragging");
    this.dragging = null;
    // A click that ends a drag selects nothing.
    setTimeout(() => (this.moved = false), 0);
  }
}
