// The ZIP goes straight to storage (S3) with the presigned POST form the API signed:
// every form field first, the file last, as multipart/form-data. XMLHttpRequest, not
// fetch(), because only it reports upload progress.

import { formatBytes } from "./api.js";

export class StorageError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "StorageError";
    this.status = status;
    this.code = code;
  }
}

/** S3's XML error body: {code, message} (null when there is none). */
function s3Error(text) {
  if (!text) return null;
  try {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const code = doc.querySelector("Error > Code")?.textContent?.trim();
    const message = doc.querySelector("Error > Message")?.textContent?.trim();
    return code ? { code, message: message || "" } : null;
  } catch {
    return null;
  }
}

function refusal(status, text, { file, maxBytes }) {
  const error = s3Error(text);
  const code = error?.code || `http_${status}`;
  const said = error?.message ? ` (storage said: ${error.message})` : "";
  if (code === "EntityTooLarge" || status === 413) {
    const limit = maxBytes ? `the ${formatBytes(maxBytes)} limit` : "the limit";
    return new StorageError(status, code, `Storage refused the file: ${formatBytes(file.size)} is larger than ${limit}.`);
  }
  if (code === "EntityTooSmall") {
    return new StorageError(status, code, "Storage refused the file: it is empty.");
  }
  if (code === "AccessDenied" && /expired/i.test(error?.message || "")) {
    return new StorageError(status, code, "The upload form expired before the file was sent: upload again to get a new one.");
  }
  if (code === "AccessDenied") {
    return new StorageError(status, code, `Storage refused the file: the upload form does not allow it${said}. Upload again; if it happens again, tell the ingest team.`);
  }
  return new StorageError(status, code, `Storage refused the file (HTTP ${status}${error ? ", " + error.code : ""})${said}. Try again later.`);
}

/**
 * Send `file` with `form` (`upload` of POST /v1/uploads: {url, method, fields}).
 * Returns {promise, abort}; the promise rejects with a StorageError in words.
 */
export function sendToStorage(form, file, { onProgress, maxBytes }) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    const body = new FormData();
    for (const [name, value] of Object.entries(form.fields)) body.append(name, value);
    body.append("file", file, file.name); // last: S3 ignores fields after the file
    xhr.open(form.method || "POST", form.url);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.upload.addEventListener("load", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.status);
      else reject(refusal(xhr.status, xhr.responseText, { file, maxBytes }));
    });
    xhr.addEventListener("error", () => {
      reject(
        new StorageError(
          0,
          "network",
          "The file could not be sent to storage: the connection failed. Either the network " +
            "is down, or storage does not accept uploads from this page's address " +
            `(${location.origin}: its CORS rule must allow it, INGEST_API_CORS_ORIGINS).`,
        ),
      );
    });
    xhr.addEventListener("timeout", () => {
      reject(new StorageError(0, "timeout", "Sending the file to storage took too long: check your connection and try again."));
    });
    xhr.addEventListener("abort", () => {
      reject(new StorageError(0, "aborted", "The upload was cancelled: nothing was stored."));
    });
    xhr.send(body);
  });
  return { promise, abort: () => xhr.abort() };
}
