// Flock's browser UI: a single page with hash routes (#/signin, #/chat, #/dashboard,
// #/cache). Views come from <template>s in index.html; each is built once and kept, so
// the chat keeps its answers while you look at the dashboard.

import { ApiError, api, ask, setCsrf } from "./api.js";
import { barChart } from "./charts.js";

const $ = (sel, root = document) => root.querySelector(sel);
const main = $("#main");
const state = {
  user: null,
  config: { flower_url: null, llm_backend: null, allow_registration: true },
};
const views = {}; // path -> {node, show, hide}, built on first visit
let current = null;

const OUTCOMES = ["exact", "semantic", "coalesced", "miss", "error"];
const OUTCOME_NAMES = {
  exact: "exact hit",
  semantic: "semantic hit",
  coalesced: "shared in flight",
  miss: "fresh LLM call",
  error: "error",
};
const BADGES = {
  miss: "fresh LLM call",
  exact: "exact hit",
  semantic: "semantic hit",
  coalesced: "shared with a request in flight",
};

// --- small helpers ----------------------------------------------------------------------

function showError(box, err) {
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  const code = err instanceof ApiError ? err.code : "error";
  box.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = code;
  box.append(strong, `: ${err.message}`);
  box.hidden = false;
}

function clone(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 1000) return `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)} s`;
  return `${value >= 10 ? Math.round(value) : value.toFixed(1)} ms`;
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const count = (n) => Number(n || 0).toLocaleString("en");

// A 401 anywhere means the session is gone: back to the sign-in page.
function signedOut(err) {
  if (err instanceof ApiError && err.status === 401) {
    setUser(null);
    location.hash = "#/signin";
    return true;
  }
  return false;
}

// --- session ----------------------------------------------------------------------------

function setUser(user, csrf) {
  state.user = user;
  // Views hold the last user's answers and entries: the next one starts afresh.
  if (!user) for (const path of Object.keys(views)) delete views[path];
  setCsrf(user ? csrf : null);
  $("#nav").hidden = !user;
  $("#who").hidden = !user;
  $("#who-name").textContent = user ? `Signed in as ${user.name}` : "";
}

function signinView() {
  const node = clone("view-signin");
  const form = $("#signin-form", node);
  if (state.config.allow_registration === false) {
    // Closed by the operator (ALLOW_REGISTRATION): accounts come from an admin.
    $("#register-note", node).textContent = "Ask an admin of this Flock for an account.";
    $('button[value="register"]', form).remove();
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter?.value === "register" ? "register" : "login";
    // By id: `form.name` would be the form's own name attribute, not the input.
    const body = { name: $("#name", form).value, password: $("#password", form).value };
    const box = $(".error", form);
    showError(box, null);
    try {
      const res = await api("POST", `/api/v1/auth/${action}`, body);
      setUser(res.user, res.csrf_token);
      $("#password", form).value = "";
      location.hash = "#/chat";
    } catch (err) {
      showError(box, err);
    }
  });
  return { node, show: () => $("#name", form).focus() };
}

$("#signout").addEventListener("click", async () => {
  try {
    await api("POST", "/api/v1/auth/logout");
  } catch {
    // signed out here either way
  }
  setUser(null);
  location.hash = "#/signin";
});

// --- chat -------------------------------------------------------------------------------

function chatView() {
  const node = clone("view-chat");
  const form = $("#ask-form", node);
  const list = $("#answers", node);
  const question = $("#question", node);

  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = question.value.trim();
    const box = $(".error", form);
    if (!prompt) {
      showError(box, new ApiError(0, "empty", "type a question first"));
      return;
    }
    showError(box, null);
    question.value = "";
    $("#answers-empty", node).hidden = true;
    const item = clone("tpl-answer");
    list.append(item);
    runAnswer(item, prompt);
    item.scrollIntoView({ block: "nearest" });
  });
  return { node, show: () => question.focus() };
}

function setBadge(item, cache) {
  item.dataset.status = cache.status;
  const badge = $(".badge", item);
  let text = BADGES[cache.status] || cache.status;
  if (cache.status === "semantic" && typeof cache.similarity === "number") {
    text += ` · similarity ${cache.similarity.toFixed(3)}`;
  }
  badge.textContent = text;
  const match = $(".match", item);
  if (cache.status === "semantic" && cache.matched_prompt) {
    match.textContent = `Matched the earlier question “${cache.matched_prompt}”`;
    match.hidden = false;
  }
}

