// Plotly figures built on the server: each <div data-figure="ID"> draws the JSON in <script id="ID">.
// A chart with data-figure-url is fetched again when its page's live data changes.
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

  var pending = {};
  function refresh(id) {
    // Redraw one chart from its URL; a refresh asked for while one is under way runs once after it.
    var div = document.getElementById(id);
    if (!div || !div.dataset.figureUrl) { return; }
    if (pending[id]) { pending[id] = "again"; return; }
    pending[id] = "busy";
    fetch(div.dataset.figureUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (fig) { draw(div, fig); })
      .catch(function () {})
      .finally(function () { var again = pending[id] === "again"; pending[id] = null; if (again) { refresh(id); } });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", drawAll); } else { drawAll(); }
  window.ArenaCharts = {refresh: refresh, draw: draw};
})();
