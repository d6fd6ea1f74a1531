// The contributor page: key → ZIP → upload form → storage → live status, file by file.

import { ApiError, api, formatBytes } from "./api.js";
import { follow } from "./sse.js";
import { StorageError, sendToStorage } from "./upload.js";

const KEY = "ingest.apiKey";
const LIMIT = "ingest.maxBytes";
const CURRENT = "ingest.currentUpload";
const NOBODY = "00000000-0000-0000-0000-000000000000"; // no upload: 404 for a valid key

const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY),
  file: null,
  maxBytes: Number(sessionStorage.getItem(LIMIT)) || null,
  sending: null, // {abort} while the file goes to storage
  following: null, // AbortController of the event stream
  view: null, // the upload's latest status (GET /v1/uploads/{id})
  productShown: null, // the product whose mosaic is on the page
};

// --- small helpers ---------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function say(id, text, { focus = false } = {}) {
  const node = $(id);
  node.textContent = text || "";
  if (focus && text) node.focus();
}

function sentence(text) {
  if (!text) return "";
  const first = text[0].toUpperCase() + text.slice(1);
  return /[.!?…]$/.test(first) ? first : first + ".";
}

// --- the key ---------------------------------------------------------------------------------

function showKey() {
  const known = Boolean(state.key);
  $("key-form").hidden = known;
  $("key-known").hidden = !known;
  $("upload-section").hidden = !known;
  if (known) $("key-prefix").textContent = state.key.slice(0, 11) + "…";
}

async function useKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  say("key-error", "");
  if (!key) {
    say("key-error", "Enter your API key first.");
    $("key-input").focus();
    return;
  }
  $("key-button").disabled = true;
  say("key-error", "");
  try {
    // There is no "who am I" route: asking for an upload that cannot exist tells a valid
    // key (404: nothing of yours there) from a refused one (401).
    await api(`/v1/uploads/${NOBODY}`, { key });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      say("key-error", `The API refused this key (401): ${sentence(error.message)}`);
      $("key-input").focus();
      $("key-button").disabled = false;
      return;
    }
    if (error instanceof ApiError && error.status === 0) {
      say("key-error", `The key could not be checked: ${sentence(error.message)}`);
      $("key-button").disabled = false;
      return;
    }
    // 404: the key is good.
  }
  $("key-button").disabled = false;
  state.key = key;
  sessionStorage.setItem(KEY, key);
  $("key-input").value = "";
  showKey();
  $("file-input").focus();
}

function forgetKey(message = "") {
  stopAll();
  state.key = null;
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(CURRENT);
  $("who").firstChild.textContent = "Using key ";
  showKey();
  say("key-error", message);
  $("key-input").focus();
}

// --- the file --------------------------------------------------------------------------------

function problemWith(file) {
  if (!file) return "Choose a ZIP first.";
  const zip = /\.zip$/i.test(file.name) || /zip/.test(file.type);
  if (!zip) return `“${file.name}” is not a ZIP archive: a set is a ZIP of SVGs with its manifest.json.`;
  if (file.size === 0) return `“${file.name}” is empty.`;
  if (state.maxBytes && file.size > state.maxBytes) {
    return `“${file.name}” is ${formatBytes(file.size)}, larger than the ${formatBytes(state.maxBytes)} limit: split the set into smaller ZIPs.`;
  }
  return null;
}

function chooseFile(file) {
  state.file = file || null;
  say("upload-error", "");
  if (!file) {
    $("file-info").textContent = "No file chosen yet.";
    $("upload-button").disabled = true;
    return;
  }
  $("file-info").textContent = `${file.name}, ${formatBytes(file.size)}`;
  const problem = problemWith(file);
  if (problem) say("upload-error", problem);
  $("upload-button").disabled = Boolean(problem) || Boolean(state.sending);
}

function dragAndDrop() {
  const zone = $("drop");
  // A file dropped anywhere else must not make the browser leave the page to open it.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
  zone.addEventListener("dragenter", () => zone.classList.add("over"));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("over");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = event.dataTransfer?.files;
    if (!files || files.length === 0) return;
    if (files.length > 1) {
      say("upload-error", "Drop one ZIP at a time.");
      return;
    }
    chooseFile(files[0]);
  });
}

// --- uploading -------------------------------------------------------------------------------

