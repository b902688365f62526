// The client detail's command panel: follows the commands' lifecycle live. Issuing goes
// through the server-rendered confirmation page, never from here.
// Everything shown comes back from the API and is inserted with textContent only.
(function () {
  "use strict";
  const panel = document.getElementById("commands");
  if (!panel) return;
  const client = panel.dataset.client;
  const body = panel.querySelector("tbody");
  const problem = panel.querySelector(".panel-error");
  const idleMs = Number(panel.dataset.refreshMs) || 10000;
  const busyMs = 1000; // while a command is open, follow it closely
  const open = new Set(["queued", "sent", "accepted", "execution_started"]);
  let timer = null;

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function showProblem(text) {
    problem.textContent = text;
    problem.hidden = !text;
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").slice(0, 19) : "";
  }

  function render(items) {
    body.replaceChildren();
    for (const c of items) {
      const row = document.createElement("tr");
      row.dataset.command = c.commandId;
      row.append(cell(when(c.issuedAt)), cell(c.action), cell(c.state, `state ${c.state}`),
                 cell(c.requestedBy), cell(c.reason), cell(c.errorCode || ""));
      body.append(row);
    }
    if (!items.length) {
      const row = document.createElement("tr");
      row.className = "empty";
      const td = cell("No commands.");
      td.colSpan = 6;
      row.append(td);
      body.append(row);
    }
    return items.some((c) => open.has(c.state));
  }

  async function refresh() {
    clearTimeout(timer);
    let busy = false;
    try {
      const response = await fetch(`/api/clients/${encodeURIComponent(client)}/commands?perPage=20`,
                                   {credentials: "same-origin"});
      if (response.ok) {
        busy = render((await response.json()).items);
        showProblem("");
      }
    } catch (error) {
      showProblem("The command panel cannot reach the server; retrying.");
    } finally {
      timer = setTimeout(refresh, busy ? busyMs : idleMs);
    }
  }

  refresh();
})();
