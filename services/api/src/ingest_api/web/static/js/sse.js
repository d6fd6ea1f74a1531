// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the
// page reads the stream itself. The parser follows the WHATWG rules (event:, data:, id:,
// retry:, comments, CRLF/LF/CR line ends, one event per blank line); `follow` reconnects
// with backoff and sends Last-Event-ID. The API starts every connection with a `state`
// event (the whole status), so a reconnected page is in step again at once.

import { ApiError, errorOf } from "./api.js";

export class SseParser {
  /**
   * @param {(event: {type: string, data: string, id: string|null}) => void} onEvent
   * @param {{onComment?: (text: string) => void, onRetry?: (ms: number) => void}} [hooks]
   */
  constructor(onEvent, hooks = {}) {
    this.onEvent = onEvent;
    this.onComment = hooks.onComment || (() => {});
    this.onRetry = hooks.onRetry || (() => {});
    this.buffer = "";
    this.type = "";
    this.data = [];
    this.lastId = null;
  }

  /** Feed decoded text (any chunking). */
  push(text) {
    this.buffer += text;
    let start = 0;
    let i = 0;
    while (i < this.buffer.length) {
      const c = this.buffer[i];
      if (c === "\n" || c === "\r") {
        if (c === "\r" && i + 1 === this.buffer.length) break; // is a \n next? wait for more
        this.line(this.buffer.slice(start, i));
        if (c === "\r" && this.buffer[i + 1] === "\n") i += 1;
        start = i + 1;
      }
      i += 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      this.onComment(line.slice(1).trim());
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") {
      if (!value.includes("\0")) this.lastId = value;
    } else if (field === "retry") {
      if (/^\d+$/.test(value)) this.onRetry(Number(value));
    }
  }

  dispatch() {
    if (this.data.length === 0) {
      this.type = "";
      return;
    }
    const event = { type: this.type || "message", data: this.data.join("\n"), id: this.lastId };
    this.type = "";
    this.data = [];
    this.onEvent(event);
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/**
 * Follow an event stream until an event named `until` (the stream's last) or `signal` aborts.
 * Network loss and server restarts are retried, after `retry` ms (the server's `retry:`,
 * else 1 s) doubled on each failure in a row, up to 30 s. 4xx answers end it with an
 * ApiError (the key was revoked, the upload is not yours …).
 *
 * @param {string} url
 * @param {{key: string, signal: AbortSignal, until?: string,
 *          onEvent: (type: string, data: any) => void,
 *          onConnection?: (state: {state: string, retryIn?: number, attempt?: number}) => void}} options
 */
export async function follow(url, { key, signal, until = "done", onEvent, onConnection = () => {} }) {
  let retry = 1000;
  let failures = 0;
  let lastId = null;
  while (!signal.aborted) {
    let finished = false;
    let response = null;
    try {
      const headers = { Accept: "text/event-stream", Authorization: `Bearer ${key}` };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      response = await fetch(url, { headers, signal, cache: "no-store" });
      if (response.status >= 400 && response.status < 500) throw await errorOf(response);
      if (!response.ok || !response.body) throw new Error(`the API answered ${response.status}`);
      onConnection({ state: "open" });
      const parser = new SseParser(
        (event) => {
          failures = 0;
          lastId = event.id;
          let data = null;
          try {
            data = JSON.parse(event.data);
          } catch {
            data = event.data;
          }
          onEvent(event.type, data);
          if (event.type === until) finished = true;
        },
        { onRetry: (ms) => { retry = Math.max(250, ms); } },
      );
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      while (!finished) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
      if (finished) {
        reader.cancel().catch(() => {});
        onConnection({ state: "closed" });
        return;
      }
      // The server ended the stream (a restart, its time limit): reconnect.
    } catch (error) {
      if (signal.aborted || (error && error.name === "AbortError")) return;
      if (error instanceof ApiError) throw error;
      failures += 1;
    }
    if (signal.aborted) return;
    const wait = failures === 0 ? retry : Math.min(30000, retry * 2 ** (failures - 1));
    const jitter = Math.round(wait * 0.2 * Math.random());
    onConnection({ state: failures ? "lost" : "reconnecting", retryIn: wait + jitter, attempt: failures });
    await sleep(wait + jitter, signal);
  }
}