function progress(loaded, total) {
  const percent = total ? Math.floor((loaded / total) * 100) : 0;
  $("progress").value = percent;
  $("progress").textContent = `${percent} %`;
  const size = state.file ? ` of ${formatBytes(state.file.size)}` : "";
  $("progress-text").textContent = `${percent} %${size}`;
}

function busy(sending) {
  $("upload-button").disabled = sending || !state.file || Boolean(problemWith(state.file));
  $("file-input").disabled = sending;
  $("cancel-button").hidden = !sending;
}

function apiProblem(error, doing) {
  if (!(error instanceof ApiError)) return `${doing} failed: ${error?.message || error}`;
  switch (error.status) {
    case 0:
      return `${doing} failed: ${error.message}.`;
    case 413:
      return `This ZIP is too large: ${sentence(error.message)} Split the set into smaller ZIPs.`;
    case 422:
    case 400:
      return `The API cannot take this file: ${sentence(error.message)}`;
    default: {
      const trace = error.details?.trace_id ? ` (trace ${error.details.trace_id})` : "";
      return `${doing} failed (${error.status}): ${sentence(error.message)}${trace}`;
    }
  }
}

async function upload(event) {
  event.preventDefault();
  const file = state.file;
  const problem = problemWith(file);
  if (problem) {
    say("upload-error", problem, { focus: true });
    return;
  }
  stopFollowing();
  resetStatus();
  say("upload-error", "");
  progress(0, file.size);
  busy(true);
  let form;
  try {
    form = await api("/v1/uploads", {
      key: state.key,
      method: "POST",
      body: { size: file.size, content_type: "application/zip" },
    });
  } catch (error) {
    busy(false);
    if (error instanceof ApiError && error.status === 401) {
      forgetKey(`The API refused your key (401): ${sentence(error.message)} Enter a valid key.`);
      return;
    }
    if (error instanceof ApiError && error.status === 413 && error.details?.limit) {
      state.maxBytes = error.details.limit;
      sessionStorage.setItem(LIMIT, String(state.maxBytes));
    }
    say("upload-error", apiProblem(error, "Asking for an upload form"), { focus: true });
    return;
  }
  state.maxBytes = form.max_bytes;
  sessionStorage.setItem(LIMIT, String(form.max_bytes));
  const contributor = form.key.split("/")[1];
  if (contributor) $("who").firstChild.textContent = `Uploading as ${contributor}, key `;

  $("status-section").hidden = false;
  setStep("sent", "active");
  say("status", `Sending ${file.name} to storage…`);
  const sending = sendToStorage(form.upload, file, { onProgress: progress, maxBytes: form.max_bytes });
  state.sending = sending;
  try {
    await sending.promise;
  } catch (error) {
    state.sending = null;
    busy(false);
    setStep("sent", "failed");
    say("status", "The ZIP was not sent.");
    const message = error instanceof StorageError ? error.message : `Sending failed: ${error}`;
    say("upload-error", message, { focus: true });
    return;
  }
  state.sending = null;
  busy(false);
  setStep("sent", "done");
  say("status", "Stored. Waiting for the pipeline to pick it up…");
  sessionStorage.setItem(CURRENT, JSON.stringify({ id: form.id, events: form.events_url }));
  followUpload(form.events_url);
}

function cancel() {
  state.sending?.abort();
}

// --- live status -----------------------------------------------------------------------------

const UPLOAD_WORDS = {
  awaiting_upload: "Waiting for the ZIP to reach storage…",
  uploaded: "Stored. Waiting for the pipeline to pick it up…",
  expired: "The upload form expired before the ZIP was sent: upload again.",
  received: "The pipeline received the ZIP and is opening it…",
  processing: "Rendering the images…",
  ready: "Every image has its outcome.",
  failed: "The upload failed.",
  rejected: "The ZIP was rejected.",
  duplicate: "This exact ZIP was uploaded before: nothing new to render.",
  superseded: "A newer upload of this set replaced this one.",
};

const FILE_WORDS = {
  pending: "Waiting",
  ready: "Ready",
  failed: "Failed",
  refused: "Refused",
};

function setStep(step, value) {
  const node = document.querySelector(`#steps [data-step="${step}"]`);
  if (node) node.dataset.state = value;
}