async function runAnswer(item, prompt) {
  $(".q-text", item).textContent = prompt;
  const text = $(".a-text", item);
  text.setAttribute("aria-busy", "true"); // screen readers read it once, not token by token
  const started = performance.now();
  let firstToken = null;
  try {
    const answer = await ask(prompt, {
      meta: (meta) => setBadge(item, meta),
      delta: (piece) => {
        firstToken ??= performance.now() - started;
        text.append(piece);
      },
    });
    setBadge(item, answer.cache);
    text.textContent = answer.message.content;
    // The server's own time (what the cache saves), then what this browser saw.
    const parts = [`answered in ${ms(answer.timings?.total_ms)} by the server`];
    if (firstToken !== null) parts.push(`first words on screen after ${ms(firstToken)}`);
    $(".latency", item).textContent = parts.join(", ");
    wireFeedback(item, answer.id);
  } catch (err) {
    if (signedOut(err)) return;
    item.dataset.status = "error";
    $(".badge", item).textContent = "error";
    showError($(".error", item), err);
  } finally {
    text.removeAttribute("aria-busy");
  }
}

function wireFeedback(item, answerId) {
  const actions = $(".actions", item);
  const button = $(".wrong", item);
  const note = $(".feedback", item);
  actions.hidden = false;
  button.addEventListener("click", async () => {
    button.disabled = true;
    note.textContent = "Sending…";
    try {
      const res = await api("POST", "/api/v1/feedback", { id: answerId, good: false });
      if (res.invalidated.length) {
        note.textContent = "Thanks: that answer is out of the cache; the next ask goes to the LLM.";
      } else if (res.votes < res.quorum) {
        // Another user's shared answer: it goes when enough users say so (FEEDBACK_QUORUM).
        note.textContent = `Thanks: your vote is counted (${res.votes} of ${res.quorum} needed to drop this shared answer).`;
      } else {
        note.textContent = "Thanks: noted (the answer was no longer cached).";
      }
    } catch (err) {
      if (signedOut(err)) return;
      button.disabled = false;
      note.textContent = `${err.code}: ${err.message}`;
    }
  });
}

// --- dashboard --------------------------------------------------------------------------

function dashboardView() {
  const node = clone("view-dashboard");
  const windowSelect = $("#window", node);
  let timer = null;
  let last = null;

  const draw = () => {
    if (!last) return;
    const total = last.requests || 0;
    const rows = OUTCOMES.map((o) => {
      const n = last.counts[o] || 0;
      const share = total ? Math.round((n / total) * 100) : 0;
      return { label: OUTCOME_NAMES[o], cls: `o-${o}`, values: [n], texts: [`${n} (${share}%)`] };
    });
    barChart($("#chart-outcomes", node), rows, [{ name: "requests", cls: "" }], {
      title: "Requests by outcome",
    });
    const timed = OUTCOMES.filter((o) => last.latency_ms[o]);
    const lat = timed.map((o) => {
      const { p50, p95 } = last.latency_ms[o];
      return { label: OUTCOME_NAMES[o], cls: "", values: [p50, p95], texts: [ms(p50), ms(p95)] };
    });
    const chart = $("#chart-latency", node);
    if (lat.length) {
      barChart(chart, lat, [{ name: "p50", cls: "s-p50" }, { name: "p95", cls: "s-p95" }], {
        scale: "log",
        tickText: (v) => (v >= 1000 ? `${v / 1000} s` : `${v} ms`),
        title: "Latency by outcome",
      });
    } else {
      chart.innerHTML = '<p class="empty">No answers in this window.</p>';
    }
  };

  const refresh = async () => {
    const box = $(".error", node);
    try {
      last = await api("GET", `/api/v1/stats?window=${windowSelect.value}`);
      showError(box, null);
    } catch (err) {
      if (!signedOut(err)) showError(box, err);
      return;
    }
    const tiles = {
      requests: count(last.requests),
      hit_rate: last.hit_rate === null ? "–" : `${(last.hit_rate * 100).toFixed(1)}%`,
      llm_calls: count(last.llm_calls),
      llm_calls_saved: count(last.llm_calls_saved),
      tokens_saved: count(last.tokens_saved),
      audits: last.audits.audited
        ? `${count(last.audits.wrong)} wrong of ${count(last.audits.audited)}`
        : "none yet",
    };
    for (const [name, text] of Object.entries(tiles)) {
      $(`[data-stat="${name}"]`, node).textContent = text;
    }
    $("#stats-empty", node).hidden = last.requests > 0;
    draw();
  };

  windowSelect.addEventListener("change", refresh);
  $("#refresh", node).addEventListener("click", refresh);
  window.addEventListener("resize", () => node.isConnected && draw());
  return {
    node,
    show: () => {
      showOps(node);
      refresh();
      // Live while it is on screen; stopped on leaving (see route()).
      timer = setInterval(() => document.visibilityState === "visible" && refresh(), 5000);
    },
    hide: () => clearInterval(timer),
  };
}

function showOps(node) {
  const { flower_url: flower, llm_backend: backend } = state.config;
  if (flower) {
    const p = $("#flower-link", node);
    p.replaceChildren("Celery workers, queues and every task: ");
    const a = document.createElement("a");
    a.href = flower;
    a.target = "_blank";
    a.rel = "noopener";
    a.textContent = "open Flower";
    p.append(a, ` (${flower})`);
  }
  $("#backend", node).textContent = backendText(backend);
}

