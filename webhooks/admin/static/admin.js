/* Draws the charts described by the page's JSON block (no inline script: the CSP forbids it)
   and reloads pages that ask for it. */
(function () {
  "use strict";
  var COLORS = {
    "sent": "#2e7d32", "failed": "#c62828", "missed": "#ef6c00", "pending": "#9e9e9e",
    "succeeded": "#2e7d32", "canceled": "#9e9e9e", "refunded": "#6a1b9a",
    "waiting_for_capture": "#f9a825", "queued": "#1f5fbf", "running": "#2e7d32",
    "messages/s": "#1f5fbf", "limit": "#6b7280", "429s": "#c62828",
    "new habits": "#6a1b9a", "check-ins done": "#2e7d32", "skipped": "#9e9e9e"
  };
  var FALLBACK = ["#1f5fbf", "#ef6c00", "#2e7d32", "#c62828", "#6a1b9a", "#00838f"];

  function has(list, label) { return (list || []).indexOf(label) !== -1; }

  function draw(id, spec) {
    var canvas = document.getElementById(id);
    if (!canvas || typeof Chart === "undefined") { return; }
    spec.data.datasets.forEach(function (ds, i) {
      var color = COLORS[ds.label] || FALLBACK[i % FALLBACK.length];
      ds.borderColor = color;
      ds.backgroundColor = color;
      if (has(spec.dashed, ds.label)) { ds.borderDash = [6, 4]; ds.pointRadius = 0; }
      if (has(spec.line, ds.label)) { ds.type = "line"; ds.backgroundColor = "transparent"; }
      if (has(spec.bars, ds.label)) { ds.type = "bar"; }
      if (has(spec.secondary, ds.label)) { ds.yAxisID = "y2"; }
    });
    var scales = {
      x: { stacked: !!spec.stacked, ticks: { maxRotation: 0, autoSkip: true } },
      y: { stacked: !!spec.stacked, beginAtZero: true }
    };
    if (spec.secondary) {
      scales.y2 = { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } };
    }
    new Chart(canvas, {
      type: spec.type,
      data: spec.data,
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 interaction: { mode: "index", intersect: false }, scales: scales }
    });
    canvas.setAttribute("data-drawn", "1");
  }

  var block = document.getElementById("admin-charts");
  if (block) {
    var charts = JSON.parse(block.textContent);
    Object.keys(charts).forEach(function (id) { draw(id, charts[id]); });
  }
  var refresh = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (refresh > 0) {
    window.setTimeout(function () { window.location.reload(); }, refresh * 1000);
  }
})();
