// The console's only script of its own: hands each chart's configuration (JSON the page embeds beside
// its <canvas data-chart="id">) to the packaged Chart.js, again after htmx swaps in fresh content; and
// stops a page's polls once its logout is sent.
// Configurations are data (api/console/charts.py); the one named formatter turns epoch ms into dates.
(function () {
  "use strict";
  function dateTicks(config) {
    var scales = (config.options && config.options.scales) || {};
    Object.keys(scales).forEach(function (axis) {
      var ticks = scales[axis].ticks;
      if (ticks && ticks.format === "date") {
        delete ticks.format;
        ticks.callback = function (value) { return new Date(value).toISOString().slice(0, 10); };
      }
    });
    return config;
  }
  function draw(root) {
    if (typeof Chart === "undefined") { return; }
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.dataset.chart);
      if (!source) { return; }
      var old = Chart.getChart(canvas);
      if (old) { old.destroy(); }
      new Chart(canvas, dateTicks(JSON.parse(source.textContent)));
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (event) { draw(event.target); });
  // A page being left by its logout takes no more of its own polls' answers: a poll in flight as the logout
  // ends the session is answered "session ended", and following that would take the browser there instead of
  // to the logout's own answer.
  var leaving = false;
  document.addEventListener("submit", function (event) {
    if (/\/logout$/.test(event.target.getAttribute("action") || "")) { leaving = true; }
  });
  ["htmx:beforeRequest", "htmx:beforeOnLoad"].forEach(function (name) {
    document.addEventListener(name, function (event) { if (leaving) { event.preventDefault(); } });
  });
})();
