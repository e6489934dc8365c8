// ovslab ui: loads a lab's picture, keeps its health live (server-sent
// events from the daemon's audits), runs checks and traces and draws them.
// Plain ES modules, no build step; everything comes from this server.

import { Picture } from "./picture.js";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
};

const state = {
  lab: null,
  model: null,
  events: null,
  trace: null,
  step: -1,
  timer: null,
  selectedCheck: null,
};
// For tests and the curious: what the page holds now.
window.ovslab = state;

const picture = new Picture($("picture"), {
  onHover: (b) => showDetails(b, false),
  onSelect: (b) => {
    picture.mark("selected", [b.id]);
    showDetails(b, true);
  },
});

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

const post = (path, body) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body ?? null) });

const labPath = (rest) => `/api/labs/${encodeURIComponent(state.lab)}/${rest}`;

function setHealth(text, cls) {
  const h = $("health");
  h.textContent = text;
  h.className = `badge ${cls}`;
}

async function start() {
  $("zoom-in").onclick = () => picture.zoom(1 / 1.3);
  $("zoom-out").onclick = () => picture.zoom(1.3);
  $("zoom-fit").onclick = () => picture.fit();
  $("run-checks").onclick = runChecks;
  $("trace-form").onsubmit = (e) => {
    e.preventDefault();
    runTrace({ from: $("trace-from").value, to: $("trace-to").value, protocol: $("trace-protocol").value, port: Number($("trace-port").value) });
  };
  $("trace-protocol").onchange = () => ($("trace-port-label").hidden = $("trace-protocol").value === "icmp");
  $("step-next").onclick = () => { stopPlaying(); showStep(state.step + 1); };
  $("step-back").onclick = () => { stopPlaying(); showStep(state.step - 1); };
  $("step-all").onclick = () => { stopPlaying(); showStep(-1); };
  $("step-play").onclick = play;
  $("lab-select").onchange = () => openLab($("lab-select").value);
  // For a talk: the arrow keys step through a trace, the space bar plays it.
  document.addEventListener("keydown", (e) => {
    if (!state.trace || e.target.closest("input, select, textarea, button")) return;
    const keys = { ArrowRight: () => showStep(state.step + 1), ArrowLeft: () => showStep(state.step - 1) };
    if (keys[e.key]) { stopPlaying(); keys[e.key](); e.preventDefault(); }
    else if (e.key === " ") { play(); e.preventDefault(); }
  });
  try {
    const labs = await api("/api/labs");
    const wanted = new URLSearchParams(location.search).get("lab");
    for (const lab of labs) $("lab-select").append(el("option", { value: lab, textContent: lab }));
    const lab = labs.includes(wanted) ? wanted : labs[0];
    if (!lab) {
      setHealth("no lab is running", "bad");
      return;
    }
    $("lab-select").value = lab;
    await openLab(lab);
  } catch (e) {
    setHealth(e.message, "bad");
  }
}

async function openLab(lab) {
  state.lab = lab;
  state.events?.close();
  stopPlaying();
  state.trace = null;
  $("checks").replaceChildren();
  $("checks-summary").textContent = "";
  $("trace-steps").replaceChildren();
  $("trace-summary").textContent = "";
  $("trace-controls").hidden = true;
  history.replaceState(null, "", `?lab=${encodeURIComponent(lab)}`);
  const model = await api(labPath("picture"));
  state.model = model;
  picture.show(model);
  $("trace-from").replaceChildren(...model.sources.map((s) => el("option", { value: s, textContent: s })));
  $("trace-destinations").replaceChildren(...model.destinations.map((s) => el("option", { value: s })));
  $("trace-to").value = model.destinations.find((d) => d !== model.sources[0]) ?? "";
  document.body.dataset.lab = lab;
  await loadStatus();
  listen();
  document.body.dataset.ready = "true";
}

// The daemon's view of the lab: broken namespaces and instances without
// their DHCP lease, the last audits'
// repairs (marked until the next audit that finds nothing).
async function loadStatus() {
  try {
    const { status, repairs } = await api(labPath("status"));
    const broken = state.model.boxes.filter((b) =>
      [...status.instances, ...status.nodes].some((o) =>
        (!o.namespace_exists || o.dhcp_lease === false) && o.namespace === b.namespace));
    picture.mark("broken", broken.map((b) => b.id));
    const last = repairs.at(-1);
    if (last) picture.mark("repaired", last.boxes, last.clusters, status.repairs.at(-1));
    if (status.audits) document.body.dataset.audits = status.audits.count;
    if (status.audit_error) setHealth(`audit cannot repair: ${status.audit_error}`, "bad");
    else if (last) setHealth(`${status.repair_count} repaired · last: ${status.repairs.at(-1).split(" ")[0]}`, "repaired");
    else if (!status.healthy) setHealth("not healthy", "bad");
    else if (status.audits) setHealth(`healthy · audit ${status.audits.count} at ${status.audits.last_at}`, "good");
    else setHealth("healthy · not audited", "good");
  } catch (e) {
    setHealth(e.message, "bad");
  }
}

