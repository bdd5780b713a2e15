// The npm `flowdock` client (0.9.x) on the Flowdock emulator's JSON stream. That client
// splits frames on `\r\n`, so the emulator runs with `--delim crlf`.
//
//   node flowdock-json.mjs receive --url EMULATOR_URL --token T --flows a/b,c/d --out FILE
//                                   [--seconds 8]
//   node flowdock-json.mjs verify --got FILE --record RECORDING --flows a/b,c/d
//
// `verify` compares what arrived with the emulator's recording: every stored message of the
// watched flows between the first and the last one received, exactly once, in order.

import flowdock from 'flowdock';
import { Checks, compareFlowdock, need, parseArgs, readJsonLines, sleep, writeJsonLines } from './lib.mjs';

const args = parseArgs(process.argv.slice(2));
if (args.command === 'receive') await receive(args);
else if (args.command === 'verify') verify(args);
else throw new Error('usage: flowdock-json.mjs receive|verify --...');

async function receive(args) {
  // The client reads its stream endpoint from the environment (default stream.flowdock.com).
  process.env.FLOWDOCK_STREAM_URL = `${need(args, 'url')}/flows`;
  const seconds = Number(args.seconds ?? 8);
  const log = [];
  const session = new flowdock.Session(need(args, 'token'), '');
  const stream = session.stream(need(args, 'flows').split(','));
  stream.on('connected', () => log.push({ kind: 'connected' }));
  stream.on('clientError', (code, message) => log.push({ kind: 'error', code, message: message ?? null }));
  stream.on('message', (data) => log.push({ kind: 'message', data }));
  await sleep(seconds * 1000);
  const request = stream.request;
  stream.end();
  // Aborting makes `request` report the cut after `end` removed the client's listeners.
  request?.on('error', () => {});
  writeJsonLines(need(args, 'out'), log);
  console.log(`flowdock client: ${log.filter((l) => l.kind === 'message').length} messages`);
}

function verify(args) {
  const checks = new Checks('flowdock client (JSON stream)');
  const log = readJsonLines(need(args, 'got'));
  const record = readJsonLines(need(args, 'record'));
  const errors = log.filter((l) => l.kind === 'error');
  checks.check(
    errors.length === 0,
    `the client reported ${errors.length} errors, e.g. ${JSON.stringify(errors[0])}`,
  );
  checks.check(
    log.filter((l) => l.kind === 'connected').length === 1,
    'the client did not stay on one connection',
  );
  const stored = [];
  for (const { kind, data } of log) {
    if (kind !== 'message') continue;
    if (data.id !== undefined) stored.push(data);
    else {
      checks.check(
        data.event === 'activity.user',
        `a message without an id that is not presence: ${JSON.stringify(data)}`,
      );
    }
  }
  const n = compareFlowdock(checks, stored, record, need(args, 'flows').split(','));
  checks.check(n >= 20, `only ${n} messages received`);
  checks.report();
  if (process.exitCode !== 1) console.log(`flowdock client: ${n} messages exactly once`);
}
