#!/usr/bin/env node
'use strict';
// Follows yolohook jobs' callback events over HookService.Connect and
// prints one JSON line per event. Uses only the .proto files (see yolohook.js).
//
//   node subscribe.js --job=JOB                   # from seq 1 until the job ends
//   node subscribe.js --label=team=vision          # jobs with these labels, until Ctrl-C
//   node subscribe.js                              # every job's new events, until Ctrl-C
//   node subscribe.js --label=app=demo --intercept=circle   # also drop circles from predictions
//
// A broken stream is reopened with backoff; jobs already followed resume after
// the last seq printed, so each event is printed once and in order.

const fs = require('node:fs');
const {parseArgs} = require('node:util');
const {grpc, connect, callMetadata, unary} = require('./yolohook');

const USAGE = `usage: node subscribe.js [--server=HOST:PORT] [--job=ID ...] [--label=KEY=VALUE ...]
                         [--events=NAME,NAME] [--from_seq=N] [--intercept=CLASS] [--full]
                         [--token_file=FILE] [--tls_ca=CA.pem [--tls_cert=CERT.pem --tls_key=KEY.pem]]
       node subscribe.js --list_events [--server=HOST:PORT]

  --server     yolohookd's address (default $YOLOHOOK_SERVER or 127.0.0.1:50051)
  --job        follow this job (repeatable; also as plain arguments) and exit when it ends
  --label      follow jobs carrying this label, also jobs submitted later (repeatable)
               without --job or --label: every job's new events
  --events     only these Ultralytics event names (default: all; checked against the
               server's catalogue before subscribing)
  --list_events print the server's event catalogue (name, stage, job modes, the mutations
               an interceptor may send there), one JSON line per event, and exit
  --from_seq   with --job: first seq to print (default 1; 0: only new events)
  --intercept  answer on_predict_batch_end by removing the boxes of CLASS (a name or id)
  --full       print each event whole instead of a summary
  --token_file a file holding the bearer token (default $YOLOHOOK_TOKEN_FILE)
  --tls_ca     TLS: the CA that signed the server's certificate; mutual TLS adds
               --tls_cert and --tls_key (plaintext without them)

The token ($YOLOHOOK_TOKEN, or --token_file) is sent as "authorization: Bearer <token>".
Exit status: 0 when the jobs ended or on Ctrl-C, 1 when the server refuses, 2 for bad usage.`;

// Status codes after which reopening the stream cannot help.
const FATAL_CODES = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.UNIMPLEMENTED,
  grpc.status.FAILED_PRECONDITION,
]);

const TERMINAL_STATES = new Set(['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED']);
const BACKOFF_FIRST_MS = 200;
// Messages taken between Acks (acknowledged delivery: the server sends at most
// its window beyond what was acknowledged, so a stalled client gets no more).
const ACK_EVERY = 32;
const BACKOFF_MAX_MS = 5000;

function log(message) {
  process.stderr.write(`subscribe: ${message}\n`);
}

function round(x) {
  return Math.round(x * 1e5) / 1e5;
}

// Values rounded, keys sorted (maps arrive in any order).
function roundAll(map) {
  const out = {};
  for (const k of Object.keys(map).sort()) out[k] = round(map[k]);
  return out;
}

function nonEmpty(map) {
  return map && Object.keys(map).length > 0;
}

