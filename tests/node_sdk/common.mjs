// What every script shares: the gateway it drives (from the environment the pytest test sets), and
// how it reports: one JSON object on stdout, each case's result or the error the SDK raised.
export const baseURL = process.env.MH_GATEWAY_URL;
export const apiKey = process.env.MH_API_KEY;

/** The fields of an SDK error a test asserts on (its class says which status it mapped to). */
export function errorOf(err) {
  return {
    class: err?.constructor?.name,
    status: err?.status ?? null,
    type: err?.type ?? err?.error?.error?.type ?? null,
    code: err?.code ?? null,
    param: err?.param ?? null,
    message: String(err?.message ?? err),
    request_id: err?.requestID ?? err?.request_id ?? null,
  };
}

/** Run each named case in turn; one failing case is reported as its error and the others still run. */
export async function runCases(cases) {
  const out = {};
  for (const [name, run] of Object.entries(cases)) {
    try {
      out[name] = { ok: await run() };
    } catch (err) {
      out[name] = { error: errorOf(err), stack: String(err?.stack ?? '') };
    }
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
