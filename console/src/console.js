// The console's only script: pages work without it (every action is a plain
// form, totals are a link); with it, the order page follows the order live and
// the orders page fills in its totals without holding up the list.
"use strict";

function yuan(fen) {
  const neg = fen < 0;
  const abs = Math.abs(fen);
  const whole = Math.floor(abs / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const cents = String(abs % 100).padStart(2, "0");
  return (neg ? "-" : "") + "¥" + whole + "." + cents;
}

function fillTotals() {
  const box = document.getElementById("totals");
  if (!box || !box.dataset.src) return;
  fetch(box.dataset.src, { credentials: "same-origin" })
    .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
    .then((html) => { box.innerHTML = html; })
    .catch(() => {});
}

function followOrder() {
  const order = document.getElementById("order");
  if (!order || order.dataset.live !== "true") return;
  const base = "/orders/" + encodeURIComponent(order.dataset.order);
  const state = document.getElementById("live-state");
  const source = new EventSource(base + "/events");
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.onmessage = (message) => {
    let e;
    try { e = JSON.parse(message.data); } catch (_) { return; }
    const version = Number(order.dataset.version);
    const refunded = Number(order.dataset.refunded);
    if (e.version < version || (e.version === version && e.refunded_fee === refunded)) return;
    order.dataset.version = String(e.version);
    order.dataset.refunded = String(e.refunded_fee);
    const status = document.getElementById("status");
    status.textContent = e.status;
    status.className = "status st-" + e.status;
    document.getElementById("refunded").textContent = yuan(e.refunded_fee);
    document.getElementById("version").textContent = String(e.version);
    if (e.transaction_id) document.getElementById("transaction").textContent = e.transaction_id;
    fetch(base + "/timeline", { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then((html) => { document.getElementById("timeline").innerHTML = html; })
      .catch(() => {});
  };
}

document.addEventListener("DOMContentLoaded", () => {
  fillTotals();
  followOrder();
});