// The few fields of an event worth a glance, by the object that fired it.
function summarize(event) {
  const out = {job: event.job_id, seq: event.seq, event: event.name};
  const name = event.name;
  if (event.state === 'trainer') {
    const t = event.trainer;
    out.epoch = t.epoch;
    out.epochs = t.epochs;
    if (/batch|optimizer_step|zero_grad/.test(name)) {
      out.batch = t.batch_index;
      out.num_batches = t.num_batches;
    }
    if (name === 'on_train_batch_end') out.loss = round(t.loss);
    if (name === 'on_train_epoch_end') {
      const tloss = {};
      t.tloss.forEach((v, i) => (tloss[t.loss_names[i] || `loss${i}`] = round(v)));
      out.tloss = tloss;
    }
    if (name === 'on_train_epoch_end' || name === 'on_params_update') out.lr = roundAll(t.lr);
    if (name === 'on_fit_epoch_end' || name === 'on_train_end') {
      out.metrics = roundAll(t.metrics);
      out.fitness = round(t.fitness);
      if (nonEmpty(t.logged_metrics)) out.logged_metrics = roundAll(t.logged_metrics);
    }
    if (name === 'on_model_save') out.best_fitness = round(t.best_fitness);
    if (t.stop) out.stop = true;
  } else if (event.state === 'validator') {
    const v = event.validator;
    if (v.epoch >= 0) out.epoch = v.epoch;  // -1: standalone, or best.pt after training
    if (/batch/.test(name)) {
      out.batch = v.batch_index;
      out.num_batches = v.num_batches;
    }
    if (name === 'on_val_end') out.metrics = roundAll(v.metrics);
  } else if (event.state === 'predictor') {
    const p = event.predictor;
    if (/batch|postprocess/.test(name)) out.batch = p.batch_index;
    out.seen = p.seen;
    if (p.results.length > 0) out.detections = p.results.map((r) => r.boxes.length);
  } else if (event.state === 'exporter') {
    const e = event.exporter;
    out.format = e.format;
    if (e.output) out.output = e.output;
  }
  return out;
}

// Whole events as JSON: bytes as their length, timestamps as ISO strings.
function full(event) {
  return JSON.parse(
    JSON.stringify(event, (key, value) => {
      if (value && value.type === 'Buffer' && Array.isArray(value.data)) return `<${value.data.length} bytes>`;
      if (value && typeof value === 'object' && 'seconds' in value && 'nanos' in value && Object.keys(value).length === 2) {
        return new Date(value.seconds * 1000 + value.nanos / 1e6).toISOString();
      }
      return value;
    }),
  );
}

// `results` without the boxes of class `target` (a name or an id).
function removeClass(results, target) {
  let removed = 0;
  const replaced = results.map((r) => {
    let id = /^\d+$/.test(target) ? Number(target) : undefined;
    if (id === undefined) {
      const entry = Object.entries(r.names).find(([, n]) => n === target);
      if (entry) id = Number(entry[0]);
    }
    const boxes = r.boxes
      .filter((b) => b.cls !== id)
      .map((b) => ({x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2, conf: b.conf, cls: b.cls}));
    removed += r.boxes.length - boxes.length;
    return {
      path: r.path,
      orig_height: r.orig_height,
      orig_width: r.orig_width,
      boxes,
      names: r.names,
      speed: r.speed,
    };
  });
  return {replaced, removed};
}

class Follower {
  constructor(options) {
    this.options = options;
    this.clients = connect(options.server, options.tls);
    this.call = null;
    this.stopping = false;
    this.backoffMs = BACKOFF_FIRST_MS;
    this.timer = null;
    this.nextSubscription = 0;
    // subscription id -> {kind: 'job' | 'resume' | 'watch' | 'intercept', job}
    this.subs = new Map();
    // job id -> {last: last seq printed, resuming: a per-job subscription replays it}
    this.jobs = new Map();
    // --job: jobs whose subscription has not ended yet.
    this.pending = new Set(options.jobIds);
    for (const id of options.jobIds) this.jobs.set(id, {last: options.fromSeq - 1, resuming: false});
  }

  start() {
    this.open();
  }

