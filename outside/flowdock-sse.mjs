// npm `eventsource` against the Flowdock emulator's Event-Stream, behind a fault proxy that
// cuts connections.
//
//   node flowdock-sse.mjs receive --url PROXY_URL --direct EMULATOR_URL --token T
//                                  --flows a/b,c/d --out FILE [--seconds 16]
//   node flowdock-sse.mjs verify --got FILE --record RECORDING --flows a/b,c/d
//
// `receive` first checks the CORS headers the document's browser example needs (directly on
// the emulator, so no fault interferes), then streams the way that example does (token in
// `access_token`) and writes what arrived. `verify` compares it with the emulator's
// recording: every message exactly once, `retry:` honoured, `Last-Event-ID` resumed.

import { EventSource } from 'eventsource';
import { Checks, compareFlowdock, need, parseArgs, readJsonLines, sleep, writeJsonLines } from './lib.mjs';

/** The reconnection time the emulator announces with `retry:` (its default, 2 s). */
const ANNOUNCED_RETRY_MS = 2000;
/** What the client waits when no `retry:` came (eventsource's default, 3 s). */
const DEFAULT_RETRY_MS = 3000;
/** Reconnections (with `Last-Event-ID`) the run must see before it may end early. */
const WANTED_RESUMES = 3;

const args = parseArgs(process.argv.slice(2));
if (args.command === 'receive') await receive(args);
else if (args.command === 'verify') verify(args);
else throw new Error('usage: flowdock-sse.mjs receive|verify --...');

async function cors(checks, direct, query) {
  const origin = 'http://page.example';
  const url = `${direct}/flows?${query}`;
  const ctl = new AbortController();
  const r = await fetch(url, { headers: { Origin: origin, Accept: 'text/event-stream' }, signal: ctl.signal });
  const allow = r.headers.get('access-control-allow-origin');
  checks.check(r.status === 200, `CORS: GET with Origin answered ${r.status}`);
  checks.check(
    (r.headers.get('content-type') ?? '').startsWith('text/event-stream'),
    `CORS: content type ${r.headers.get('content-type')}, not text/event-stream`,
  );
  checks.check(
    allow === origin || allow === '*',
    `CORS: Access-Control-Allow-Origin is ${JSON.stringify(allow)} for Origin ${origin}`,
  );
  ctl.abort();
  // A browser asks first before sending `Last-Event-ID` from another origin.
  const pre = await fetch(url, {
    method: 'OPTIONS',
    headers: {
      Origin: origin,
      'Access-Control-Request-Method': 'GET',
      'Access-Control-Request-Headers': 'last-event-id',
    },
  });
  const preAllow = pre.headers.get('access-control-allow-origin');
  const preHeaders = (pre.headers.get('access-control-allow-headers') ?? '').toLowerCase();
  checks.check(pre.status >= 200 && pre.status < 300, `CORS: preflight answered ${pre.status}`);
  checks.check(
    preAllow === origin || preAllow === '*',
    `CORS: preflight Access-Control-Allow-Origin is ${JSON.stringify(preAllow)}`,
  );
  checks.check(
    preHeaders.includes('last-event-id') || preHeaders.includes('*'),
    `CORS: preflight allows headers ${JSON.stringify(preHeaders)}, not last-event-id`,
  );
}