// Server-sent events: one per audit of the lab. Each (re)connection
// first catches up with the status (audits missed while away).
function listen() {
  const lab = state.lab;
  const source = new EventSource(labPath("events"));
  state.events = source;
  source.onopen = () => loadStatus();
  source.addEventListener("audit", (message) => {
    const { event, marks } = JSON.parse(message.data);
    document.body.dataset.audits = event.audit;
    if (event.error) {
      setHealth(`audit ${event.audit}: cannot repair: ${event.error}`, "bad");
    } else if (event.repairs.length) {
      picture.mark("repaired", marks.boxes, marks.clusters, `repaired at ${event.at}:\n${event.repairs.join("\n")}`);
      setHealth(`audit ${event.audit} at ${event.at}: ${event.repairs.length} repaired`, "repaired");
    } else {
      setHealth(`healthy · audit ${event.audit} at ${event.at}`, "good");
    }
  });
  // The browser retries a broken stream by itself, but not one refused
  // (the daemon restarting): then try again here, while the lab is shown.
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) return;
    setHealth("lost the daemon's events: retrying", "bad");
    setTimeout(() => {
      if (state.lab === lab && state.events === source) listen();
    }, 2000);
  };
}

function showDetails(b, sticky) {
  if (!sticky && state.sticky && state.sticky !== b) return;
  if (sticky) state.sticky = b;
  const d = $("details");
  const rows = [["object", b.object], ["namespace", b.namespace], ["kind", b.kind]];
  const dl = el("dl");
  const row = (k, v) => dl.append(el("dt", { textContent: k }), el("dd", { textContent: v }));
  rows.forEach(([k, v]) => row(k, v));
  for (const dev of b.devices) {
    const parts = [];
    if (dev.mac) parts.push(dev.mac);
    parts.push(...dev.addresses);
    if (dev.tag !== null && dev.tag !== undefined) parts.push(`tag ${dev.tag}`);
    if (dev.peer) parts.push(`↔ ${dev.peer}`);
    row(dev.name, parts.join("  "));
  }
  for (const n of b.nat) row("NAT", n);
  d.replaceChildren(el("h3", { textContent: b.label[0] }), dl);
  if (b.live) {
    const out = el("pre", { textContent: "" });
    const button = el("button", {
      type: "button",
      textContent: b.live === "flows" ? "read its flows now" : "read its nat table now",
      onclick: async () => {
        out.textContent = "…";
        try {
          const live = await api(labPath(`live/${b.id}`));
          out.textContent = live.error ? `${live.command}\n${live.error}` : `${live.command}\n${live.text}`;
        } catch (e) {
          out.textContent = e.message;
        }
      },
    });
    d.append(button, out);
  }
}

async function runChecks() {
  const button = $("run-checks");
  button.disabled = true;
  $("checks-summary").textContent = "running…";
  $("checks").replaceChildren();
  try {
    const report = await post(labPath("check"));
    const passed = report.results.filter((r) => r.passed).length;
    $("checks-summary").textContent = `${passed} of ${report.results.length} passed in ${report.elapsed_ms} ms`;
    $("checks-summary").dataset.passed = passed;
    for (const r of report.results) {
      const li = el("li", { className: r.passed ? "pass" : "fail" },
        el("span", { className: "verdict", textContent: r.passed ? "PASS" : "FAIL" }),
        el("span", { className: "name", textContent: r.name }),
        el("span", { className: "detail", textContent: r.detail }));
      li.dataset.check = r.name;
      li.onclick = () => selectCheck(r, li);
      $("checks").append(li);
    }
  } catch (e) {
    $("checks-summary").textContent = e.message;
    $("checks-summary").className = "hint error";
  } finally {
    button.disabled = false;
  }
}

// A selected check: its ends marked, and its probe traced again to draw
// the path it takes (and where it is lost).
async function selectCheck(r, li) {
  for (const other of $("checks").children) other.classList.remove("selected");
  li.classList.add("selected");
  const c = r.check;
  picture.mark("end", c ? c.ends : []);
  if (!c) return;
  const traceable = ["icmp", "tcp", "udp"].includes(c.protocol) && state.model.sources.includes(c.from);
  if (!traceable) {
    $("trace-summary").textContent = `check ${c.name}: its probe (${c.protocol} from ${c.from}) cannot be traced from here; its ends are marked`;
    return;
  }
  $("trace-from").value = c.from;
  $("trace-to").value = c.to;
  $("trace-protocol").value = c.protocol;
  $("trace-port").value = c.port ?? 22;
  $("trace-port-label").hidden = c.protocol === "icmp";
  await runTrace({ from: c.from, to: c.to, protocol: c.protocol, port: c.port }, `check ${c.name}: `);
}

