// Plotly figures built on the server: each <div data-figure="ID"> draws the JSON in <script id="ID">;
// a live page draws again the figure its events bring (draw).
(function () {
  "use strict";
  var CONFIG = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]};

  function draw(div, fig) {
    if (!fig) { div.hidden = true; return; }
    div.hidden = false;
    window.Plotly.react(div, fig.data, fig.layout, CONFIG);
    div.dataset.drawn = String(Date.now());
  }

  function drawAll() {
    document.querySelectorAll("[data-figure]").forEach(function (div) {
      var source = document.getElementById(div.dataset.figure);
      if (source) { draw(div, JSON.parse(source.textContent)); }
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", drawAll); } else { drawAll(); }
  window.ArenaCharts = {draw: draw};
})();
