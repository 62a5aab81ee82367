// roitrack live dashboard. It renders the server-sent events of dashboard/events.
// Every value that comes from the server is inserted with textContent or drawn
// on the canvas, never parsed as HTML.
"use strict";

(() => {
  // The same 20 colours as the report's chart; a 21st campaign repeats the first colour.
  const COLOURS = [
    "#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df",
    "#bf3989", "#0a7ea4", "#bc4c00", "#57606a", "#4d2d8f",
    "#e0a800", "#6e9f00", "#00a3a3", "#ff7f7f", "#7f5a3a",
    "#e377c2", "#17becf", "#2c3e50", "#b5a300", "#8da8ff",
  ];
  const MAX_ALERTS = 100;
  const RENDER_DELAY_MS = 100;
  const SEPARATOR = "\u0000";

  const state = {
    catalogue: null,
    lang: "en",
    model: "last_touch",
    window: "lifetime",
    models: [],
    windows: ["lifetime"],
    currency: "EUR",
    maxPoints: 600,
    latest: new Map(), // campaign + SEPARATOR + window -> RoiUpdate
    points: new Map(), // same key -> [[published ms, sequence, {model: roi}]]
    alerts: [],
    status: "connecting",
    changed: new Set(),
    renderTimer: null,
  };

  const byId = (id) => document.getElementById(id);
  const seriesKey = (campaign, windowLabel) => campaign + SEPARATOR + windowLabel;

  // --- texts and numbers ---------------------------------------------------

  function text(name, values) {
    const texts = state.catalogue.texts;
    let template = (texts[state.lang] || {})[name];
    if (template === undefined) template = texts[state.catalogue.default_language][name];
    if (template === undefined) template = name;
    for (const [placeholder, value] of Object.entries(values || {})) {
      template = template.split("{" + placeholder + "}").join(String(value));
    }
    return template;
  }

  function locale() {
    return state.catalogue.locales[state.lang] || "en-GB";
  }

  function toNumber(value) {
    if (value === null || value === undefined || value === "") return null;
    const number = Number(value);
    return Number.isFinite(number) ? number : null;
  }

  function format(value, options) {
    const number = toNumber(value);
    if (number === null) return text("not_available");
    return new Intl.NumberFormat(locale(), options).format(number);
  }

  const money = (value) => format(value, {
    style: "currency", currency: state.currency, minimumFractionDigits: 2, maximumFractionDigits: 2,
  });
  const percent = (value) => format(value, { style: "percent", minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const ratio = (value) => format(value, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const count = (value) => format(value, { maximumFractionDigits: 2 });

  function clock(ms) {
    return new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit", second: "2-digit" })
      .format(new Date(ms));
  }

  function windowName(label) {
    if (label === "lifetime") return text("window.lifetime");
    const match = /^(\d+)([mhd])$/.exec(label);
    if (!match) return label;
    return text("window.rolling", { count: match[1], unit: text("unit." + match[2]) });
  }

  const modelName = (model) => text("model." + model);

  function element(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  // --- state ------------------------------------------------------------------

  function addPoint(key, point) {
    let points = state.points.get(key);
    if (points === undefined) {
      points = [];
      state.points.set(key, points);
    }
    const last = points[points.length - 1];
    if (last !== undefined && point[1] <= last[1]) return;
    points.push(point);
    if (points.length > state.maxPoints) points.splice(0, points.length - state.maxPoints);
  }

  function applyUpdate(update) {
    const key = seriesKey(update.campaign_id, update.window);
    const known = state.latest.get(key);
    if (known !== undefined && update.sequence <= known.sequence) return;
    state.latest.set(key, update);
    const rois = {};
    for (const [model, figures] of Object.entries(update.models)) rois[model] = figures.roi;
    addPoint(key, [Date.parse(update.emitted_at), update.sequence, rois]);
    if (update.window === state.window) state.changed.add(update.campaign_id);
  }

  function campaignLabel(update) {
    return update.campaign_name || update.campaign_id;
  }

  function campaignsInWindow() {
    const updates = [];
    for (const update of state.latest.values()) {
      if (update.window === state.window) updates.push(update);
    }
    updates.sort((a, b) => campaignLabel(a).localeCompare(campaignLabel(b), locale())
      || a.campaign_id.localeCompare(b.campaign_id));
    return updates;
  }

  function campaignColours() {
    const ids = new Set();
    for (const update of state.latest.values()) ids.add(update.campaign_id);
    const colours = new Map();
    [...ids].sort().forEach((id, index) => colours.set(id, COLOURS[index % COLOURS.length]));
    return colours;
  }

  // --- rendering ------------------------------------------------------------

  function renderTexts() {
    document.documentElement.lang = state.lang;
    document.title = text("dashboard.title");
    for (const node of document.querySelectorAll("[data-text]")) {
      node.textContent = text(node.dataset.text);
    }
    for (const button of document.querySelectorAll("button[data-lang]")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === state.lang));
    }
  }

  function fillSelect(select, values, selected, label) {
    const options = values.map((value) => {
      const option = element("option", "", label(value));
      option.value = value;
      option.selected = value === selected;
      return option;
    });
    select.replaceChildren(...options);
  }

  function renderSelectors() {
    fillSelect(byId("model"), state.models, state.model, modelName);
    fillSelect(byId("window"), state.windows, state.window, windowName);
  }

  function renderStatus() {
    const status = byId("status");
    status.textContent = text("dashboard.status." + state.status);
    status.className = "status";
    if (state.status === "live") status.classList.add("live");
    if (state.status === "reconnecting") status.classList.add("down");
  }

  function figureCell(className, content, value) {
    const cell = element("td", "number " + className, content);
    const number = toNumber(value);
    if (className === "roi" && number !== null) cell.classList.add(number < 0 ? "negative" : "positive");
    return cell;
  }

  function renderTable() {
    const rows = campaignsInWindow().map((update) => {
      const figures = update.models[state.model] || {};
      const row = element("tr");
      row.dataset.campaign = update.campaign_id;
      if (state.changed.has(update.campaign_id)) row.classList.add("changed");
      const name = element("td", "campaign", campaignLabel(update));
      if (update.campaign_name) name.append(element("small", "", update.campaign_id));
      row.append(
        name,
        figureCell("spend", money(update.spend), update.spend),
        figureCell("conversions", count(figures.conversions), figures.conversions),
        figureCell("revenue", money(figures.revenue), figures.revenue),
        figureCell("roi", percent(figures.roi), figures.roi),
        figureCell("roas", ratio(figures.roas), figures.roas),
        figureCell("cpa", money(figures.cpa), figures.cpa),
        figureCell("updated", clock(Date.parse(update.emitted_at)), null),
      );
      return row;
    });
    byId("campaigns").tBodies[0].replaceChildren(...rows);
    byId("no-campaigns").classList.toggle("hidden", rows.length > 0);
    state.changed.clear();
  }

  function renderAlerts() {
    const items = [...state.alerts].reverse().map((alert) => {
      const item = element("li", alert.state);
      item.dataset.rule = alert.rule_id || "";
      const stateName = ["fired", "resolved"].includes(alert.state) ? alert.state : "unknown";
      item.append(element("span", "badge", text("alert.state." + stateName)));
      if (alert.rule_id) item.append(element("strong", "rule", alert.rule_id));
      const message = (state.lang === "nl" ? alert.message_nl : alert.message_en) || alert.message_en || alert.message_nl;
      if (message) item.append(element("div", "message", message));
      const details = [];
      if (alert.campaign_id) details.push(text("alert.campaign") + ": " + alert.campaign_id);
      if (alert.model) details.push(modelName(alert.model));
      if (alert.window) details.push(windowName(alert.window));
      if (alert.observed !== null) details.push(text("alert.value") + ": " + ratio(alert.observed));
      if (alert.threshold !== null) details.push(text("alert.threshold") + ": " + ratio(alert.threshold));
      details.push(clock(alert.received_ms));
      item.append(element("div", "meta", details.join(" · ")));
      return item;
    });
    byId("alerts").replaceChildren(...items);
    byId("no-alerts").classList.toggle("hidden", items.length > 0);
  }

  // --- chart ------------------------------------------------------------------

  function niceStep(span, target) {
    const raw = span / target;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const scaled = raw / magnitude;
    for (const nice of [1, 2, 5]) {
      if (scaled <= nice) return nice * magnitude;
    }
    return 10 * magnitude;
  }

  function chartSeries() {
    const series = [];
    const names = new Map();
    for (const update of state.latest.values()) names.set(update.campaign_id, campaignLabel(update));
    for (const [key, points] of state.points) {
      const [campaign, windowLabel] = key.split(SEPARATOR);
      if (windowLabel !== state.window) continue;
      const values = points
        .map((point) => [point[0], toNumber(point[2][state.model])])
        .filter((point) => point[1] !== null);
      if (values.length > 0) series.push({ campaign, name: names.get(campaign) || campaign, values });
    }
    series.sort((a, b) => a.name.localeCompare(b.name, locale()));
    return series;
  }

  function drawChart() {
    const canvas = byId("chart");
    const scale = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 800;
    const height = canvas.clientHeight || 320;
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    const context = canvas.getContext("2d");
    context.setTransform(scale, 0, 0, scale, 0, 0);
    context.clearRect(0, 0, width, height);
    context.font = "12px system-ui, sans-serif";

    const series = chartSeries();
    const colours = campaignColours();
    const legend = series.map((line) => {
      const item = element("li");
      const swatch = element("span", "swatch");
      swatch.style.backgroundColor = colours.get(line.campaign) || COLOURS[0];
      item.append(swatch, element("span", "", line.name));
      return item;
    });
    byId("legend").replaceChildren(...legend);
    if (series.length === 0) {
      context.fillStyle = "#5b6576";
      context.textAlign = "center";
      context.fillText(text("dashboard.chart_empty"), width / 2, height / 2);
      return;
    }

    let xMin = Infinity, xMax = -Infinity, yMin = 0, yMax = 0;
    for (const line of series) {
      for (const [x, y] of line.values) {
        xMin = Math.min(xMin, x); xMax = Math.max(xMax, x);
        yMin = Math.min(yMin, y); yMax = Math.max(yMax, y);
      }
    }
    if (xMin === xMax) { xMin -= 30000; xMax += 30000; }
    if (yMin === yMax) { yMin -= 0.1; yMax += 0.1; }
    const yStep = niceStep(yMax - yMin, 5);
    yMin = Math.floor(yMin / yStep) * yStep;
    yMax = Math.ceil(yMax / yStep) * yStep;

    const left = 72, right = 16, top = 12, bottom = 28;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const xOf = (x) => left + ((x - xMin) / (xMax - xMin)) * plotWidth;
    const yOf = (y) => top + (1 - (y - yMin) / (yMax - yMin)) * plotHeight;

    context.textAlign = "right";
    context.textBaseline = "middle";
    for (let step = yMin; step <= yMax + yStep / 2; step += yStep) {
      // Repeated addition leaves tiny errors, which would print zero as "-0.00%".
      const y = Math.abs(step) < yStep / 1000 ? 0 : step;
      const pixel = yOf(y);
      context.strokeStyle = y === 0 ? "#8c96a6" : "#e4e8ee";
      context.lineWidth = 1;
      context.beginPath();
      context.moveTo(left, pixel);
      context.lineTo(width - right, pixel);
      context.stroke();
      context.fillStyle = "#5b6576";
      context.fillText(percent(y), left - 6, pixel);
    }
    context.textBaseline = "top";
    const xTicks = Math.max(2, Math.min(6, Math.floor(plotWidth / 120)));
    let previousLabel = "";
    for (let index = 0; index <= xTicks; index += 1) {
      const x = xMin + ((xMax - xMin) * index) / xTicks;
      const label = clock(x);
      // Over a span of a few seconds, neighbouring ticks can round to the same second.
      if (label === previousLabel) continue;
      previousLabel = label;
      context.textAlign = "center";
      if (index === 0) context.textAlign = "left";
      if (index === xTicks) context.textAlign = "right";
      context.fillText(label, xOf(x), height - bottom + 8);
    }

    for (const line of series) {
      context.strokeStyle = colours.get(line.campaign) || COLOURS[0];
      context.fillStyle = context.strokeStyle;
      context.lineWidth = 2;
      context.beginPath();
      line.values.forEach(([x, y], index) => {
        if (index === 0) context.moveTo(xOf(x), yOf(y));
        else context.lineTo(xOf(x), yOf(y));
      });
      context.stroke();
      const [lastX, lastY] = line.values[line.values.length - 1];
      context.beginPath();
      context.arc(xOf(lastX), yOf(lastY), 3, 0, 2 * Math.PI);
      context.fill();
    }
  }

  function renderAll() {
    renderTexts();
    renderSelectors();
    renderStatus();
    renderTable();
    renderAlerts();
    drawChart();
  }

  function scheduleRender() {
    if (state.renderTimer !== null) return;
    state.renderTimer = setTimeout(() => {
      state.renderTimer = null;
      renderStatus();
      renderTable();
      renderAlerts();
      drawChart();
    }, RENDER_DELAY_MS);
  }

  // --- controls ---------------------------------------------------------------

  function setParameter(name, value) {
    const url = new URL(window.location.href);
    url.searchParams.set(name, value);
    window.history.replaceState(null, "", url);
  }

  function bindControls() {
    for (const button of document.querySelectorAll("button[data-lang]")) {
      button.addEventListener("click", () => {
        state.lang = button.dataset.lang;
        setParameter("lang", state.lang);
        renderAll();
      });
    }
    byId("model").addEventListener("change", (event) => {
      state.model = event.target.value;
      setParameter("model", state.model);
      renderAll();
    });
    byId("window").addEventListener("change", (event) => {
      state.window = event.target.value;
      setParameter("window", state.window);
      renderAll();
    });
    window.addEventListener("resize", () => drawChart());
  }

  // --- feed -------------------------------------------------------------------

  function listen(source, name, handle) {
    source.addEventListener(name, (event) => {
      handle(JSON.parse(event.data));
      scheduleRender();
    });
  }

  function connect() {
    const source = new EventSource("dashboard/events");
    listen(source, "hello", (hello) => {
      state.models = hello.models;
      state.windows = hello.windows;
      state.currency = hello.currency;
      state.maxPoints = hello.max_points;
      if (!state.models.includes(state.model)) state.model = hello.default_model;
      if (!state.windows.includes(state.window)) state.window = "lifetime";
      renderSelectors();
    });
    listen(source, "history", (history) => {
      for (const series of history.series) {
        const key = seriesKey(series.campaign_id, series.window);
        for (const point of series.points) addPoint(key, point);
      }
    });
    listen(source, "roi", applyUpdate);
    listen(source, "alerts", (alerts) => { state.alerts = alerts.slice(-MAX_ALERTS); });
    listen(source, "alert", (alert) => {
      state.alerts.push(alert);
      if (state.alerts.length > MAX_ALERTS) state.alerts.splice(0, state.alerts.length - MAX_ALERTS);
    });
    listen(source, "ready", () => { state.status = "live"; });
    source.addEventListener("error", () => {
      state.status = "reconnecting";
      renderStatus();
    });
  }

  function start(catalogue) {
    state.catalogue = catalogue;
    state.models = catalogue.models;
    state.model = catalogue.default_model;
    const parameters = new URLSearchParams(window.location.search);
    const lang = (parameters.get("lang") || "").trim().toLowerCase();
    state.lang = catalogue.languages.includes(lang) ? lang : catalogue.default_language;
    if (catalogue.models.includes(parameters.get("model"))) state.model = parameters.get("model");
    if (parameters.get("window")) state.window = parameters.get("window");
    bindControls();
    renderAll();
    connect();
  }

  fetch("dashboard/catalogue.json")
    .then((response) => {
      if (!response.ok) throw new Error("catalogue request failed with HTTP " + response.status);
      return response.json();
    })
    .then(start)
    .catch((error) => {
      byId("status").textContent = String(error);
    });
})();
