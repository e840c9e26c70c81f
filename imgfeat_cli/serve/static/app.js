// The search page: pick or drop a photo, POST it to /v1/indexes/NAME/search, show the matches.
// Plain DOM code, no dependencies. With a server token, the token typed here stays in this tab.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("imgfeat-token") || "" };

function authHeaders() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, options) {
  const resp = await fetch(path, { ...(options || {}), headers: { ...authHeaders() } });
  if (resp.status === 401) {
    $("token-row").hidden = false;
    throw new Error("this server needs a token: type it above, then try again");
  }
  return resp;
}

async function errorText(resp) {
  try {
    const doc = await resp.json();
    const err = doc.error || {};
    return (err.message || resp.statusText) + (err.hint ? " (" + err.hint + ")" : "");
  } catch (e) {
    return resp.status + " " + resp.statusText;
  }
}

async function loadServer() {
  try {
    const resp = await api("/v1/server");
    if (!resp.ok) throw new Error(await errorText(resp));
    const info = await resp.json();
    const select = $("index");
    select.replaceChildren();
    for (const name of info.indexes) select.append(new Option(name, name));
    $("topk").value = info.top_k;
    say(info.indexes.length ? "" : "this server has no index yet", !info.indexes.length);
  } catch (e) {
    say(e.message, true);
  }
}

async function thumbnail(index, id) {
  const resp = await api(`/v1/indexes/${encodeURIComponent(index)}/items/${id}/thumbnail`);
  if (!resp.ok) return null;
  return URL.createObjectURL(await resp.blob());
}

async function showResults(index, result) {
  const list = $("results");
  list.replaceChildren();
  if (!result.ids.length) {
    say("no match above the threshold", false);
    return;
  }
  say(`${result.ids.length} matches in ${index} (${result.count} items)`, false);
  for (let i = 0; i < result.ids.length; i++) {
    const item = document.createElement("li");
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = result.labels[i];
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = result.scores[i].toFixed(4);
    const placeholder = document.createElement("div");
    placeholder.className = "noimg";
    placeholder.textContent = "no image";
    item.append(placeholder, label, score);
    list.append(item);
    thumbnail(index, result.ids[i]).then((url) => {
      if (!url) return;
      const img = document.createElement("img");
      img.src = url;
      img.alt = result.labels[i];
      placeholder.replaceWith(img);
    });
  }
}

async function search(file) {
  const index = $("index").value;
  if (!index) return say("no index to search", true);
  $("query").src = URL.createObjectURL(file);
  $("query").hidden = false;
  say("searching...", false);
  const form = new FormData();
  form.append("image", file);
  form.append("top_k", $("topk").value || "5");
  try {
    state.token = $("token").value || state.token;
    if ($("token").value) sessionStorage.setItem("imgfeat-token", state.token);
    const resp = await api(`/v1/indexes/${encodeURIComponent(index)}/search`, { method: "POST", body: form });
    if (!resp.ok) throw new Error(await errorText(resp));
    const doc = await resp.json();
    await showResults(index, { ...doc.results[0], count: doc.count });
  } catch (e) {
    say(e.message, true);
  }
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => e.target.files[0] && search(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) search(e.dataTransfer.files[0]);
  });
  $("token").addEventListener("change", () => { state.token = $("token").value; loadServer(); });
  loadServer();
}

setup();
