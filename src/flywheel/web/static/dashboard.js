// Draws the dashboard's Vega-Lite charts (specs and data come from the page as
// JSON, never as code). ast: true makes vega-embed use Vega's expression
// interpreter, which keeps it CSP-safe: no eval.
(function () {
  "use strict";
  var specs = JSON.parse(document.getElementById("chart-specs").textContent);
  var figures = document.querySelectorAll("[data-chart]");
  var drawn = 0;
  figures.forEach(function (figure) {
    var spec = specs[figure.dataset.chart];
    vegaEmbed(figure, spec, { actions: false, ast: true, renderer: "svg" })
      .then(function () {
        drawn += 1;
        if (drawn === figures.length) document.body.dataset.chartsReady = String(drawn);
      })
      .catch(function (error) {
        figure.textContent = "chart failed: " + error;
        figure.classList.add("failed");
      });
  });
})();
