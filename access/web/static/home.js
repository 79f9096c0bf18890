// The homeowner's switches and erasure form, through the JSON API (consent and erasure) with the
// session's CSRF token. Without this script the switches still work as plain forms.
"use strict";
(function () {
  const wordsEl = document.getElementById("words");
  const W = wordsEl ? JSON.parse(wordsEl.textContent) : {};
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  function w(key, values) {
    let text = W[key] || key;
    Object.keys(values || {}).forEach(function (k) { text = text.split("{" + k + "}").join(values[k]); });
    return text;
  }
  async function send(method, url, body) {
    const r = await fetch(url, { method: method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body) });
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.detail || answer.title || String(r.status));
    return answer;
  }

  // Suspend or resume provision (to one company, or to all) through PUT .../consent; the page is then
  // shown again so every company's line says what now holds.
  document.querySelectorAll("form.switch").forEach(function (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      const label = button.textContent;
      button.textContent = w("sending");
      try {
        await send("PUT", "/api/v1/households/" + encodeURIComponent(form.dataset.household) + "/consent", {
          scope: "provision", recipient: form.dataset.recipient || null, suspended: form.dataset.suspended !== "true" });
        window.location.reload();
      } catch (e) {
        button.disabled = false;
        button.textContent = label;
        const note = document.createElement("p");
        note.className = "error";
        note.setAttribute("role", "alert");
        note.textContent = e.message;
        form.appendChild(note);
      }
    });
  });

  // Erasure: POST .../erasure with the chosen categories (or all), then the list shows its status.
  const erasure = document.getElementById("erasure-form");
  if (erasure) {
    const all = document.getElementById("erase-all");
    const boxes = erasure.querySelectorAll('input[name="category"]');
    all.addEventListener("change", function () { boxes.forEach(function (b) { b.disabled = all.checked; }); });
    erasure.addEventListener("submit", async function (event) {
      event.preventDefault();
      const out = document.getElementById("erasure-status");
      const chosen = Array.from(boxes).filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
      if (!all.checked && !chosen.length) { out.textContent = w("erasure_pick"); return; }
      out.textContent = w("sending");
      try {
        await send("POST", "/api/v1/households/" + encodeURIComponent(erasure.dataset.household) + "/erasure",
          { categories: all.checked ? null : chosen });
        out.textContent = w("erasure_sent");
        window.location.reload();
      } catch (e) {
        out.textContent = e.message;
      }
    });
  }
})();
