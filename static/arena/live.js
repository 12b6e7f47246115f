// Live pages: a websocket brings news, the server brings what the page shows.
// An event carries the page's rows as the server renders them (and the snapshot they come from, built
// once for every open page); an event without them, and every (re)connection, fetches the same from
// the page's data-live URL, so a missed event costs nothing. The rows' markup lives on the server only.
(function () {
  "use strict";
  function renderBoard(table, data) {
    table.tBodies[0].innerHTML = data.rows;
  }

  var TERMINAL = ["done", "partial", "failed"], reloading = false;
  function renderRun(table, data) {
    var run = data.snapshot;
    // The sections of a finished run (diversity, charts, blend search) are built by the server:
    // reload once when the run ends. A page rendered finished never reloads, so this cannot loop.
    if (TERMINAL.indexOf(run.state) >= 0 && TERMINAL.indexOf(table.dataset.renderedState) < 0) {
      if (!reloading) { reloading = true; location.reload(); }
      return;
    }
    var state = document.getElementById("run-state");
    state.textContent = run.state_label || run.state;
    state.className = "state " + run.state;
    document.getElementById("run-error").textContent = run.error || "";
    var done = 0;
    run.entries.forEach(function (r) { if (!r.is_blend) { done += r.done_items; } });
    var rate = document.getElementById("run-rate");
    if (run.elapsed_s && done) {
      var perS = done / run.elapsed_s;
      var left = 0;
      run.entries.forEach(function (r) { if (!r.is_blend) { left += r.total_items - r.done_items; } });
      rate.textContent = perS.toFixed(2) + " items/s" + (run.state === "running" && left ? ", about " + Math.ceil(left / perS) + " s left" : "");
    }
    table.tBodies[0].innerHTML = data.rows;
  }

  function live(table, render, badge) {
    var delay = 500, pending = false, again = false, pushes = 0;
    function show(data) { render(table, data); table.dataset.updated = String(Date.now()); }
    function reload() {
      if (pending) { again = true; return; }
      pending = true;
      var seen = pushes;
      fetch(table.dataset.live, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        // What an event pushed meanwhile is newer than this answer: keep it.
        .then(function (data) { if (seen === pushes) { show(data); } })
        .catch(function () {})
        .finally(function () { pending = false; if (again) { again = false; reload(); } });
    }
    function connect() {
      var proto = location.protocol === "https:" ? "wss://" : "ws://";
      var ws = new WebSocket(proto + location.host + table.dataset.ws);
      ws.onopen = function () { delay = 500; badge.textContent = "live"; badge.className = "live on"; reload(); };
      ws.onmessage = function (ev) {
        var event = null;
        try { event = JSON.parse(ev.data); } catch (e) { event = null; }
        if (event && typeof event.rows === "string") { pushes += 1; show(event); } else { reload(); }
      };
      ws.onclose = function (ev) {
        badge.className = "live off";
        if (ev.code === 4401 || ev.code === 4404) { badge.textContent = "not available"; return; }
        badge.textContent = "reconnecting…";
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    connect();
  }
  window.Arena = {live: live, renderBoard: renderBoard, renderRun: renderRun};
})();
