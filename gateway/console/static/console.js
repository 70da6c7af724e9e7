// The console's behaviour: the credential (this tab's session storage only), uploads with
// progress, authorised downloads, charts. Nothing here holds tenant data of its own.
"use strict";
(function () {
  const KEY = "deepfaas.authorization";
  const credential = () => sessionStorage.getItem(KEY);

  function headerFor(text) {
    const value = text.trim();
    if (/^bearer\s+/i.test(value)) return "Bearer " + value.replace(/^bearer\s+/i, "");
    if (/^[0-9a-f-]{36}:\S+$/i.test(value)) return "Basic " + btoa(value);
    return "Bearer " + value;
  }

  function showSignIn(message) {
    document.getElementById("sign-in").hidden = false;
    document.getElementById("main").hidden = true;
    const error = document.getElementById("sign-in-error");
    error.hidden = !message;
    error.textContent = message || "";
  }

  document.addEventListener("htmx:configRequest", (event) => {
    const auth = credential();
    if (!auth) { event.preventDefault(); return; }
    event.detail.headers["Authorization"] = auth;
  });
  document.addEventListener("htmx:responseError", (event) => {
    if (event.detail.xhr.status === 401) {
      sessionStorage.removeItem(KEY);
      showSignIn("The credential was refused: sign in again.");
    }
  });

  async function signIn(event) {
    event.preventDefault();
    const field = event.target.elements.credential;
    const auth = headerFor(field.value);
    const response = await fetch("/ui/x/whoami", { headers: { Authorization: auth } });
    if (!response.ok) {
      let detail = "refused";
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      showSignIn("Not signed in: " + detail);
      return;
    }
    sessionStorage.setItem(KEY, auth);
    field.value = "";
    window.location.reload();
  }

  function objectUrl(bucket, key) {
    return "/v1/buckets/" + encodeURIComponent(bucket) + "/objects/" +
      key.split("/").map(encodeURIComponent).join("/");
  }

  function upload(zone, file) {
    const bucket = zone.dataset.bucket;
    const key = (zone.dataset.prefix || "") + file.name;
    const list = zone.parentElement.querySelector(".uploads");
    const item = document.createElement("li");
    item.className = "upload";
    const label = document.createElement("span");
    label.textContent = key;
    const bar = document.createElement("progress");
    bar.max = 100; bar.value = 0;
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = "uploading";
    item.append(label, bar, state);
    list.prepend(item);
    const since = new Date(Date.now() - 2000).toISOString();
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", objectUrl(bucket, key));
    xhr.setRequestHeader("Authorization", credential());
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 300) {
        state.textContent = "failed: " + xhr.status;
        state.classList.add("error");
        return;
      }
      bar.value = 100;
      state.textContent = "uploaded";
      const caused = document.createElement("div");
      caused.className = "caused";
      const query = new URLSearchParams({ key: key, since: since });
      caused.setAttribute("hx-get", "/ui/x/buckets/" + encodeURIComponent(bucket) + "/caused?" + query);
      caused.setAttribute("hx-trigger", "load, every 2s");
      item.append(caused);
      htmx.process(caused);
      htmx.trigger(document.body, "df-objects");
    });
    xhr.addEventListener("error", () => { state.textContent = "failed"; state.classList.add("error"); });
    xhr.send(file);
  }

  function bindDrop(zone) {
    if (zone.dataset.bound) return;
    zone.dataset.bound = "1";
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      for (const file of e.dataTransfer.files) upload(zone, file);
    });
  }

  // one listener on the page, not one per file input: an input swapped in by htmx works from
  // the moment it is in the page (a listener bound in htmx.onLoad missed a file chosen
  // between the swap and the settle)
  function onFileChosen(e) {
    const input = e.target;
    if (!(input instanceof HTMLInputElement) || input.type !== "file") return;
    const zone = input.closest(".drop");
    if (!zone) return;
    for (const file of input.files) upload(zone, file);
    input.value = "";
  }

  async function download(button) {
    const response = await fetch(button.dataset.download, { headers: { Authorization: credential() } });
    if (!response.ok) { button.textContent = "failed: " + response.status; return; }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = button.dataset.name || "download";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  function drawChart(holder) {
    const data = JSON.parse(holder.dataset.chart);
    const place = holder.querySelector(".plot");
    place.replaceChildren();
    if (!data.x.length) { place.textContent = "nothing to show yet"; return; }
    const width = Math.max(260, Math.min(place.clientWidth || 600, 900));
    const options = {
      width: width,
      height: 220,
      scales: { x: { time: Boolean(data.time) } },
      // versions and counts are whole numbers: no ticks between them
      axes: [
        data.time ? { label: data.xlabel || "" } : { label: data.xlabel || "", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] },
        { label: data.ylabel || "" },
      ],
      series: [{ label: data.xlabel || "x" }].concat(data.series.map((s, i) => ({
        label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2,
        points: { show: data.x.length < 30 },
      }))),
    };
    new uPlot(options, [data.x].concat(data.series.map((s) => s.values)), place);
  }

  // Events: the SSE stream of `/v1/events/stream` read with fetch (EventSource cannot send
  // the Authorization header); rows are built with textContent, never as HTML.
  let following = null;

  function eventRow(seq, event) {
    const row = document.createElement("tr");
    const time = event.time ? new Date(event.time).toLocaleTimeString() : "";
    const cells = [seq, time, event.type, event.source, event.subject || ""];
    cells.forEach((value, i) => {
      const cell = document.createElement("td");
      cell.textContent = String(value);
      if (i === 3) cell.className = "wide";
      row.append(cell);
    });
    row.dataset.type = event.type;
    return row;
  }

  async function follow(form) {
    if (following) following.abort();
    following = new AbortController();
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) query.set(name, value);
    const state = document.getElementById("event-state");
    const body = document.querySelector("#event-list tbody");
    const stop = document.getElementById("event-stop");
    let response;
    try {
      response = await fetch("/v1/events/stream?" + query, {
        headers: { Authorization: credential(), Accept: "text/event-stream" },
        signal: following.signal,
      });
    } catch (e) { state.textContent = "Not following: " + e; return; }
    if (!response.ok) {
      let detail = String(response.status);
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      state.textContent = "Not following: " + detail;
      return;
    }
    state.textContent = "Following: new events appear at the top.";
    stop.disabled = false;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let seq = "", data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("id: ")) seq = line.slice(4);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          body.prepend(eventRow(seq, JSON.parse(data)));
          while (body.rows.length > 200) body.deleteRow(-1);
        }
      }
      state.textContent = "The stream ended.";
    } catch (e) {
      state.textContent = "Stopped.";
    }
    stop.disabled = true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const events = document.getElementById("event-filter");
    if (events && credential()) {
      events.addEventListener("submit", (e) => { e.preventDefault(); follow(events); });
      document.getElementById("event-stop").addEventListener("click", () => following && following.abort());
      follow(events);
    }
    const menu = document.querySelector("header .menu");
    menu.addEventListener("click", () => {
      const open = document.body.classList.toggle("nav-open");
      menu.setAttribute("aria-expanded", String(open));
    });
    document.getElementById("sign-in-form").addEventListener("submit", signIn);
    const out = document.getElementById("sign-out");
    out.addEventListener("click", () => { sessionStorage.removeItem(KEY); window.location.reload(); });
    if (credential()) {
      document.getElementById("main").hidden = false;
      out.hidden = false;
    } else {
      showSignIn("");
    }
    document.body.addEventListener("change", onFileChosen);
    document.body.addEventListener("click", (e) => {
      const button = e.target.closest("[data-download]");
      if (button) { e.preventDefault(); download(button); }
    });
    htmx.onLoad((elt) => {
      const root = elt.querySelectorAll ? elt : document;
      if (root.matches && root.matches(".drop")) bindDrop(root);
      root.querySelectorAll(".drop").forEach(bindDrop);
      if (root.matches && root.matches("[data-chart]")) drawChart(root);
      root.querySelectorAll("[data-chart]").forEach(drawChart);
    });
  });
})();
