// deblurcli's page: uploads photos to the local server's job API, follows each one, and shows the
// result against the input with a before/after split, fit or 1:1 zoom, and panning.
// Plain JavaScript with no libraries: the page must work offline, served from the package alone.
"use strict";

const POLL_MS = 400; // a running photo: its tiles move
const QUEUED_POLL_MS = 1500; // a waiting one: often enough to keep its lease, rarely enough for 100 of them
const FINISHED = new Set(["done", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);

const state = {
  config: null,
  photos: new Set(), // every photo of this page, to cancel the unfinished ones when the page goes
  shown: null, // the photo whose before/after is in the viewer
  view: { natW: 0, natH: 0, scale: 1, tx: 0, ty: 0, split: 0.5, mode: "fit" },
};

// ------------------------------------------------------------------------------------------ settings

async function loadConfig() {
  try {
    const response = await fetch("/api/models");
    state.config = await response.json();
  } catch (error) {
    $("limits").textContent = "The server cannot be reached: is 'deblur serve' still running?";
    return;
  }
  const { methods, default_method, models, default_model, max_upload_bytes } = state.config;
  for (const method of methods) $("method").add(new Option(method, method, false, method === default_method));
  for (const model of models) {
    const label = model.name + (model.quality ? ` (${model.quality})` : "") + (model.cached ? "" : " - downloads on first use");
    const option = new Option(label, model.name, false, model.name === default_model);
    option.title = model.description;
    $("model").add(option);
  }
  $("limits").textContent = `JPEG, PNG, WebP, TIFF, HEIC, AVIF - up to ${formatSize(max_upload_bytes)} each`;
}

function formatSize(bytes) {
  return bytes >= 1e6 ? `${+(bytes / 1e6).toFixed(1)} MB` : `${Math.ceil(bytes / 1e3)} kB`;
}

function chosenSettings() {
  return { method: $("method").value, model: $("model").value, strength: $("strength").value };
}

// ------------------------------------------------------------------------------------------- photos

function addFiles(files) {
  for (const file of files) upload(file);
}

function makeCard(name) {
  const card = $("photo-card").content.firstElementChild.cloneNode(true);
  card.querySelector(".name").textContent = name;
  $("photos").append(card);
  return card;
}

function setStatus(photo, status, text, fraction) {
  photo.card.dataset.status = status;
  photo.card.querySelector(".status").textContent = text;
  const bar = photo.card.querySelector("progress");
  if (fraction === null) bar.removeAttribute("value"); // indeterminate: no measure of how far it is
  else bar.value = fraction;
}

function fail(photo, message) {
  setStatus(photo, "failed", "failed", 1);
  const error = photo.card.querySelector(".error");
  error.textContent = message;
  error.hidden = false;
}

function upload(file) {
  const photo = { name: file.name, card: makeCard(file.name), id: null, job: null };
  state.photos.add(photo);
  photo.card.querySelector(".remove").addEventListener("click", () => removePhoto(photo));
  photo.card.querySelector(".show").addEventListener("click", () => show(photo));
  const limit = state.config ? state.config.max_upload_bytes : Infinity;
  if (file.size > limit) {
    fail(photo, `This file is ${formatSize(file.size)}; the server takes photos up to ${formatSize(limit)} (deblur serve --max-upload).`);
    return;
  }
  const form = new FormData();
  form.append("photo", file, file.name);
  for (const [key, value] of Object.entries(chosenSettings())) form.append(key, value);
  const request = new XMLHttpRequest();
  request.open("POST", "/api/jobs");
  request.upload.onprogress = (event) => {
    if (event.lengthComputable) setStatus(photo, "uploading", `uploading ${Math.round((100 * event.loaded) / event.total)} %`, event.loaded / event.total);
  };
  request.onload = () => {
    let body = {};
    try { body = JSON.parse(request.responseText); } catch (error) { /* not JSON: the status says enough */ }
    if (request.status === 202) {
      photo.id = body.id;
      follow(photo);
    } else {
      fail(photo, body.error || `The server refused the photo (HTTP ${request.status}).`);
    }
  };
  request.onerror = () => fail(photo, "The upload did not reach the server: is 'deblur serve' still running?");
  setStatus(photo, "uploading", "uploading", 0);
  request.send(form);
}

// Asking about a photo also tells the server the page is still open: one not asked about for a while
// is cancelled, so a closed tab does not keep the queue busy.
async function follow(photo) {
  while (photo.id !== null) {
    let response, job;
    try {
      response = await fetch(`/api/jobs/${photo.id}`, { cache: "no-store" });
      job = await response.json();
    } catch (error) {
      fail(photo, "Lost contact with the server: is 'deblur serve' still running?");
      return;
    }
    if (!response.ok) {
      fail(photo, job.error || `HTTP ${response.status}`);
      return;
    }
    update(photo, job);
    if (FINISHED.has(job.status)) return;
    await new Promise((resolve) => setTimeout(resolve, job.status === "queued" ? QUEUED_POLL_MS : POLL_MS));
  }
}

function describeRun(job) {
  const seconds = job.seconds === null ? "" : ` in ${job.seconds.toFixed(1)} s`;
  if (job.method === "kernel") return `done${seconds}: camera shake removed (kernel ${job.kernel_size} px)`;
  if (job.method === "network") return `done${seconds}: deblurred by the network`;
  return `done${seconds}: left unchanged (it looks sharp)`;
}

function update(photo, job) {
  photo.job = job;
  if (job.status === "queued") {
    setStatus(photo, "queued", job.position ? `waiting, ${job.position} photo${job.position > 1 ? "s" : ""} ahead` : "waiting", null);
  } else if (job.status === "running") {
    const [done, total] = job.tiles;
    const tiles = job.stage === "deblurring" && total > 1 ? `: ${done}/${total} tiles` : "";
    setStatus(photo, "running", job.stage + tiles, job.stage === "deblurring" && total > 1 ? done / total : null);
  } else if (job.status === "done") {
    setStatus(photo, "done", describeRun(job), 1);
    const link = photo.card.querySelector(".get");
    link.href = `/api/jobs/${job.id}/result`;
    link.download = job.download_name;
    link.hidden = false;
    if (state.shown === null || state.shown === photo) show(photo);
  } else if (job.status === "failed") {
    fail(photo, job.error || "This photo could not be deblurred.");
  } else {
    setStatus(photo, "cancelled", "cancelled", 1);
  }
}

async function removePhoto(photo) {
  const id = photo.id;
  photo.id = null; // stops following it
  state.photos.delete(photo);
  photo.card.remove();
  if (state.shown === photo) {
    state.shown = null;
    $("result").hidden = true;
  }
  if (id !== null) {
    try { await fetch(`/api/jobs/${id}`, { method: "DELETE" }); } catch (error) { /* the server is gone: nothing to free */ }
  }
}

// ------------------------------------------------------------------------------------------- viewer

async function show(photo) {
  const job = photo.job;
  if (!job || job.status !== "done") return;
  for (const card of document.querySelectorAll(".card")) card.classList.toggle("shown", card === photo.card);
  state.shown = photo;
  const base = `/api/jobs/${job.id}`;
  const before = $("before"), after = $("after");
  before.src = `${base}/before.jpg`;
  after.src = `${base}/after.jpg`;
  $("result").hidden = false;
  $("shown-name").textContent = photo.name;
  $("download").href = `${base}/result`;
  $("download").download = job.download_name;
  $("download").textContent = `Download ${job.download_name}`;
  showDetails(job);
  try {
    await Promise.all([before.decode(), after.decode()]);
  } catch (error) {
    return; // another photo was chosen meanwhile, or the preview is gone
  }
  state.view.natW = after.naturalWidth;
  state.view.natH = after.naturalHeight;
  for (const img of [before, after]) {
    img.style.width = `${state.view.natW}px`;
    img.style.height = `${state.view.natH}px`;
  }
  zoom(state.view.mode);
  $("viewer").dataset.ready = "true";
}

function showDetails(job) {
  const figure = $("kernel-figure");
  figure.hidden = !job.files.includes("kernel.png");
  if (!figure.hidden) {
    $("kernel").src = `/api/jobs/${job.id}/kernel.png`;
    const confidence = job.confidence === null ? "" : `, confidence ${job.confidence.toFixed(2)}`;
    $("kernel-caption").textContent = job.method === "kernel"
      ? `The camera-shake kernel that was found (${job.kernel_size} px${confidence}) and removed.`
      : `A kernel was estimated (${job.kernel_size} px${confidence}) but not used: ${job.decision || "another method fitted better"}.`;
  }
  const size = job.width ? `${job.width} x ${job.height} px, ` : "";
  const { method, model, strength } = job.options;
  const why = figure.hidden && job.decision ? ` Why: ${job.decision}.` : ""; // the kernel caption says it otherwise
  $("summary").textContent = `${size}method ${method} (${job.method} ran), model ${model}, strength ${strength}.${why}`;
  const list = $("warnings");
  list.replaceChildren(...job.warnings.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
}

// The stage holds both images at their natural size, moved and scaled by one transform; the before
// image is clipped at the divider, whose place is a fraction of the viewer's width.
function render() {
  const v = state.view;
  const width = $("viewer").clientWidth;
  $("stage").style.transform = `translate(${v.tx}px, ${v.ty}px) scale(${v.scale})`;
  const cut = Math.min(v.natW, Math.max(0, (v.split * width - v.tx) / v.scale));
  $("before").style.clipPath = `inset(0 ${v.natW - cut}px 0 0)`;
  $("divider").style.left = `${v.split * width}px`;
  $("viewer").classList.toggle("pixels", v.scale * devicePixelRatio >= 2);
}

function clamp() {
  const v = state.view;
  const { clientWidth: w, clientHeight: h } = $("viewer");
  const sw = v.natW * v.scale, sh = v.natH * v.scale;
  v.tx = sw <= w ? (w - sw) / 2 : Math.min(0, Math.max(w - sw, v.tx));
  v.ty = sh <= h ? (h - sh) / 2 : Math.min(0, Math.max(h - sh, v.ty));
}

// "1:1" is one photo pixel per screen pixel (devicePixelRatio), kept centred on the point at (cx, cy).
function zoom(mode, cx, cy) {
  const v = state.view;
  if (!v.natW) return;
  const { clientWidth: w, clientHeight: h } = $("viewer");
  cx = cx === undefined ? w / 2 : cx;
  cy = cy === undefined ? h / 2 : cy;
  const px = (cx - v.tx) / v.scale, py = (cy - v.ty) / v.scale;
  v.mode = mode;
  v.scale = mode === "fit" ? Math.min(w / v.natW, h / v.natH, 1 / devicePixelRatio) : 1 / devicePixelRatio;
  v.tx = cx - px * v.scale;
  v.ty = cy - py * v.scale;
  clamp();
  $("zoom-fit").setAttribute("aria-pressed", String(mode === "fit"));
  $("zoom-1").setAttribute("aria-pressed", String(mode !== "fit"));
  render();
}

function setSplit(fraction) {
  state.view.split = Math.min(1, Math.max(0, fraction));
  $("split").value = String(state.view.split * 100);
  render();
}

function wireViewer() {
  const viewer = $("viewer");
  let drag = null;
  viewer.addEventListener("pointerdown", (event) => {
    const onDivider = event.target.closest("#divider") !== null;
    drag = { divider: onDivider, x: event.clientX, y: event.clientY, tx: state.view.tx, ty: state.view.ty };
    viewer.setPointerCapture(event.pointerId);
    viewer.classList.toggle("panning", !onDivider);
  });
  viewer.addEventListener("pointermove", (event) => {
    if (drag === null) return;
    if (drag.divider) {
      setSplit((event.clientX - viewer.getBoundingClientRect().left) / viewer.clientWidth);
    } else {
      state.view.tx = drag.tx + event.clientX - drag.x;
      state.view.ty = drag.ty + event.clientY - drag.y;
      clamp();
      render();
    }
  });
  const stop = () => { drag = null; viewer.classList.remove("panning"); };
  viewer.addEventListener("pointerup", stop);
  viewer.addEventListener("pointercancel", stop);
  viewer.addEventListener("dblclick", (event) => {
    const box = viewer.getBoundingClientRect();
    zoom(state.view.mode === "fit" ? "1:1" : "fit", event.clientX - box.left, event.clientY - box.top);
  });
  viewer.addEventListener("keydown", (event) => {
    const step = { ArrowLeft: [40, 0], ArrowRight: [-40, 0], ArrowUp: [0, 40], ArrowDown: [0, -40] }[event.key];
    if (!step) return;
    state.view.tx += step[0];
    state.view.ty += step[1];
    clamp();
    render();
    event.preventDefault();
  });
  $("split").addEventListener("input", () => setSplit(Number($("split").value) / 100));
  $("zoom-fit").addEventListener("click", () => zoom("fit"));
  $("zoom-1").addEventListener("click", () => zoom("1:1"));
  window.addEventListener("resize", () => zoom(state.view.mode));
}

// ------------------------------------------------------------------------------------------- inputs

function wireInputs() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = ""; // the same file can be picked again (with other settings)
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); addFiles(event.dataTransfer.files); });
  // A photo dropped beside the zone would otherwise make the browser navigate away to the file.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  $("strength").addEventListener("input", () => { $("strength-value").textContent = Number($("strength").value).toFixed(2); });
}

// A page that is closed, reloaded or left will never show its waiting photos: it tells the server, whose
// queue then moves on (a beacon is the one request a browser still sends while a page goes away).
function cancelUnfinished() {
  for (const photo of state.photos) {
    if (photo.id !== null && !(photo.job && FINISHED.has(photo.job.status))) navigator.sendBeacon(`/api/jobs/${photo.id}/cancel`);
  }
}

window.addEventListener("pagehide", cancelUnfinished);
wireInputs();
wireViewer();
loadConfig();
