// Omoi dashboard: follows the event stream and keeps the page current without reloads.
// Events update status attributes at once; the server's fragments are then re-fetched so
// the page always ends up showing the KV state, rendered by the same templates.
(() => {
  "use strict";

  const body = document.body;
  const page = body.dataset.page;
  const eventTypes = (body.dataset.eventTypes || "").split(" ").filter(Boolean);
  const taskStatus = JSON.parse(body.dataset.taskStatus || "{}");
  const terminalTicket = { "ticket.done": "done", "ticket.failed": "failed", "ticket.cancelled": "cancelled" };

  // One fetch per key at a time; an update that arrives meanwhile runs once more afterwards,
  // so the last render always reflects the latest event.
  const running = new Map();
  function refresh(key, run) {
    const state = running.get(key);
    if (state) { state.again = true; return; }
    const entry = { again: false };
    running.set(key, entry);
    setTimeout(async () => {
      try { await run(); } catch (err) { console.warn("refresh", key, err); }
      running.delete(key);
      if (entry.again) refresh(key, run);
    }, 100);
  }

  async function fragment(url) {
    const response = await fetch(url, { headers: { Accept: "text/html" } });
    if (response.status === 401) {
      // Signed out (or the token was revoked): the page cannot be kept current any more.
      window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
      return null;
    }
    if (!response.ok) return null;
    return response.text();
  }

  function setLive(state) {
    body.dataset.live = state;
    const text = document.querySelector("#live .live-text");
    if (text) text.textContent = state === "ready" ? "live" : state;
  }

  // Relative times ("12s ago") stay current between renders.
  function tickAges() {
    const now = Date.now();
    for (const el of document.querySelectorAll("time[data-age]")) {
      const s = Math.max(0, (now - Date.parse(el.getAttribute("datetime"))) / 1000);
      el.textContent = s < 60 ? `${Math.round(s)}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago`
        : s < 86400 ? `${Math.round(s / 3600)}h ago` : `${Math.round(s / 86400)}d ago`;
    }
  }

  // Index page

  function refreshRow(ticketId) {
    refresh(`row:${ticketId}`, async () => {
      const html = await fragment(`/fragments/tickets/${encodeURIComponent(ticketId)}/row`);
      if (html === null) return;
      const tpl = document.createElement("template");
      tpl.innerHTML = html.trim();
      const row = tpl.content.firstElementChild;
      const old = document.getElementById(`ticket-${ticketId}`);
      if (old) { old.replaceWith(row); return; }
      const tbody = document.getElementById("tickets-body");
      tbody.querySelector(".empty-row")?.remove();
      tbody.prepend(row);
      const count = document.getElementById("ticket-count");
      if (count) count.textContent = String(Number(count.textContent) + 1);
    });
  }

  function refreshPanel(key, url, id) {
    refresh(key, async () => {
      const html = await fragment(url);
      const panel = document.getElementById(id);
      if (html !== null && panel) { panel.innerHTML = html; tickAges(); }
    });
  }

  function onIndexEvent(type, event) {
    if (event.ticket_id === "_agents" || type.startsWith("agent.")) {
      refreshPanel("agents", "/fragments/agents", "agents-panel");
      return;
    }
    const row = document.getElementById(`ticket-${event.ticket_id}`);
    if (row && type === "ticket.phase_changed" && event.data?.to) row.dataset.phase = event.data.to;
    if (row && terminalTicket[type]) row.dataset.status = terminalTicket[type];
    if (type === "ticket.rejected" || type.endsWith(".failed")) {
      refreshPanel("failures", "/fragments/failures", "failures-panel");
    }
    if (type !== "ticket.rejected" && type !== "task.progress") refreshRow(event.ticket_id);
  }

  // Ticket page

  function drawArrows() {
    const graph = document.getElementById("task-graph");
    const svg = document.getElementById("graph-arrows");
    if (!graph || !svg) return;
    const box = graph.getBoundingClientRect();
    svg.setAttribute("width", String(graph.scrollWidth));
    svg.setAttribute("height", String(graph.scrollHeight));
    const lines = [
      '<defs><marker id="arrow-head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" ' +
      'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ];
    for (const card of graph.querySelectorAll("[data-task]")) {
      for (const dep of (card.dataset.depends || "").split(" ").filter(Boolean)) {
        const from = graph.querySelector(`[data-task="${CSS.escape(dep)}"]`);
        if (!from) continue;
        const a = from.getBoundingClientRect();
        const b = card.getBoundingClientRect();
        const sameColumn = Math.abs(a.left - b.left) < 4;
        const x1 = (sameColumn ? a.left + 12 : a.right) - box.left + graph.scrollLeft;
        const y1 = (sameColumn ? a.bottom : a.top + a.height / 2) - box.top;
        const x2 = (sameColumn ? b.left + 12 : b.left) - box.left + graph.scrollLeft;
        const y2 = (sameColumn ? b.top : b.top + b.height / 2) - box.top;
        const bend = sameColumn ? `C${x1 - 24},${y1} ${x2 - 24},${y2}` : `C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2}`;
        lines.push(`<path class="arrow" data-from="${dep}" data-to="${card.dataset.task}" ` +
          `d="M${x1},${y1} ${bend} ${x2},${y2}" marker-end="url(#arrow-head)"/>`);
      }
    }
    svg.innerHTML = lines.join("");
  }

  function refreshDetail(ticketId) {
    refresh("detail", async () => {
      const html = await fragment(`/fragments/tickets/${encodeURIComponent(ticketId)}/detail`);
      const detail = document.getElementById("ticket-detail");
      if (html !== null && detail) { detail.innerHTML = html; tickAges(); drawArrows(); }
    });
  }

  function onTicketEvent(type, event) {
    const detail = document.getElementById("ticket-detail");
    if (!detail || event.ticket_id !== detail.dataset.ticketId) return;
    const status = taskStatus[type];
    if (event.task && status) {
      const card = detail.querySelector(`[data-task="${CSS.escape(event.task)}"]`);
      if (card) {
        card.dataset.status = status;
        const label = card.querySelector("[data-status-label]");
        if (label) { label.textContent = status; label.className = `badge status-${status}`; }
      }
    }
    const head = detail.querySelector(".ticket-head");
    if (head && type === "ticket.phase_changed" && event.data?.to) head.dataset.phase = event.data.to;
    if (head && terminalTicket[type]) head.dataset.status = terminalTicket[type];
    if (type !== "task.progress") refreshDetail(detail.dataset.ticketId);
  }

  // Wiring

  const handle = page === "ticket" ? onTicketEvent : onIndexEvent;
  const source = new EventSource(body.dataset.stream);
  source.addEventListener("ready", () => setLive("ready"));
  source.addEventListener("error", () => setLive(source.readyState === EventSource.CLOSED ? "offline" : "reconnecting"));
  for (const type of eventTypes) {
    source.addEventListener(type, (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      body.dataset.lastEventId = message.lastEventId;
      handle(type, event);
    });
  }

  setInterval(tickAges, 1000);
  if (page === "index") {
    // Heartbeats are not events: poll the agents, and the charts now and then.
    setInterval(() => refreshPanel("agents", "/fragments/agents", "agents-panel"), 5000);
    setInterval(() => refreshPanel("charts", "/fragments/charts", "charts-panel"), 30000);
  } else {
    drawArrows();
    window.addEventListener("resize", drawArrows);
  }
})();
