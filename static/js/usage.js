// Usage graphs (uPlot): CPU, memory, disk and network for the last hour, day
// or month. Data comes from the element's data-usage-url as columns, fetched
// again whenever live.js reports a new reading.
(() => {
  const root = document.querySelector("[data-usage-url]");
  if (!root) return;

  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  function bytes(value) {
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
    return `${value.toFixed(value < 10 && unit ? 1 : 0)} ${units[unit]}`;
  }
  const rate = (value) => `${bytes(value)}/s`;
  const percent = (value) => `${value.toFixed(1)} %`;

  // One chart per card: which columns it draws, how values read, its y-axis top.
  const CHARTS = {
    cpu: { lines: [["cpu_percent", "CPU", "#0d6efd"]], format: percent, top: () => 100 },
    memory: { lines: [["memory_bytes", "Used", "#6f42c1"]], format: bytes, top: (data) => data.memory_total },
    disk: { lines: [["disk_read_bps", "Read", "#198754"], ["disk_write_bps", "Write", "#fd7e14"]], format: rate },
    network: { lines: [["net_rx_bps", "In", "#0aa2c0"], ["net_tx_bps", "Out", "#d63384"]], format: rate },
  };
  const timeZone = root.dataset.timeZone || "UTC";
  // Dates read as ISO 8601 in the panel's time zone, as everywhere else in the panel.
  const isoFormat = new Intl.DateTimeFormat("sv-SE", {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const plots = {};
  let range = "hour";
  let span = [0, 1]; // the whole range asked for, so one reading does not fill the width
  let loading = false;

  function options(name, chart, width, top) {
    return {
      width,
      height: 170,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      // From zero, with a little headroom over the highest point (or the capacity, where known).
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), timeZone),
      scales: { x: { time: true, range: () => span }, y: { range: (_u, _min, max) => [0, Math.max(top || 0, 1.1 * (max || 0), chart.format === percent ? 1 : 1024)] } },
      // With no pointer over the chart, the legend shows the newest reading.
      hooks: { setCursor: [(u) => { if (u.cursor.idx == null) showNewest(u); }] },
      axes: [
        { stroke: "#6c757d", grid: { stroke: "#e9ecef" }, values: (_u, ticks) => ticks.map(tickLabel) },
        { stroke: "#6c757d", grid: { stroke: "#e9ecef" }, size: 72, values: (_u, ticks) => ticks.map(chart.format) },
      ],
      series: [
        { value: (_u, t) => (t == null ? "–" : isoFormat.format(new Date(t * 1000))) },
        ...chart.lines.map(([, label, color]) => ({
          label, stroke: color, width: 1.5, fill: `${color}1f`, spanGaps: false,
          value: (_u, v) => (v == null ? "–" : chart.format(v)),
        })),
      ],
    };
  }

  // The newest reading in the legend, while it is current: a stopped VM's old values are not shown as
  // if they were now (the legend shows "–" until the pointer is over the chart).
  let current = true;
  // Time ticks as ISO too: hours and minutes within a day, the date (month-day) over a month.
  function tickLabel(t) {
    const text = isoFormat.format(new Date(t * 1000));
    return range === "month" ? text.slice(5, 10) : text.slice(11, 16);
  }

  function showNewest(plot) {
    const last = plot.data[0].length - 1;
    if (last >= 0) plot.setLegend({ idx: current ? last : null });
  }

  function showEmpty(data) {
    const collecting = data.first_point_at != null && data.running !== false;
    root.querySelector("[data-usage-empty]").hidden = collecting;
    root.querySelector("[data-usage-collecting]").hidden = !collecting;
    if (collecting) {
      const minutes = Math.max(1, Math.ceil((data.first_point_at - Date.now() / 1000) / 60));
      root.querySelector("[data-usage-minutes]").textContent = minutes === 1 ? "about a minute" : `${minutes} minutes`;
    }
  }

  function draw(data) {
    span = [data.from, data.to];
    const times = data.series.t;
    const empty = times.length === 0;
    current = data.running !== false && !empty && data.to - times[times.length - 1] <= 3 * data.step;
    root.querySelector("[data-usage-charts]").hidden = empty;
    if (empty) {
      showEmpty(data);
      return;
    }
    root.querySelector("[data-usage-empty]").hidden = true;
    root.querySelector("[data-usage-collecting]").hidden = true;
    for (const [name, chart] of Object.entries(CHARTS)) {
      const columns = [data.series.t, ...chart.lines.map(([key]) => data.series[key])];
      const box = root.querySelector(`[data-chart="${name}"]`);
      const top = chart.top ? chart.top(data) : 0;
      if (plots[name] && plots[name].range === range) {
        plots[name].setData(columns);
      } else {
        if (plots[name]) plots[name].destroy();
        plots[name] = new uPlot(options(name, chart, box.clientWidth, top), columns, box);
        plots[name].range = range;
      }
      showNewest(plots[name]);
    }
  }

  // background: a refresh the page makes by itself; the panel does not count it as the user's activity.
  async function load(background = true) {
    if (loading) return;
    loading = true;
    try {
      const headers = { Accept: "application/json", ...(background ? { "X-Background-Refresh": "1" } : {}) };
      const response = await fetch(`${root.dataset.usageUrl}?range=${range}`, { headers });
      if (response.status === 401 && response.headers.get("HX-Redirect")) {
        window.location.href = response.headers.get("HX-Redirect"); // signed out while idle
        return;
      }
      if (response.ok) draw(await response.json());
    } finally {
      loading = false;
    }
  }

  root.querySelectorAll("[data-range]").forEach((button) => {
    button.addEventListener("click", () => {
      range = button.dataset.range;
      root.querySelectorAll("[data-range]").forEach((b) => b.classList.toggle("active", b === button));
      load(false);
    });
  });
  // Every range follows new readings: the hour at once, day and month as their buckets roll up.
  document.addEventListener("live:usage", () => load());
  new ResizeObserver(() => {
    for (const [name, plot] of Object.entries(plots)) {
      plot.setSize({ width: root.querySelector(`[data-chart="${name}"]`).clientWidth, height: 170 });
    }
  }).observe(root);
  load();
})();
