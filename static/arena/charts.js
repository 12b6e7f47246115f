// Plotly figures built on the server: each <div data-figure="ID"> draws the JSON in <script id="ID">;
// a live page draws again the figure its events bring (draw).
// plotly.js (several MB) is fetched only after the page has loaded and painted, from the URL in this script's
// data-plotly attribute, so the server-rendered tables show at once; figures wait for it, and a live
// event's figure that arrives first is drawn once it has loaded. A page that loaded plotly itself
// (window.Plotly already there) draws at once.
(function () {
  "use strict";
  var CONFIG = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]};
  var script = document.currentScript;
  var source = script && script.dataset.plotly;
  var waiting = [];  // [div, figure] drawn once plotly is ready, the latest per div
  var requested = false, fetched = false;

  function render(div, fig) {
    window.Plotly.react(div, fig.data, fig.layout, CONFIG);
    div.dataset.drawn = String(Date.now());
  }

  function draw(div, fig) {
    waiting = waiting.filter(function (w) { return w[0] !== div; });
    if (!fig) { div.hidden = true; return; }
    div.hidden = false;
    if (window.Plotly) { render(div, fig); return; }
    waiting.push([div, fig]);
    load();
  }

  function ready() {
    var queued = waiting;
    waiting = [];
    queued.forEach(function (w) { render(w[0], w[1]); });
  }

  function load() {
    if (requested || window.Plotly || !source) { return; }
    // Before the load event this waits: fetching plotly then would hold back the page's `load`.
    if (document.readyState !== "complete") { window.addEventListener("load", load, {once: true}); return; }
    requested = true;
    // And until a frame has been painted, so that running plotly cannot hold back the first paint
    // either; the timer stands in where no frame comes (a tab in the background).
    requestAnimationFrame(function () { setTimeout(fetchPlotly, 0); });
    setTimeout(fetchPlotly, 250);
  }

  function fetchPlotly() {
    if (fetched) { return; }
    fetched = true;
    var tag = document.createElement("script");
    tag.src = source;
    tag.async = true;
    tag.onload = ready;
    document.head.appendChild(tag);
  }

  function drawAll() {
    document.querySelectorAll("[data-figure]").forEach(function (div) {
      var data = document.getElementById(div.dataset.figure);
      if (data) { draw(div, JSON.parse(data.textContent)); }
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", drawAll); } else { drawAll(); }
  window.ArenaCharts = {draw: draw};
})();
