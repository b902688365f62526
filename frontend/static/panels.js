// The service-failed panel: refreshes itself from the API and acknowledges alerts.
// Device-supplied text is only ever inserted with textContent.
(function () {
  "use strict";
  const panel = document.getElementById("service-failed");
  if (!panel) return;
  const body = panel.querySelector("tbody");
  const problem = panel.querySelector(".panel-error");
  const canAck = panel.dataset.canAck === "true";
  const refreshMs = Number(panel.dataset.refreshMs) || 10000;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const acknowledged = new Set();

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function showProblem(text) {
    problem.textContent = text;
    problem.hidden = !text;
  }

  async function acknowledge(client, row, button) {
    button.disabled = true;
    button.textContent = "Acknowledging…";
    const response = await fetch(`/api/clients/${encodeURIComponent(client.uuid)}/clear_service_failed`, {
      method: "POST", headers: {"X-CSRFToken": csrf}, credentials: "same-origin"});
    if (response.ok) {
      acknowledged.add(client.uuid);
      row.remove();
      panel.hidden = body.children.length === 0;
      showProblem("");
    } else {
      const answer = await response.json().catch(() => ({}));
      button.disabled = false;
      button.textContent = "Acknowledge";
      showProblem(`Could not acknowledge: ${answer.message || response.status}`);
    }
  }

  function render(items) {
    body.replaceChildren();
    for (const client of items) {
      if (acknowledged.has(client.uuid)) continue;
      const row = document.createElement("tr");
      row.dataset.uuid = client.uuid;
      row.append(cell(client.hostname || client.uuid),
                 cell(client.serviceFailed ? client.serviceFailed.unit : ""),
                 cell(client.serviceFailed ? client.serviceFailed.failedAt : ""));
      const actions = document.createElement("td");
      if (canAck) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "ack";
        button.textContent = "Acknowledge";
        button.title = "Quittieren";
        button.addEventListener("click", () => acknowledge(client, row, button));
        actions.append(button);
      }
      row.append(actions);
      body.append(row);
    }
    panel.hidden = body.children.length === 0;
  }

  async function refresh() {
    try {
      const response = await fetch("/api/clients/service_failed", {credentials: "same-origin"});
      if (response.ok) {
        render((await response.json()).items);
      }
    } catch (error) {
      showProblem("The alert panel cannot reach the server; retrying.");
    } finally {
      setTimeout(refresh, refreshMs);
    }
  }
  refresh();
})();
