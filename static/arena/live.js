// Live pages: a websocket brings news, the JSON snapshot brings the truth.
// An event carries the snapshot the page shows (built once for every open page); an event without
// one, and every (re)connection, reloads it from the server, so a missed event costs nothing.
(function () {
  "use strict";
  function esc(v) {
    return String(v === null || v === undefined ? "" : v).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function f3(x) { return x === null || x === undefined ? "" : Number(x).toFixed(3); }
  function ci(lo, hi) { return '<span class="ci">[' + f3(lo) + ", " + f3(hi) + "]</span>"; }
  // Same markup as the server templates' badge (board_rows.html, run.html).
  function regressed(r) {
    return r.regressed ? ' <span class="state failed regressed" title="scored lower than its previous result by more than the 95% interval allows">regressed</span>' : "";
  }

  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  // Same as tables.py _evaluated: "23 Nov 02:21" (UTC), the full time on hover.
  function evaluated(iso) {
    if (!iso) { return ""; }
    var d = new Date(iso);
    var full = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
    return '<time datetime="' + esc(iso) + '" title="' + full + '">' + pad(d.getUTCDate()) + " " + MONTHS[d.getUTCMonth()] +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + "</time>";
  }

  function renderBoard(table, data) {
    var team = data.team;
    var rows = data.rows.map(function (r, i) {
      var score = r.score !== null
        ? f3(r.score) + " " + ci(r.ci_low, r.ci_high)
        : '<span class="state ' + esc(r.state) + '">' + esc(r.state) + " " + r.done_items + "/" + r.total_items + "</span>";
      var lift = r.lift !== null ? f3(r.lift) + " " + ci(r.lift_low, r.lift_high).replace("</span>", " vs " + esc(r.best_member) + (r.lift_p !== null && r.lift_p !== undefined ? ", McNemar p=" + f3(r.lift_p) : "") + "</span>") : "";
      var lat = r.latency_p50 !== null ? Number(r.latency_p50).toFixed(2) + " / " + Number(r.latency_p95).toFixed(2) : "";
      var members = r.members.map(function (m) { return '<span class="chip">' + esc(m) + "</span>"; }).join(" ");
      return '<tr data-entry="' + esc(r.entry) + '"><td>' + (r.score !== null ? i + 1 : "–") + '</td><td class="name"><a href="/t/' + esc(team) + "/entries/" + r.entry_id + '/">' + esc(r.entry) +
        "</a>" + regressed(r) + '</td><td><span class="kind">' + esc(r.kind) + '</span></td><td class="num">' + score +
        '</td><td class="num">' + esc(r.rank_upper_bound) + '</td><td class="num lift">' + lift + '</td><td class="members">' + members +
        '</td><td class="num">' + r.member_calls + '</td><td class="num">' + r.tokens + '</td><td class="num">' + Number(r.compute_s).toFixed(1) +
        '</td><td class="num">' + lat + "</td><td>" + esc(r.suite_version) + '</td><td class="num">' + evaluated(r.evaluated_at) + "</td></tr>";
    });
    table.tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="13" class="muted">Nothing evaluated on this suite yet.</td></tr>';
  }

  var TERMINAL = ["done", "failed"], reloading = false;
  function renderRun(table, data) {
    // The sections of a finished run (diversity, charts, blend search) are built by the server:
    // reload once when the run ends. A page rendered finished never reloads, so this cannot loop.
    if (TERMINAL.indexOf(data.state) >= 0 && TERMINAL.indexOf(table.dataset.renderedState) < 0) {
      if (!reloading) { reloading = true; location.reload(); }
      return;
    }
    var state = document.getElementById("run-state");
    state.textContent = data.state;
    state.className = "state " + data.state;
    document.getElementById("run-error").textContent = data.error || "";
    var done = 0;
    data.entries.forEach(function (r) { if (!r.is_blend) { done += r.done_items; } });
    var rate = document.getElementById("run-rate");
    if (data.elapsed_s && done) {
      var perS = done / data.elapsed_s;
      var left = 0;
      data.entries.forEach(function (r) { if (!r.is_blend) { left += r.total_items - r.done_items; } });
      rate.textContent = perS.toFixed(2) + " items/s" + (data.state === "running" && left ? ", about " + Math.ceil(left / perS) + " s left" : "");
    }
    table.tBodies[0].innerHTML = data.entries.map(function (r) {
      return "<tr><td>" + esc(r.entry) + regressed(r) + "</td><td>" + esc(r.kind) + '</td><td><progress max="' + r.total_items + '" value="' + r.done_items + '"></progress> ' +
        r.done_items + "/" + r.total_items + ' <span class="state ' + esc(r.state) + '">' + esc(r.state) + '</span></td><td class="num">' +
        (r.score !== null ? f3(r.score) + " [" + f3(r.ci_low) + ", " + f3(r.ci_high) + "]" : "") + '</td><td class="num">' +
        (r.lift !== null ? f3(r.lift) + " [" + f3(r.lift_low) + ", " + f3(r.lift_high) + "]" : "") + '</td><td class="num">' + r.new_calls +
        '</td><td class="error">' + esc(r.error) + "</td></tr>";
    }).join("");
  }

  function live(table, render, badge) {
    var delay = 500, pending = false, again = false, pushes = 0;
    function show(data, event) { render(table, data, event); table.dataset.updated = String(Date.now()); }
    function reload() {
      if (pending) { again = true; return; }
      pending = true;
      var seen = pushes;
      fetch(table.dataset.snapshot, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        // A snapshot pushed meanwhile is newer than this answer: keep it.
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
        if (event && event.snapshot) { pushes += 1; show(event.snapshot, event); } else { reload(); }
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
