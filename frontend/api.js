// Talking to Flock's JSON API: one error type, the session's CSRF token, and the chat
// call that streams (Server-Sent Events over a POST) when the server can.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let csrfToken = null;

// Sign-in and /auth/me hand out the token; every unsafe request of the session sends it.
export function setCsrf(token) {
  csrfToken = token;
}

async function send(method, path, body, accept = "application/json") {
  const headers = { Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrfToken && method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (err) {
    throw new ApiError(0, "network_error", `cannot reach the server (${err.message})`);
  }
}

// The API's errors are {"error": {"code", "message"}}; anything else (a proxy's HTML page)
// still becomes an ApiError with the HTTP status.
async function errorOf(resp) {
  let code = `http_${resp.status}`;
  let message = resp.statusText || "the request failed";
  try {
    const body = await resp.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not JSON: keep the HTTP status
  }
  return new ApiError(resp.status, code, message);
}

export async function api(method, path, body) {
  const resp = await send(method, path, body);
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

// Until the server streams, it refuses the field with this 400; remember and ask plainly.
let serverStreams = true;
const STREAM_REFUSED = /unknown field\(s\):.*\bstream\b/;

// Ask one question. `on.meta(meta)` runs once the cache status is known and `on.delta(text)`
// for each piece of a streamed answer; resolves to the full answer body either way.
export async function ask(prompt, on = {}) {
  if (serverStreams) {
    const resp = await send("POST", "/api/v1/chat", { prompt, stream: true }, "text/event-stream");
    const type = resp.headers.get("Content-Type") || "";
    if (resp.ok && type.startsWith("text/event-stream")) return readStream(resp, on);
    if (resp.ok) return resp.json();
    const err = await errorOf(resp);
    if (!(err.status === 400 && STREAM_REFUSED.test(err.message))) throw err;
    serverStreams = false;
  }
  return api("POST", "/api/v1/chat", { prompt });
}

// Server-Sent Events parser for a fetch() body (EventSource cannot POST).
// Events: meta, delta, done (the whole answer), error; lines starting with ":" are heartbeats.
async function readStream(resp, on) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];

  const dispatch = () => {
    const payload = data.length ? JSON.parse(data.join("\n")) : null;
    const name = event;
    event = "message";
    data = [];
    if (payload === null) return undefined;
    if (name === "meta") on.meta?.(payload);
    else if (name === "delta") on.delta?.(payload.content ?? "");
    else if (name === "error") {
      const { code, message } = payload.error || {};
      throw new ApiError(resp.status, code || "stream_error", message || "the answer failed");
    } else if (name === "done") return payload;
    return undefined;
  };

  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    // A chunk may end between "\r" and "\n": keep a trailing "\r" for the next one.
    const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
    const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
    buffer = lines.pop() + buffer.slice(cut);
    for (const line of lines) {
      if (line === "") {
        const answer = dispatch();
        if (answer) {
          reader.cancel().catch(() => {});
          return answer;
        }
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
    }
  }
  throw new ApiError(0, "stream_ended", "the answer stream ended before the answer was complete");
}
