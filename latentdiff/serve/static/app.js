// The latentdiff page: a client of the same /sdapi/v1 API that A1111 tools use, plus the explainer's
// /latentdiff/v1/explain; nothing private.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { lastSeed: null, generating: false, explaining: false, defaults: null, reportUrl: null };

// --- talking to the server -------------------------------------------------------------------

function headers() {
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value || localStorage.getItem("latentdiff-api-key");
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function refused(response) {
  // An error answer -> an Error with its one-line detail.
  const data = await response.json().catch(() => ({ detail: `${response.status} ${response.statusText}` }));
  if (response.status === 401) $("key-label").hidden = false;  // ask for the key, then try again
  return new Error(data.detail || response.statusText);
}

async function api(path, body) {
  const response = await fetch(`sdapi/v1/${path}`, body === undefined ? { headers: headers() } : {
    method: "POST", headers: headers(), body: JSON.stringify(body),
  });
  if (!response.ok) throw await refused(response);
  return response.json();
}

function showError(message) {
  $("error").textContent = message || "";
}

// --- settings ------------------------------------------------------------------------------

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function settings() {
  const number = (id) => Number($(id).value);
  return {
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    sampler_name: $("sampler_name").value,
    scheduler: $("scheduler").value,
    steps: number("steps"),
    cfg_scale: number("cfg_scale"),
    seed: number("seed"),
    width: number("width"),
    height: number("height"),
    batch_size: number("batch_size"),
  };
}

// A1111 `parameters` keys (as /png-info parses them) -> the form's fields.
const FIELDS_FROM_PARAMETERS = {
  "Prompt": "prompt", "Negative prompt": "negative_prompt", "Steps": "steps", "Sampler": "sampler_name",
  "CFG scale": "cfg_scale", "Seed": "seed", "Size-1": "width", "Size-2": "height",
  "Denoising strength": "denoising_strength",
};

function restore(parameters) {
  for (const [key, id] of Object.entries(FIELDS_FROM_PARAMETERS)) {
    if (key in parameters) $(id).value = parameters[key];
  }
  $("scheduler").value = parameters["Schedule type"] === "Karras" ? "Karras" : "Automatic";
  $("strength-value").value = $("denoising_strength").value;
}

async function loadModelSettings() {
  const options = await api("options");
  const defaults = options.latentdiff_defaults, limits = options.latentdiff_limits;
  $("model").value = options.sd_model_checkpoint;
  for (const id of ["steps", "cfg_scale", "sampler_name", "width", "height"]) $(id).value = defaults[id];
  $("width").max = limits.max_width;
  $("height").max = limits.max_height;
  $("steps").max = limits.max_steps;
  $("batch_size").max = limits.max_images;
}

async function init() {
  const [samplers, models] = await Promise.all([api("samplers"), api("sd-models")]);
  $("sampler_name").replaceChildren(...samplers.map((s) => new Option(s.name)));
  $("model").replaceChildren(...models.map((m) => new Option(m.title)));
  await loadModelSettings();
  document.body.dataset.ready = "true";
}

async function switchModel() {
  $("notice").textContent = `loading ${$("model").value} ...`;
  try {
    await api("options", { sd_model_checkpoint: $("model").value });
    await loadModelSettings();
    $("notice").textContent = `${$("model").value} loaded`;
  } catch (error) {
    showError(error.message);
  }
}

// --- the input image and the mask painted on it ----------------------------------------------

const mask = $("mask-canvas");
let painting = false;

function showMode() {
  $("image-input").hidden = mode() === "txt2img";
  $("mask-tools").hidden = mode() !== "inpaint";
  mask.hidden = mode() !== "inpaint";
}

function setInputImage(dataUrl) {
  const image = $("init-image");
  image.onload = () => {
    // The mask is drawn at the image's own resolution; the page only scales it for display.
    mask.width = image.naturalWidth;
    mask.height = image.naturalHeight;
    $("width").value = Math.max(8, image.naturalWidth - (image.naturalWidth % 8));
    $("height").value = Math.max(8, image.naturalHeight - (image.naturalHeight % 8));
  };
  image.src = dataUrl;
}

function paint(event) {
  if (!painting) return;
  const box = mask.getBoundingClientRect();
  const scale = mask.width / box.width;  // display pixels -> image pixels
  const context = mask.getContext("2d");
  context.fillStyle = "#ff2d55";  // shown over the image at half opacity; any painted pixel is mask
  context.beginPath();
  const radius = (Number($("brush").value) / 2) * scale;
  context.arc((event.clientX - box.left) * scale, (event.clientY - box.top) * scale, radius, 0, 2 * Math.PI);
  context.fill();
}

function maskDataUrl() {
  // White where painted, black elsewhere: A1111's convention (white = repaint).
  const out = document.createElement("canvas");
  out.width = mask.width;
  out.height = mask.height;
  const context = out.getContext("2d");
  context.drawImage(mask, 0, 0);
  context.globalCompositeOperation = "source-in";  // painted pixels turn white, keeping their coverage
  context.fillStyle = "#fff";
  context.fillRect(0, 0, out.width, out.height);
  context.globalCompositeOperation = "destination-over";  // black behind everything
  context.fillStyle = "#000";
  context.fillRect(0, 0, out.width, out.height);
  return out.toDataURL("image/png");
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// --- generating, with live progress --------------------------------------------------------

function taskId() {
  return `page-${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

async function watchProgress(id) {
  // Polls until the request ends; shows our task's progress and preview, or the queue ahead of it.
  while (state.generating) {
    try {
      const progress = await api("progress");
      if (!state.generating) break;  // an answer that arrived after the result: stale
      if (progress.state.task_id === id) {
        $("progress").value = progress.progress;
        const eta = progress.eta_relative > 0 ? `, ${progress.eta_relative.toFixed(1)} s left` : "";
        $("progress-text").textContent = `${progress.textinfo}${eta}`;
        if (progress.current_image) $("preview").src = `data:image/png;base64,${progress.current_image}`;
      } else if (progress.state.job_count > 0) {
        $("progress-text").textContent = `waiting: ${progress.state.job_count} request(s) queued or running`;
      }
    } catch (error) {
      $("progress-text").textContent = error.message;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function generate(event) {
  event.preventDefault();
  showError("");
  const body = { ...settings(), force_task_id: taskId() };
  const endpoint = mode() === "txt2img" ? "txt2img" : "img2img";
  if (endpoint === "img2img") {
    if (!$("init-image").src) return showError("choose an input image first (a file, or 'use as input' on a result)");
    body.init_images = [$("init-image").src];
    body.denoising_strength = Number($("denoising_strength").value);
    if (mode() === "inpaint") body.mask = maskDataUrl();
  }
  state.generating = true;
  $("generate").disabled = true;
  $("interrupt").disabled = false;
  $("progress").value = 0;
  const watching = watchProgress(body.force_task_id);
  try {
    const result = await api(endpoint, body);
    const info = JSON.parse(result.info);
    state.lastSeed = info.seed;
    result.images.forEach((image, i) => addResult(image, info.infotexts[i], info.all_seeds[i]));
    $("progress").value = 1;
    $("progress-text").textContent = "done";
  } catch (error) {
    showError(error.message);
  } finally {
    state.generating = false;
    await watching;
    $("generate").disabled = false;
    $("interrupt").disabled = !state.explaining;
  }
}

// --- explaining: this prompt and seed step by step, as the explainer's one-page report ---------

async function explain() {
  showError("");
  const form = settings();
  if (!form.prompt.trim()) return showError("write a prompt to explain first");
  const body = {};
  for (const key of ["prompt", "negative_prompt", "seed", "steps", "cfg_scale", "sampler_name", "scheduler"]) {
    body[key] = form[key];
  }
  // Opened now, while the click still counts as the user's (popup blockers allow that), filled in later.
  const tab = window.open("", "_blank");
  if (tab) tab.document.write("<!doctype html><title>latentdiff explain</title><p>explaining &hellip;</p>");
  state.explaining = true;
  $("explain").disabled = true;
  $("interrupt").disabled = false;
  $("notice").textContent = "explaining… (one run per guidance scale, and a few more)";
  try {
    const response = await fetch("latentdiff/v1/explain", {
      method: "POST", headers: headers(), body: JSON.stringify(body),
    });
    if (!response.ok) throw await refused(response);
    const page = new Blob([await response.text()], { type: "text/html" });
    if (state.reportUrl) URL.revokeObjectURL(state.reportUrl);
    state.reportUrl = URL.createObjectURL(page);
    const link = document.createElement("a");
    link.id = "report-link";
    link.href = state.reportUrl;
    link.target = "_blank";
    link.textContent = "open the report";
    if (tab && !tab.closed) {
      tab.location.href = state.reportUrl;
      $("notice").replaceChildren("explained: the report is in a new tab (", link, ")");
    } else {  // the popup was blocked, or closed meanwhile
      $("notice").replaceChildren("explained: ", link);
    }
  } catch (error) {
    if (tab) tab.close();
    $("notice").textContent = "";
    showError(error.message);
  } finally {
    state.explaining = false;
    $("explain").disabled = false;
    $("interrupt").disabled = !state.generating;
  }
}

function addResult(base64Png, parameters, seed) {
  const figure = document.createElement("figure");
  figure.className = "result";
  const image = new Image();
  image.src = `data:image/png;base64,${base64Png}`;
  image.alt = parameters.split("\n")[0];
  const caption = document.createElement("figcaption");
  const text = document.createElement("pre");
  text.textContent = parameters;
  const useAsInput = button("use as input", () => {
    setInputImage(image.src);
    if (mode() === "txt2img") document.querySelector("input[value=img2img]").click();
  });
  const reuseSeed = button("reuse seed", () => { $("seed").value = seed; });
  const download = document.createElement("a");
  download.href = image.src;
  download.download = `latentdiff-${seed}.png`;
  download.textContent = "download";
  caption.append(text, useAsInput, reuseSeed, download);
  figure.append(image, caption);
  $("gallery").prepend(figure);
}

function button(label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

// --- wiring ------------------------------------------------------------------------------

$("settings").addEventListener("submit", generate);
$("explain").addEventListener("click", explain);
$("interrupt").addEventListener("click", () => api("interrupt", {}).catch((error) => showError(error.message)));
$("model").addEventListener("change", switchModel);
$("seed-random").addEventListener("click", () => { $("seed").value = -1; });
$("seed-reuse").addEventListener("click", () => { if (state.lastSeed !== null) $("seed").value = state.lastSeed; });
$("denoising_strength").addEventListener("input", (e) => { $("strength-value").value = e.target.value; });
document.querySelectorAll("input[name=mode]").forEach((radio) => radio.addEventListener("change", showMode));
$("init-file").addEventListener("change", async (e) => setInputImage(await readFile(e.target.files[0])));
$("mask-clear").addEventListener("click", () => mask.getContext("2d").clearRect(0, 0, mask.width, mask.height));
$("api-key").addEventListener("change", (e) => {
  localStorage.setItem("latentdiff-api-key", e.target.value);
  init().then(() => showError(""), (error) => showError(error.message));
});
mask.addEventListener("pointerdown", (e) => { painting = true; mask.setPointerCapture(e.pointerId); paint(e); });
mask.addEventListener("pointermove", paint);
mask.addEventListener("pointerup", () => { painting = false; });

// Drop a PNG anywhere: the server reads its `parameters` chunk, the form takes the values.
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", async (e) => {
  e.preventDefault();
  const file = e.dataTransfer.files[0];
  if (!file) return;
  try {
    const info = await api("png-info", { image: await readFile(file) });
    if (!info.info) throw new Error(`${file.name} carries no generation parameters`);
    restore(info.parameters);
    $("notice").textContent = `settings restored from ${file.name}`;
  } catch (error) {
    showError(error.message);
  }
});

showMode();
init().catch((error) => showError(`cannot reach the server: ${error.message}`));