function resetStatus() {
  state.view = null;
  state.productShown = null;
  for (const step of ["sent", "images", "mosaic", "searchable"]) setStep(step, "todo");
  $("files").replaceChildren();
  $("files-empty").hidden = false;
  $("count").textContent = "";
  $("mosaic").hidden = true;
  $("mosaic-img").removeAttribute("src");
  say("status", "");
  say("connection", "");
  say("problem", "");
  say("final", "");
  $("again-button").hidden = true;
}

function fileRow(file) {
  const label = file.title || file.path;
  const thumb = el("div", { class: "thumb" });
  if (file.preview) {
    const img = el("img", { src: file.preview, alt: `Preview of ${label}`, decoding: "async" });
    img.addEventListener("error", () => noPreview(img), { once: true });
    thumb.append(img);
  }
  const text = el(
    "div",
    { class: "text" },
    el("div", { class: "name" }, label),
    file.title ? el("div", { class: "path" }, file.path) : null,
  );
  if (file.reason && file.status !== "ready") {
    const prefix = file.status === "refused" ? "Not taken" : "Could not be rendered";
    text.append(el("p", { class: "reason" }, `${prefix}: ${sentence(file.reason)}`));
  }
  for (const warning of file.warnings || []) {
    text.append(el("p", { class: "warning" }, `Warning: ${sentence(warning)}`));
  }
  const badge = el("span", { class: "badge" }, FILE_WORDS[file.status] || file.status);
  return el("li", { class: "file", "data-path": file.path, "data-status": file.status }, thumb, text, badge);
}

// A rendition that does not load (the previews are not served to browsers here: see
// INGEST_PUBLIC_BASE_URL): say so rather than show a broken image.
function noPreview(img) {
  const note = el("span", { class: "no-preview", title: img.src }, "no preview");
  img.replaceWith(note);
  say("connection", "Some previews could not be loaded from storage: the images are ready all the same.");
}

function showFile(file) {
  const list = $("files");
  const existing = [...list.children].find((node) => node.dataset.path === file.path);
  const row = fileRow(file);
  if (existing) {
    // Keep a thumbnail that is already there: no reload, no flicker.
    const oldImg = existing.querySelector(".thumb img");
    const newImg = row.querySelector(".thumb img");
    if (oldImg && newImg && oldImg.getAttribute("src") === newImg.getAttribute("src")) {
      newImg.replaceWith(oldImg);
    }
    existing.replaceWith(row);
  } else {
    list.append(row);
  }
  $("files-empty").hidden = list.children.length > 0;
}

function showView(view) {
  state.view = view;
  say("status", UPLOAD_WORDS[view.status] || view.status);
  const finalFailure = ["rejected", "failed", "expired", "superseded"].includes(view.status);
  if (finalFailure && view.reason) {
    say("problem", `${UPLOAD_WORDS[view.status] || view.status} ${sentence(view.reason)}`);
  }
  if (view.status !== "awaiting_upload" && view.status !== "expired") setStep("sent", "done");
  for (const file of view.files || []) showFile(file);
  showSteps();
}

function showSteps() {
  const view = state.view;
  if (!view) return;
  const product = view.product;
  const stopped = ["rejected", "failed", "expired"].includes(view.status);
  const files = view.files || [];
  const ready = files.filter((f) => f.status === "ready").length;
  const done = files.filter((f) => f.status !== "pending").length;
  if (files.length) $("count").textContent = `(${done} of ${files.length} done, ${ready} ready)`;
  if (product?.complete) setStep("images", "done");
  else setStep("images", stopped ? "failed" : view.upload_id ? "active" : "todo");
  if (view.mosaic) setStep("mosaic", "done");
  else setStep("mosaic", product?.complete && !stopped ? "active" : "todo");
  if (view.indexed) setStep("searchable", "done");
  else setStep("searchable", view.mosaic && !stopped ? "active" : "todo");
}

