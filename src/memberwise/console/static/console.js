// The console's only script of its own: CSRF header on htmx requests, charts from JSON blocks.
(function () {
  "use strict";
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) {
      event.detail.headers["X-CSRF-Token"] = meta.content;
    }
  });

  function drawCharts(root) {
    if (typeof window.Plotly === "undefined") {
      return;
    }
    root.querySelectorAll(".plot[data-figure]").forEach(function (el) {
      if (el.dataset.drawn) {
        return;
      }
      var data = document.getElementById(el.dataset.figure);
      if (!data) {
        return;
      }
      var figure = JSON.parse(data.textContent);
      var layout = Object.assign(
        { margin: { t: 10, r: 10, b: 40, l: 60 }, height: 280, font: { size: 12 } },
        figure.layout || {}
      );
      window.Plotly.newPlot(el, figure.data, layout, {
        displaylogo: false,
        responsive: true,
        modeBarButtonsToRemove: ["sendDataToCloud"],
      });
      el.dataset.drawn = "1";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    drawCharts(event.target);
  });
})();
// Refusals (4xx) come back as a fragment saying why: show it where the answer was expected.
document.addEventListener("DOMContentLoaded", function () {
  if (window.htmx) {
    window.htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "[45]..", swap: true, error: true },
    ];
  }
});
