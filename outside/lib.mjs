// Helpers shared by the outside checks: arguments, JSON-lines files, failing loudly, and the
// comparison of what a Flowdock client received with what the emulator recorded.

import { readFileSync, writeFileSync } from 'node:fs';

/** Parses `--key value` pairs (after the subcommand) into an object. */
export function parseArgs(argv) {
  const [command, ...rest] = argv;
  const args = { command };
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i];
    if (!key.startsWith('--') || i + 1 >= rest.length) {
      throw new Error(`bad arguments near \`${key}\``);
    }
    args[key.slice(2)] = rest[i + 1];
  }
  return args;
}

/** The value of a required argument. */
export function need(args, key) {
  const v = args[key];
  if (v === undefined) throw new Error(`missing --${key}`);
  return v;
}

/** Reads a file of one JSON value a line. */
export function readJsonLines(path) {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l);
      } catch (e) {
        throw new Error(`${path}:${i + 1}: not JSON: ${e.message}`);
      }
    });
}

/** Writes values as JSON lines. */
export function writeJsonLines(path, values) {
  writeFileSync(path, values.map((v) => JSON.stringify(v) + '\n').join(''));
}

/** Collects failed checks; `report` prints them and sets the exit code. */
export class Checks {
  constructor(name) {
    this.name = name;
    this.failures = [];
    this.passed = 0;
  }

  /** Records one check. */
  check(ok, what) {
    if (ok) this.passed += 1;
    else this.failures.push(what);
    return ok;
  }

  /** Prints the outcome; exit code 1 when any check failed. */
  report() {
    if (this.failures.length === 0) {
      console.log(`${this.name}: ok (${this.passed} checks)`);
      return;
    }
    for (const f of this.failures.slice(0, 20)) console.error(`${this.name}: FAILED: ${f}`);
    if (this.failures.length > 20) {
      console.error(`${this.name}: ... and ${this.failures.length - 20} more failures`);
    }
    process.exitCode = 1;
  }
}

/** The text the emulator records for a Flowdock message, when it can be derived from the wire. */
export function flowdockText(m) {
  const c = m.content;
  if (typeof c === 'string') return c;
  switch (m.event) {
    case 'comment':
      return c?.text;
    case 'message-edit':
      return c?.updated_content;
    case 'file':
      return c?.file_name;
    default:
      return undefined;
  }
}

/**
 * Compares the stored Flowdock messages a client received (`got`: wire objects in arrival
 * order, each with `seq` when the transport gives one) with the emulator's recording: within
 * the span the client saw (from its first to its last message), every recorded message of
 * the watched flows arrives exactly once, in order, with the recorded id, flow, event and text.
 */
export function compareFlowdock(checks, got, record, flows) {
  const watched = new Set(flows);
  const key = (flow, id) => `${flow}#${id}`;
  const recorded = record.filter((r) => watched.has(r.flow));
  const bySeq = new Map(recorded.map((r, i) => [r.seq, i]));
  const byKey = new Map(recorded.map((r, i) => [key(r.flow, r.id), i]));
  const seen = new Set();
  let last = -1;
  let first = Infinity;
  for (const m of got) {
    const flow = typeof m.flow === 'string' ? m.flow.replace(':', '/') : m.flow;
    const where = m.seq !== undefined ? bySeq.get(m.seq) : byKey.get(key(flow, m.id));
    const label = `message ${flow}#${m.id}${m.seq !== undefined ? ` (event id ${m.seq})` : ''}`;
    if (!checks.check(where !== undefined, `${label} is not in the emulator's recording`)) continue;
    const r = recorded[where];
    checks.check(!seen.has(where), `${label} arrived more than once`);
    checks.check(where > last || seen.has(where), `${label} arrived out of order`);
    seen.add(where);
    last = Math.max(last, where);
    first = Math.min(first, where);
    checks.check(r.id === m.id, `${label}: id ${m.id}, recorded ${r.id}`);
    checks.check(r.flow === flow, `${label}: flow ${flow}, recorded ${r.flow}`);
    checks.check(r.event === m.event, `${label}: event ${m.event}, recorded ${r.event}`);
    const text = flowdockText(m);
    if (text !== undefined) {
      checks.check(
        text === r.text,
        `${label}: text ${JSON.stringify(text)}, recorded ${JSON.stringify(r.text)}`,
      );
    }
  }
  if (!checks.check(seen.size > 0, 'no recorded message was received')) return 0;
  const missing = [];
  for (let i = first; i <= last; i += 1) {
    if (!seen.has(i)) missing.push(recorded[i]);
  }
  checks.check(
    missing.length === 0,
    `${missing.length} of ${last - first + 1} recorded messages between the first and the last ` +
      `one received never arrived, e.g. ${missing
        .slice(0, 3)
        .map((r) => `${r.flow}#${r.id} (event id ${r.seq})`)
        .join(', ')}`,
  );
  return seen.size;
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