  stop(code) {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.timer);
    if (this.call) this.call.cancel();
    this.clients.close();
    process.exitCode = code;
    // Anything still holding the loop open (a call in flight) gets a moment.
    setTimeout(() => process.exit(code), 2000).unref();
  }

  async open() {
    if (this.stopping) return;
    if (this.options.jobIds.length === 0) await this.forgetFinishedJobs();
    if (this.stopping) return;
    const call = this.clients.callbacks.Connect(callMetadata(this.options.token));
    this.call = call;
    this.subs.clear();
    // Acknowledged delivery: messages handled on this call, and the count
    // last acknowledged. Each message is handled as it arrives, so the Ack
    // goes out every ACK_EVERY messages, and once a burst has been handled.
    const flow = {taken: 0, acked: 0, scheduled: false};
    const ack = () => {
      flow.scheduled = false;
      if (this.call === call && flow.taken > flow.acked) {
        flow.acked = flow.taken;
        this.send({ack: {taken: flow.taken}});
      }
    };
    this.send({ack: {taken: 0}});
    call.on('data', (message) => {
      if (this.call !== call) return;
      this.handle(message);
      flow.taken += 1;
      if (flow.taken - flow.acked >= ACK_EVERY) {
        ack();
      } else if (!flow.scheduled) {
        flow.scheduled = true;
        setImmediate(ack);
      }
    });
    // Every call ends with one status (after its 'error' event, if any).
    call.on('error', () => {});
    call.on('status', (status) => {
      if (this.call === call) this.broken(status.code === grpc.status.OK ? null : status);
    });

    if (this.options.jobIds.length > 0) {
      for (const id of this.pending) this.subscribeJob('job', id, this.jobs.get(id).last + 1);
    } else {
      for (const [id, job] of this.jobs) {
        job.resuming = true;
        this.subscribeJob('resume', id, job.last + 1);
      }
      this.subscribeWatch();
    }
    if (this.options.intercept !== undefined) this.subscribeIntercept();
  }

  // Watch mode keeps every job it printed; on reconnect, those that finished
  // and were printed to their end need no resuming.
  async forgetFinishedJobs() {
    await Promise.all(
      [...this.jobs.keys()].map(async (id) => {
        try {
          const job = await unary(this.clients.jobs, 'GetJob', {id}, this.options.token, 10000);
          if (TERMINAL_STATES.has(job.state) && job.last_seq <= this.jobs.get(id).last) this.jobs.delete(id);
        } catch (err) {
          if (err.code === grpc.status.NOT_FOUND) this.jobs.delete(id);
        }
      }),
    );
  }

  newId(prefix) {
    this.nextSubscription += 1;
    return `${prefix}-${this.nextSubscription}`;
  }

  send(message) {
    if (this.call && !this.stopping) this.call.write(message);
  }

  subscribeJob(kind, jobId, fromSeq) {
    const id = this.newId(kind);
    this.subs.set(id, {kind, job: jobId});
    this.send({
      subscribe: {
        subscription_id: id,
        job_ids: [jobId],
        events: this.options.events,
        mode: 'SUBSCRIPTION_MODE_OBSERVE',
        from_seq: Math.max(fromSeq, 0),
      },
    });
  }

  subscribeWatch() {
    const id = this.newId('watch');
    this.subs.set(id, {kind: 'watch'});
    this.send({
      subscribe: {
        subscription_id: id,
        match_labels: this.options.labels,
        events: this.options.events,
        mode: 'SUBSCRIPTION_MODE_OBSERVE',
      },
    });
  }

  subscribeIntercept() {
    const id = this.newId('intercept');
    this.subs.set(id, {kind: 'intercept'});
    this.send({
      subscribe: {
        subscription_id: id,
        job_ids: this.options.jobIds,
        match_labels: this.options.labels,
        events: ['on_predict_batch_end'],
        mode: 'SUBSCRIPTION_MODE_INTERCEPT',
        failure_mode: 'FAILURE_MODE_CONTINUE',
        reply_timeout: {seconds: 10, nanos: 0},
      },
    });
  }

  handle(message) {
    switch (message.kind) {
      case 'subscribed': {
        this.backoffMs = BACKOFF_FIRST_MS;
        const sub = this.subs.get(message.subscribed.subscription_id);
        const what = sub && sub.job ? `job ${sub.job}` : 'jobs';
        log(`subscribed ${message.subscribed.subscription_id} (${what})`);
        break;
      }
      case 'event':
        this.onEvent(message.event);
        break;
      case 'reply_result': {
        const r = message.reply_result;
        const line = {job: r.job_id, seq: r.seq, reply: r.applied ? 'applied' : 'rejected'};
        if (r.reason) line.reason = r.reason;
        this.print(line);
        break;
      }
      case 'subscription_ended':
        this.onEnded(message.subscription_ended);
        break;
      case 'error': {
        const e = message.error;
        log(`server: ${e.message}`);
        if (e.code !== grpc.status.UNAVAILABLE) this.stop(1);
        break;
      }
      default:
        break;
    }
  }

  print(line) {
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }

  onEvent(event) {
    const sub = this.subs.get(event.subscription_id);
    if (!sub) return;
    if (sub.kind === 'intercept') {
      this.intercept(event);
      return;
    }
    let job = this.jobs.get(event.job_id);
    if (!job) {
      job = {last: 0, resuming: false};
      this.jobs.set(event.job_id, job);
    }
    if (sub.kind === 'watch' && job.resuming) return;  // its own subscription prints it
    if (event.seq <= job.last) return;  // printed before the stream broke
    if (job.last > 0 && event.seq > job.last + 1 && this.options.events.length === 0) {
      log(`job ${event.job_id}: events ${job.last + 1}..${event.seq - 1} are not retained any more`);
    }
    job.last = event.seq;
    this.print(this.options.full ? full(event) : summarize(event));
  }

  intercept(event) {
    const mutations = [];
    if (event.state === 'predictor') {
      const {replaced, removed} = removeClass(event.predictor.results, this.options.intercept);
      this.print({
        job: event.job_id,
        seq: event.seq,
        intercept: event.name,
        class: this.options.intercept,
        removed,
      });
      if (removed > 0) mutations.push({replace_results: {results: replaced}});
    }
    if (event.reply_required) {
      this.send({
        reply: {subscription_id: event.subscription_id, job_id: event.job_id, seq: event.seq, mutations},
      });
    }
  }

  onEnded(ended) {
    const sub = this.subs.get(ended.subscription_id);
    this.subs.delete(ended.subscription_id);
    if (!sub) return;
    switch (ended.reason) {
      case 'END_REASON_JOBS_DONE':
        if (sub.kind === 'job') {
          this.pending.delete(sub.job);
          if (this.pending.size === 0) this.stop(0);
        } else if (sub.kind === 'resume') {
          this.jobs.delete(sub.job);
        }
        break;
      case 'END_REASON_LAGGING':
      case 'END_REASON_COMPACTED': {
        log(`${ended.subscription_id} ended: ${ended.message}; resuming`);
        if (sub.kind === 'intercept') {
          this.subscribeIntercept();
          break;
        }
        for (const [jobId, seq] of Object.entries(ended.resume_seq)) {
          const job = this.jobs.get(jobId) || {last: 0, resuming: false};
          this.jobs.set(jobId, job);
          if (sub.kind === 'job') {
            if (this.pending.has(jobId)) this.subscribeJob('job', jobId, Math.max(seq, job.last + 1));
          } else {
            job.resuming = true;
            this.subscribeJob('resume', jobId, Math.max(seq, job.last + 1));
          }
        }
        if (sub.kind === 'watch') this.subscribeWatch();
        break;
      }
      default:  // SHUTDOWN: the stream ends next and is reopened
        log(`${ended.subscription_id} ended: ${ended.message || ended.reason}`);
        break;
    }
  }

  broken(status) {
    if (this.stopping) return;
    this.call = null;
    if (status && FATAL_CODES.has(status.code)) {
      log(`server refused: ${status.details}`);
      this.stop(1);
      return;
    }
    const why = status ? status.details : 'the server closed the stream';
    log(`stream broken (${why}); reconnecting in ${this.backoffMs} ms`);
    this.timer = setTimeout(() => this.open(), this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
  }
}