async function receive(args) {
  const flows = need(args, 'flows');
  const query = `filter=${encodeURIComponent(flows)}&access_token=${encodeURIComponent(need(args, 'token'))}`;
  const seconds = Number(args.seconds ?? 16);
  const checks = new Checks('eventsource (CORS)');
  await cors(checks, need(args, 'direct'), query);
  checks.report();

  const log = [];
  const start = Date.now();
  const at = () => Date.now() - start;
  let resumes = 0;
  const es = new EventSource(`${need(args, 'url')}/flows?${query}`, {
    // Only to note when each attempt starts and which Last-Event-ID it carries.
    fetch: (url, init) => {
      const lastEventId = init?.headers?.['Last-Event-ID'];
      if (lastEventId !== undefined) resumes += 1;
      log.push({ kind: 'attempt', t: at(), lastEventId: lastEventId ?? null });
      return fetch(url, init);
    },
  });
  es.addEventListener('open', () => log.push({ kind: 'open', t: at() }));
  es.addEventListener('error', (e) => log.push({ kind: 'error', t: at(), message: e.message ?? null }));
  es.addEventListener('message', (e) => {
    const data = JSON.parse(e.data);
    log.push({ kind: 'message', t: at(), lastEventId: e.lastEventId, data });
  });
  const deadline = start + seconds * 1000;
  // Ends early once enough resumes happened and the last one has been streaming a while.
  const settled = () => {
    const lastAttempt = log.findLast((l) => l.kind === 'attempt');
    return resumes >= WANTED_RESUMES && at() - lastAttempt.t > 1500;
  };
  while (Date.now() < deadline && !settled()) {
    await sleep(100);
  }
  es.close();
  writeJsonLines(need(args, 'out'), log);
  console.log(`eventsource: ${log.filter((l) => l.kind === 'message').length} events, ${resumes} resumes in ${at()} ms`);
}

function verify(args) {
  const checks = new Checks('eventsource (Flowdock SSE)');
  const log = readJsonLines(need(args, 'got'));
  const record = readJsonLines(need(args, 'record'));
  const flows = need(args, 'flows').split(',');

  // Stored messages carry an id (and an SSE id); presence (activity.user) has neither.
  const stored = [];
  let lastStoredId = null;
  let deliveredOnThisConnection = false;
  let retryKnown = false;
  let lastError = null;
  let resumes = 0;
  let timedReconnects = 0;
  for (const entry of log) {
    switch (entry.kind) {
      case 'message':
        if (entry.data.id !== undefined) {
          checks.check(/^\d+$/.test(entry.lastEventId), `message ${entry.data.id} has event id ${JSON.stringify(entry.lastEventId)}`);
          stored.push({ ...entry.data, seq: Number(entry.lastEventId) });
          lastStoredId = entry.lastEventId;
        } else {
          checks.check(entry.data.event === 'activity.user', `an event without an id that is not presence: ${JSON.stringify(entry.data)}`);
        }
        deliveredOnThisConnection = true;
        break;
      case 'error':
        // `retry:` comes first in every response, so a connection that delivered an event
        // has announced it.
        retryKnown = retryKnown || deliveredOnThisConnection;
        lastError = { t: entry.t, retryKnown };
        deliveredOnThisConnection = false;
        break;
      case 'attempt':
        if (lastError) {
          resumes += entry.lastEventId !== null ? 1 : 0;
          checks.check(
            lastStoredId === null || entry.lastEventId === lastStoredId,
            `reconnected with Last-Event-ID ${entry.lastEventId}, but the last event id received was ${lastStoredId}`,
          );
          if (lastError.retryKnown) {
            const waited = entry.t - lastError.t;
            timedReconnects += 1;
            checks.check(
              waited >= ANNOUNCED_RETRY_MS - 50 && waited < DEFAULT_RETRY_MS - 100,
              `reconnected ${waited} ms after a drop; the server announced retry: ${ANNOUNCED_RETRY_MS}`,
            );
          }
        }
        break;
      default:
        break;
    }
  }
  checks.check(resumes >= 2, `only ${resumes} reconnections carried Last-Event-ID (the fault proxy should cut more)`);
  checks.check(timedReconnects >= 1, 'no reconnection after a drop once retry: was known');
  const n = compareFlowdock(checks, stored, record, flows);
  checks.check(n >= 20, `only ${n} messages received`);
  checks.report();
  if (process.exitCode !== 1) console.log(`eventsource: ${n} messages exactly once across ${resumes} resumes`);
}
