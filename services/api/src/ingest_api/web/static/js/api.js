// The ingest HTTP API, as the page uses it: JSON in, JSON out, every error in words.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: the API could not be reached)
   * @param {string} code the API's error code ("invalid_key", "too_large", …)
   * @param {string} message what went wrong, in words
   * @param {object} [details] the rest of the error body (e.g. `limit`)
   */
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** An ApiError from a response that is not ok: the API's own words when it sent them. */
export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error.message === "string") {
    const { code, message, ...details } = error;
    return new ApiError(response.status, code || "error", message, details);
  }
  const words = {
    401: "the API did not accept the key",
    404: "the API has nothing at this address",
    413: "the file is too large",
    429: "too many requests: wait a moment and try again",
    502: "the API is not reachable right now (bad gateway)",
    503: "the API is not available right now",
    504: "the API did not answer in time",
  };
  const message = words[response.status] || `the API answered ${response.status} ${response.statusText}`;
  return new ApiError(response.status, "http_" + response.status, message);
}

/**
 * Call the API. `key`: the contributor's API key (sent as `Authorization: Bearer`).
 * Resolves with the JSON body; rejects with an ApiError.
 */
export async function api(path, { key, method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "the ingest API could not be reached: check your network connection and try again");
  }
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

/** "12.3 MiB", "4.0 KiB", "812 bytes" */
export function formatBytes(size) {
  if (size >= 1024 * 1024) return `${(size / 1024 / 1024).toFixed(1)} MiB`;
  if (size >= 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${size.toLocaleString("en")} bytes`;
}
