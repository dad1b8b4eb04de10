// Charts of a loop's numbers per iteration (metrics, or numeric loop results), drawn
// with the vendored uPlot. Each <div class="charts" data-src="..."> asks its
// data-src for the series (JSON, downsampled on the server, extremes kept); one
// chart per series. Drag across a chart to zoom: the narrower range is asked for
// again, so zooming in shows full detail. "Whole loop" goes back. While the run
// is live (data-live), the charts are refreshed unless zoomed: each time the live
// stream (SSE, through htmx) swaps in the panel's new summary, else every two seconds.
// A file of its own: the page's Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  function yAxisSize(u, values) {
    if (!values) { return 50; }
    var longest = 0;
    values.forEach(function (v) { longest = Math.max(longest, String(v).length); });
    return Math.max(50, 16 + 7 * longest);
  }

  function fetchSeries(box, range) {
    var url = box.dataset.src;
    if (range) {
      url += "?start=" + Math.floor(range[0]) + "&end=" + Math.ceil(range[1]);
    }
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; });
  }

  function render(box, data, range) {
    var names = data ? Object.keys(data.series) : [];
    box.replaceChildren();
    // Nothing to chart: hide, unless zoomed into an empty range (keep "Whole loop").
    if (!names.length && !range) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    var bar = document.createElement("p");
    bar.className = "charts-bar";
    bar.textContent = (data.source === "metrics" ? "Metrics" : "Loop result") +
      " per iteration" + (range ? " (iterations " + Math.floor(range[0]) + "\u2013" +
      Math.ceil(range[1]) + ")" : "") + " \u00b7 drag to zoom ";
    if (range) {
      var reset = document.createElement("button");
      reset.type = "button";
      reset.textContent = "Whole loop";
      reset.addEventListener("click", function () { load(box, null); });
      bar.appendChild(reset);
    }
    box.appendChild(bar);
    var width = Math.max(280, Math.min(560, box.clientWidth / Math.min(names.length, 2) - 16));
    names.forEach(function (name) {
      var s = data.series[name];
      var holder = document.createElement("div");
      holder.className = "chart";
      holder.dataset.series = name;
      box.appendChild(holder);
      var opts = {
        // The title says how many iterations the series has and its latest value.
        title: name + " \u00b7 " + s.count + " iterations" +
          (s.y.length ? " \u00b7 last " + Number(s.y[s.y.length - 1].toPrecision(6)) : "") +
          (s.count > s.x.length ? " (" + s.x.length + " points shown)" : ""),
        width: width,
        height: 180,
        scales: { x: { time: false } },
        series: [{ label: "iteration" }, { label: name, stroke: "#1f5fbf", width: 1.5 }],
        // The y axis as wide as its longest tick label ("200,000" fits, not "0,000").
        axes: [{}, { size: yAxisSize }],
        // No local zoom: the selection asks the server for that range (full detail).
        cursor: { drag: { x: true, y: false, setScale: false } },
        hooks: {
          setSelect: [function (u) {
            if (u.select.width < 4) { return; }
            var lo = u.posToVal(u.select.left, "x");
            var hi = u.posToVal(u.select.left + u.select.width, "x");
            load(box, [lo, hi]);
          }]
        }
      };
      new uPlot(opts, [s.x, s.y], holder);
    });
  }

  function load(box, range) {
    box.zoomed = range;
    box.busy = true;
    box.loaded = Date.now();
    fetchSeries(box, range).then(function (data) {
      box.busy = false;
      // A zoom asked for meanwhile wins over a live refresh of the whole loop.
      if (box.zoomed === range) { render(box, data, range); }
    }, function () { box.busy = false; });
  }

  function refresh(box) {
    if (!box.zoomed && !box.busy && document.body.contains(box)) { load(box, null); }
  }

  function start() {
    document.querySelectorAll("div.charts[data-src]").forEach(function (box) {
      load(box, null);
      if (box.dataset.live) {
        var panel = box.closest("section") || document.body;
        // The live stream swapped this panel's summary in: there are new iterations.
        panel.addEventListener("htmx:afterSwap", function () { refresh(box); });
        var timer = setInterval(function () {
          if (!document.body.contains(box)) { clearInterval(timer); return; }
          if (Date.now() - box.loaded >= 2000) { refresh(box); }
        }, 2000);
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