function backendText(backend) {
  if (backend === "embedded") return "embedded demo model (SmolLM2-135M): expect poor answers";
  if (backend === "ollama") return "Ollama";
  if (backend === "auto") {
    return "Ollama, or the embedded demo model (SmolLM2-135M) when Ollama did not answer";
  }
  return backend || "unknown";
}

// --- cache ------------------------------------------------------------------------------

function cacheView() {
  const node = clone("view-cache");
  const form = $("#search-form", node);
  const list = $("#entries", node);
  const status = $("#cache-status", node);
  const empty = $("#cache-empty", node);

  const search = async () => {
    const q = $("#q", node).value.trim();
    const box = $(".error", node);
    status.textContent = "Searching…";
    try {
      const res = await api("GET", `/api/v1/entries?limit=100&q=${encodeURIComponent(q)}`);
      showError(box, null);
      list.replaceChildren(...res.entries.map((e) => entryItem(e, status)));
      const n = res.entries.length;
      const what = `${n === res.limit ? "the newest " : ""}${n} cached ${n === 1 ? "entry" : "entries"}`;
      status.textContent = `${what[0].toUpperCase()}${what.slice(1)}${q ? ` matching “${q}”` : ""}.`;
      empty.textContent = q
        ? `Nothing cached matches “${q}”.`
        : "The cache is empty: answers appear here once asked.";
      empty.hidden = res.entries.length > 0;
    } catch (err) {
      status.textContent = "";
      if (!signedOut(err)) showError(box, err);
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  return { node, show: search };
}

function entryItem(entry, status) {
  const item = clone("tpl-entry");
  item.dataset.id = entry.id;
  $(".q", item).textContent = entry.prompt;
  const answer = entry.response || "";
  $(".a-text", item).textContent = answer.length > 280 ? `${answer.slice(0, 280)}…` : answer;
  $(".hits", item).textContent = `${count(entry.hits)} ${entry.hits === 1 ? "hit" : "hits"}`;
  $(".age", item).textContent = `cached ${ago(entry.created_at)}`;
  $(".last-hit", item).textContent = `last hit ${ago(entry.last_hit_at)}`;
  $(".model", item).textContent = entry.model;
  $(".scope", item).textContent = entry.scope;
  const button = $(".invalidate", item);
  button.setAttribute("aria-label", `Invalidate the cached answer to “${entry.prompt}”`);
  const mine = state.user && (state.user.role === "admin" || entry.owner_id === state.user.id);
  if (!mine) {
    button.disabled = true;
    $(".not-yours", item).hidden = false;
  }
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const res = await api("DELETE", `/api/v1/entries/${encodeURIComponent(entry.id)}`);
      item.remove();
      status.textContent = `Invalidated “${entry.prompt}” (${res.invalidated.length} entry): the next ask goes to the LLM.`;
      status.focus(); // the button is gone: keep keyboard users at the outcome
    } catch (err) {
      if (signedOut(err)) return;
      button.disabled = false;
      status.textContent = `${err.code}: ${err.message}`;
    }
  });
  return item;
}

// --- routing ----------------------------------------------------------------------------

const factories = {
  "/signin": signinView,
  "/chat": chatView,
  "/dashboard": dashboardView,
  "/cache": cacheView,
};
function route() {
  if (!location.hash.startsWith("#/") && location.hash !== "") return; // e.g. the skip link
  let path = location.hash.slice(1) || "/chat";
  if (!factories[path]) path = "/chat";
  if (!state.user) path = "/signin";
  else if (path === "/signin") path = "/chat";
  if (`#${path}` !== location.hash) history.replaceState(null, "", `#${path}`);

  views[path] ??= factories[path]();
  const view = views[path];
  if (current && current !== view) current.hide?.();
  current = view;
  main.replaceChildren(view.node);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#${path}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `Flock · ${path.slice(1)}`;
  view.show?.();
  if (!main.contains(document.activeElement)) $("h1", view.node)?.focus();
}

$("#skip").addEventListener("click", (event) => {
  event.preventDefault(); // "#main" is not a route
  main.focus();
});

async function boot() {
  // The config endpoint may be missing (an older server): the UI works without it.
  try {
    state.config = await api("GET", "/api/v1/config");
    if (state.config.llm_backend) {
      const now = $("#backend-now");
      now.textContent = `This server's LLM backend: ${backendText(state.config.llm_backend)}.`;
      now.hidden = false;
    }
  } catch {
    // keep the defaults
  }
  try {
    const me = await api("GET", "/api/v1/auth/me");
    setUser(me.user, me.csrf_token);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      main.replaceChildren();
      const box = document.createElement("div");
      box.className = "error";
      box.setAttribute("role", "alert");
      showError(box, err);
      main.append(box);
      return;
    }
  }
  window.addEventListener("hashchange", route);
  route();
}

boot();