function parse(argv) {
  const {values, positionals} = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      server: {type: 'string', default: process.env.YOLOHOOK_SERVER || '127.0.0.1:50051'},
      job: {type: 'string', multiple: true, default: []},
      label: {type: 'string', multiple: true, default: []},
      events: {type: 'string', default: ''},
      from_seq: {type: 'string', default: '1'},
      intercept: {type: 'string'},
      full: {type: 'boolean', default: false},
      token_file: {type: 'string', default: process.env.YOLOHOOK_TOKEN_FILE || ''},
      tls_ca: {type: 'string', default: ''},
      tls_cert: {type: 'string', default: ''},
      tls_key: {type: 'string', default: ''},
      list_events: {type: 'boolean', default: false},
      help: {type: 'boolean', short: 'h', default: false},
    },
  });
  if (values.help) return null;
  const labels = {};
  for (const label of values.label) {
    const eq = label.indexOf('=');
    if (eq <= 0) throw new Error(`--label=${label}: expected KEY=VALUE`);
    labels[label.slice(0, eq)] = label.slice(eq + 1);
  }
  const jobIds = [...values.job, ...positionals].filter((id) => id !== '');
  if (jobIds.length > 0 && Object.keys(labels).length > 0) {
    throw new Error('--job and --label select jobs differently: give one of them');
  }
  if (!/^\S+:\d+$/.test(values.server)) throw new Error(`--server=${values.server}: expected HOST:PORT`);
  if (!/^\d+$/.test(values.from_seq)) throw new Error(`--from_seq=${values.from_seq}: expected a seq >= 0`);
  if (values.intercept === '') throw new Error('--intercept: expected a class name or id');
  if (Boolean(values.tls_cert) !== Boolean(values.tls_key)) {
    throw new Error('--tls_cert and --tls_key go together');
  }
  if (values.tls_cert && !values.tls_ca) throw new Error('--tls_cert needs --tls_ca');
  for (const flag of ['token_file', 'tls_ca', 'tls_cert', 'tls_key']) {
    if (values[flag] && !fs.existsSync(values[flag])) throw new Error(`--${flag}=${values[flag]}: no such file`);
  }
  let token = process.env.YOLOHOOK_TOKEN || '';
  if (values.token_file) token = fs.readFileSync(values.token_file, 'utf8').trim();
  return {
    server: values.server,
    token,
    tls: {ca: values.tls_ca, cert: values.tls_cert, key: values.tls_key},
    jobIds,
    labels,
    events: values.events.split(',').filter((e) => e !== ''),
    fromSeq: jobIds.length > 0 ? Number(values.from_seq) : 0,
    intercept: values.intercept,
    full: values.full,
    listEvents: values.list_events,
  };
}

