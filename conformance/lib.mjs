// Shared by the conformance scripts: each check prints one JSON line that
// conformance_test.go turns into a subtest. A script drives a broker's
// official SDK, unchanged, with only its base URLs pointed at the sandbox
// (SANDBOX_URL, e.g. http://127.0.0.1:43123).

export const sandboxURL = process.env.SANDBOX_URL;
if (!sandboxURL) {
  console.error("SANDBOX_URL is not set (run through go test ./conformance)");
  process.exit(2);
}

let failed = 0;

// check runs fn and reports it as one line: {"check","ok","detail"}.
// A check that throws is reported failed with the error; the script goes on.
export async function check(name, fn) {
  try {
    const detail = await fn();
    console.log(JSON.stringify({ check: name, ok: true, detail: detail === undefined ? "" : String(detail) }));
  } catch (err) {
    failed++;
    const detail = err && err.stack ? err.stack : JSON.stringify(err);
    console.log(JSON.stringify({ check: name, ok: false, detail }));
  }
}

// expect throws when cond is false, with what was seen.
export function expect(cond, what, seen) {
  if (!cond) {
    throw new Error(`${what}; got ${typeof seen === "string" ? seen : JSON.stringify(seen)}`);
  }
}

// approve opens a broker's login dialog URL as the sandbox account and
// returns the query of the redirect it answers with (code, state, auth_code…).
export async function approve(dialogURL, account) {
  const u = new URL(dialogURL);
  u.searchParams.set("account", account);
  const res = await fetch(u, { redirect: "manual" });
  const loc = res.headers.get("location");
  if (res.status < 300 || res.status > 399 || !loc) {
    throw new Error(`login dialog answered ${res.status} without a redirect: ${await res.text()}`);
  }
  return new URL(loc).searchParams;
}

// control posts to the sandbox's control API (/sandbox/revoke and the like).
export async function control(path, body) {
  const res = await fetch(sandboxURL + path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) {
    throw new Error(`${path}: ${res.status} ${await res.text()}`);
  }
}

// withTimeout rejects when p takes longer than ms.
export function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

// done exits with the script's verdict once every check has run.
export function done() {
  process.exit(failed ? 1 : 0);
}