async function runTrace(form, prefix = "") {
  stopPlaying();
  $("trace-run").disabled = true;
  $("trace-summary").textContent = `${prefix}tracing ${form.from} → ${form.to}…`;
  $("trace-summary").className = "hint";
  $("trace-steps").replaceChildren();
  picture.clearOverlay();
  try {
    const body = { from: form.from, to: form.to, protocol: form.protocol };
    if (form.protocol !== "icmp") body.port = form.port;
    const view = await post(labPath("trace"), body);
    state.trace = view;
    drawTrace(view, prefix);
  } catch (e) {
    $("trace-summary").textContent = prefix + e.message;
    $("trace-summary").className = "hint error";
  } finally {
    $("trace-run").disabled = false;
  }
}

function drawTrace(view, prefix) {
  const r = view.report;
  const lost = r.lost ? ` LOST: last seen at ${r.lost.last_seen}; next expected ${r.lost.next_expected}.` : "";
  $("trace-summary").textContent = `${prefix}${r.from} → ${r.to} (${r.destination}), ${r.answered ? "answered" : "not answered"} in ${r.elapsed_ms} ms.${lost} ${r.conclusions.join(" · ")}`;
  const list = $("trace-steps");
  view.steps.forEach((s, k) => {
    const h = r.hops[s.hop];
    const li = el("li", { className: s.leg });
    li.append(`${h.place} ${h.device} ${h.direction} · ${h.vlan ? `vlan ${h.vlan}` : "untagged"} · ${h.src_ip} → ${h.dst_ip}`);
    for (const c of s.changes) li.append(" ", el("span", { className: "change", textContent: c }));
    for (const n of h.notes) li.append(el("div", { className: "hint", textContent: `» ${n}` }));
    const b = s.box === null ? null : state.model.boxes[s.box];
    li.dataset.namespace = b ? b.namespace : "";
    li.dataset.changes = s.changes.join("|");
    li.onclick = () => { stopPlaying(); showStep(k); };
    list.append(li);
  });
  $("trace-controls").hidden = view.steps.length === 0;
  showStep(-1);
}

// Step -1 is the whole path; 0… one hop at a time.
function showStep(k) {
  const view = state.trace;
  if (!view) return;
  const steps = view.steps;
  k = Math.max(-1, Math.min(k, steps.length - 1));
  state.step = k;
  const shown = k < 0 ? steps : steps.slice(0, k + 1);
  picture.clearOverlay();
  picture.unmark("current");
  picture.path(shown.filter((s) => s.leg === "request").map((s) => s.box), "request");
  picture.path(shown.filter((s) => s.leg !== "request").map((s) => s.box), "reply", 7);
  picture.mark("on-path", shown.map((s) => s.box).filter((b) => b !== null));
  // The changes, labelled at the hop where they happen.
  const rows = new Map();
  for (const s of shown) {
    if (s.box === null || !s.changes.length) continue;
    for (const c of s.changes) {
      const row = rows.get(s.box) ?? 0;
      picture.label(s.box, `${s.leg === "request" ? "→" : "←"} ${c}`, "change", row);
      rows.set(s.box, row + 1);
    }
  }
  picture.mark("lost", k < 0 && view.lost_at !== null ? [view.lost_at] : []);
  if (k < 0 && view.lost_at !== null) {
    picture.label(view.lost_at, "✖ lost here", "lost", rows.get(view.lost_at) ?? 0);
  }
  [...$("trace-steps").children].forEach((li, i) => li.classList.toggle("current", i === k));
  if (k >= 0) {
    const s = steps[k];
    if (s.box !== null) picture.mark("current", [s.box]);
    picture.probe(s.box);
    const h = view.report.hops[s.hop];
    $("step-at").textContent = `hop ${k + 1} of ${steps.length}: ${h.place} ${h.device}`;
    $("trace-steps").children[k]?.scrollIntoView({ block: "nearest" });
  } else {
    $("step-at").textContent = `${steps.length} hops`;
  }
}

function play() {
  if (state.timer) return stopPlaying();
  $("step-play").textContent = "pause";
  if (state.step >= state.trace.steps.length - 1) state.step = -1;
  state.timer = setInterval(() => {
    if (state.step >= state.trace.steps.length - 1) return stopPlaying();
    showStep(state.step + 1);
  }, 700);
}

function stopPlaying() {
  clearInterval(state.timer);
  state.timer = null;
  $("step-play").textContent = "play";
}

start();
