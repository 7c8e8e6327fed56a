// "Share" on a conversation: create a read-only link (optionally expiring), show it in the
// "Share link" box to copy, list the conversation's links and revoke them
// (views/shares.py; only the creator, or an owner or admin, may, and the server says so).
import { api } from "./common.js";
import { url } from "./lib/urls.js";
import { currentConversation } from "./playground.js";

const $ = (id) => document.getElementById(id);
const dialog = $("share-dialog");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "never");

function showError(message) {
  $("share-error").textContent = message;
  $("share-error").hidden = !message;
}

function row(link) {
  const tr = document.createElement("tr");
  const state = link.revoked_at ? "revoked" : link.active ? "active" : "expired";
  for (const text of [link.created_by || "—", when(link.created_at), when(link.expires_at), state]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  const td = document.createElement("td");
  if (!link.revoked_at) {
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.textContent = "Revoke";
    revoke.setAttribute("aria-label", `Revoke the link created ${when(link.created_at)}`);
    revoke.addEventListener("click", async () => {
      try {
        await api("DELETE", url("api-share-link", link.id));
        await list();
      } catch (error) {
        showError(error.message);
      }
    });
    td.append(revoke);
  }
  tr.append(td);
  return tr;
}

async function list() {
  const id = currentConversation();
  if (!id) return;
  const data = await api("GET", url("api-share-links", id));
  dialog.querySelector("#share-links tbody").replaceChildren(...data.links.map(row));
}

async function open() {
  showError("");
  $("share-new").hidden = true;
  $("share-link").value = "";
  dialog.showModal();
  if (!currentConversation()) {
    showError("Open or start a conversation first: a link shares one conversation.");
    $("share-create").disabled = true;
    return;
  }
  $("share-create").disabled = false;
  try {
    await list();
  } catch (error) {
    $("share-create").disabled = true;
    showError(error.message);
  }
}

async function create(event) {
  event.preventDefault();
  showError("");
  const days = $("share-expiry").value;
  try {
    const link = await api("POST", url("api-share-links", currentConversation()), {
      expires_in_days: days ? Number(days) : null,
    });
    $("share-link").value = link.url;
    $("share-new").hidden = false;
    $("share-link").select();
    await list();
  } catch (error) {
    showError(error.message);
  }
}

$("share-open").addEventListener("click", open);
$("share-form").addEventListener("submit", create);
$("share-close").addEventListener("click", () => dialog.close());
$("share-copy").addEventListener("click", async () => {
  $("share-link").select();
  try { await navigator.clipboard.writeText($("share-link").value); } catch { document.execCommand?.("copy"); }
});