// The server's event catalogue (InfoService.GetServerInfo): the server is the
// one source of event names.
async function serverEvents(options) {
  const clients = connect(options.server, options.tls);
  try {
    const info = await unary(clients.info, 'GetServerInfo', {}, options.token, 10000);
    return info.events;
  } finally {
    clients.close();
  }
}

async function main() {
  let options;
  try {
    options = parse(process.argv.slice(2));
  } catch (err) {
    log(err.message);
    process.stderr.write(`${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  if (options === null) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (options.listEvents || options.events.length > 0) {
    let events;
    try {
      events = await serverEvents(options);
    } catch (err) {
      log(`cannot read the server's event catalogue: ${err.details || err.message}`);
      process.exitCode = 1;
      return;
    }
    if (options.listEvents) {
      for (const e of events) {
        process.stdout.write(`${JSON.stringify({name: e.name, stage: e.stage, modes: e.modes, mutations: e.mutations})}\n`);
      }
      return;
    }
    const known = new Set(events.map((e) => e.name));
    const unknown = options.events.filter((name) => !known.has(name));
    if (unknown.length > 0) {
      log(`--events: unknown event ${unknown.join(', ')}; the server's events: ${[...known].join(', ')}`);
      process.exitCode = 2;
      return;
    }
  }
  const follower = new Follower(options);
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      log(`${signal}: stopping`);
      follower.stop(0);
    });
  }
  follower.start();
}

main();