function onEvent(type, data) {
  const view = state.view;
  switch (type) {
    case "state":
      showView(data);
      break;
    case "upload":
      if (view) showView({ ...view, ...data });
      break;
    case "image":
      if (view) {
        const files = [...(view.files || [])];
        const at = files.findIndex((f) => f.path === data.path);
        if (at >= 0) files[at] = data;
        else files.push(data);
        state.view = { ...view, files };
      }
      showFile(data);
      showSteps();
      break;
    case "product":
      if (view) state.view = { ...view, product: data };
      say("status", `Every image has its outcome: ${data.ready} ready, ${data.failed} failed. Updating the family mosaic…`);
      showSteps();
      break;
    case "mosaic":
      if (view) state.view = { ...state.view, mosaic: true };
      say("status", "The family mosaic is up to date. Making the product searchable…");
      showSteps();
      break;
    case "indexed":
      if (view) state.view = { ...state.view, indexed: true };
      say("status", "The product is searchable.");
      showSteps();
      showProduct(data.product_id);
      break;
    case "done":
      finish(data);
      break;
    default:
      break; // an event this page does not know yet
  }
}

async function showProduct(productId) {
  if (!productId || state.productShown === productId) return;
  state.productShown = productId;
  let product;
  try {
    product = await api(`/v1/products/${productId}`);
  } catch (error) {
    state.productShown = null;
    say("connection", `The published product could not be read: ${sentence(error.message)}`);
    return;
  }
  if (product.mosaic) {
    const img = $("mosaic-img");
    img.alt = `Mosaic of the family ${product.family.name}`;
    img.width = product.mosaic.width;
    img.height = product.mosaic.height;
    img.src = product.mosaic.png;
    $("mosaic-caption").textContent = `The ${product.family.name} family, with “${product.title}”.`;
    $("mosaic").hidden = false;
  }
  state.view = state.view && { ...state.view, productTitle: product.title };
}

function finish(summary) {
  sessionStorage.removeItem(CURRENT);
  const counts = summary.files || {};
  const parts = [`${counts.ready || 0} ready`, `${counts.failed || 0} failed`];
  if (counts.refused) parts.push(`${counts.refused} refused`);
  if (summary.indexed) {
    say("status", "Done: the product is searchable.");
    say("final", `Finished: ${parts.join(", ")}. The product is searchable.`);
    showProduct(summary.product_id);
  } else {
    const words = UPLOAD_WORDS[summary.status] || summary.status;
    say("final", `Finished: ${words}${summary.reason ? " " + sentence(summary.reason) : ""}`);
  }
  say("connection", "");
  $("again-button").hidden = false;
}

function stopFollowing() {
  state.following?.abort();
  state.following = null;
}

function stopAll() {
  state.sending?.abort();
  stopFollowing();
}

async function followUpload(eventsUrl) {
  stopFollowing();
  const controller = new AbortController();
  state.following = controller;
  $("status-section").hidden = false;
  try {
    await follow(eventsUrl, {
      key: state.key,
      signal: controller.signal,
      onEvent,
      onConnection: ({ state: connection, retryIn }) => {
        if (connection === "lost") {
          say("connection", `Connection to the API lost: trying again in ${Math.ceil(retryIn / 1000)} s…`);
        } else if (connection === "reconnecting") {
          say("connection", "Reconnecting to the API…");
        } else {
          say("connection", "");
        }
      },
    });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      forgetKey(`The API refused your key (401): ${sentence(error.message)} Enter a valid key.`);
      return;
    }
    if (error instanceof ApiError && error.status === 404) sessionStorage.removeItem(CURRENT);
    say("problem", `Live status stopped: ${sentence(error.message)}`, { focus: true });
  } finally {
    if (state.following === controller) state.following = null;
  }
}

function again() {
  stopFollowing();
  resetStatus();
  $("status-section").hidden = true;
  $("file-input").value = "";
  chooseFile(null);
  progress(0, 0);
  $("file-input").focus();
}

// --- start -----------------------------------------------------------------------------------

function start() {
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", () => forgetKey(""));
  $("file-input").addEventListener("change", (event) => chooseFile(event.target.files[0]));
  $("upload-form").addEventListener("submit", upload);
  $("cancel-button").addEventListener("click", cancel);
  $("again-button").addEventListener("click", again);
  window.addEventListener("offline", () => say("connection", "You are offline: the page carries on when the network is back."));
  window.addEventListener("online", () => say("connection", ""));
  dragAndDrop();
  showKey();
  // A reload while an upload is followed: follow it again (the stream starts with its state).
  const current = sessionStorage.getItem(CURRENT);
  if (state.key && current) {
    try {
      const { events } = JSON.parse(current);
      if (events) followUpload(events);
    } catch {
      sessionStorage.removeItem(CURRENT);
    }
  }
  document.documentElement.dataset.ready = "true";
}

start();
