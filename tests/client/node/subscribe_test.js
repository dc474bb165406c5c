'use strict';
// client/node/subscribe.js against a real yolohookd: a tiny training run
// followed from submit to teardown through a connection that breaks once, a
// filtered replay of the finished job, and an interceptor that removes a class
// from a predict job's results.
//
// Needs $YOLOHOOKD (the server binary); run by ctest through run.sh.

const {test, before, after} = require('node:test');
const assert = require('node:assert/strict');
const {spawn, spawnSync} = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const NODE_DIR = path.join(__dirname, '..', '..', '..', 'client', 'node');
const SUBSCRIBE = path.join(NODE_DIR, 'subscribe.js');
const {connect, unary} = require(path.join(NODE_DIR, 'yolohook.js'));

let dataDir;
let server;
let address;
let clients;
let trainJob;  // the finished train job, for the tests after the first

// Lines of a child's stream, as they come.
function lines(stream, onLine) {
  readline.createInterface({input: stream}).on('line', onLine);
}

function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.on('exit', (code, signal) => resolve(code === null ? signal : code));
  });
}

// Runs subscribe.js; `onLine(json, child)` sees each stdout line as it comes.
function subscribe(args, onLine = () => {}, onStderr = () => {}) {
  const child = spawn(process.execPath, [SUBSCRIBE, ...args], {stdio: ['ignore', 'pipe', 'pipe']});
  const out = [];
  const err = [];
  lines(child.stdout, (line) => {
    const json = JSON.parse(line);
    out.push(json);
    onLine(json, child);
  });
  lines(child.stderr, (line) => {
    err.push(line);
    onStderr(line, child);
  });
  const done = exited(child).then((code) => ({code, out, err}));
  return {child, done};
}

async function waitDone(id) {
  for (;;) {
    const job = await unary(clients.jobs, 'GetJob', {id});
    if (!['JOB_STATE_QUEUED', 'JOB_STATE_RUNNING'].includes(job.state)) return job;
    await new Promise((r) => setTimeout(r, 200));
  }
}

// A TCP proxy in front of the server whose connections can be cut.
function startProxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const sockets = new Set();
  const proxy = net.createServer((downstream) => {
    const upstream = net.connect(port, host);
    for (const s of [downstream, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    downstream.pipe(upstream).pipe(downstream);
  });
  return new Promise((resolve) => {
    proxy.listen(0, '127.0.0.1', () => {
      resolve({
        address: `127.0.0.1:${proxy.address().port}`,
        cut() {
          for (const s of sockets) s.destroy();
        },
        close() {
          this.cut();
          proxy.close();
        },
      });
    });
  });
}

// Ultralytics' order of a training run's events.
function expectedTrainEvents(epochs, trainBatches, valBatches) {
  const e = ['on_pretrain_routine_start', 'on_pretrain_routine_end', 'on_train_start'];
  const val = () => {
    e.push('on_val_start');
    for (let b = 0; b < valBatches; b++) e.push('on_val_batch_start', 'on_val_batch_end');
    e.push('on_val_end');
  };
  for (let epoch = 0; epoch < epochs; epoch++) {
    e.push('on_train_epoch_start');
    for (let b = 0; b < trainBatches; b++) {
      e.push('on_train_batch_start', 'optimizer_step', 'on_before_zero_grad', 'on_train_batch_end');
    }
    e.push('on_train_epoch_end');
    val();
    e.push('on_model_save', 'on_fit_epoch_end');
    if (epoch + 1 < epochs) e.push('on_params_update');
  }
  val();
  e.push('on_train_end', 'teardown');
  return e;
}

// Starts `binary` on 127.0.0.1:0 with `flags`; resolves with the process and
// the address it printed.
async function startServer(binary, flags) {
  const proc = spawn(binary, ['--listen=127.0.0.1:0', '--threads=2', ...flags], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const addr = await new Promise((resolve, reject) => {
    lines(proc.stdout, (line) => {
      const m = /listening on (\S+)/.exec(line);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`yolohookd exited with ${code} before listening`)));
  });
  return {proc, address: addr};
}

async function stopServer(proc) {
  if (proc.exitCode === null && proc.signalCode === null) {
    proc.kill('SIGTERM');
    await exited(proc);
  }
}

before(async () => {
  const binary = process.env.YOLOHOOKD;
  assert.ok(binary && fs.existsSync(binary), `YOLOHOOKD must name the yolohookd binary (got "${binary}")`);
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'yolohook-node-'));
  ({proc: server, address} = await startServer(binary, [`--data_dir=${dataDir}`]));
  clients = connect(address);
});

after(async () => {
  if (clients) clients.close();
  if (server) await stopServer(server);
  if (dataDir) fs.rmSync(dataDir, {recursive: true, force: true});
});

test('a train job is followed to teardown with gap-free seq across a broken stream', {timeout: 180000}, async () => {
  // A tenth of the built-in shapes dataset at 64 px: a few batches.
  const job = await unary(clients.jobs, 'SubmitJob', {
    mode: 'MODE_TRAIN',
    args: {
      data: 'shapes',
      model: 'yolov8n',
      imgsz: '64',
      epochs: '1',
      batch: '16',
      fraction: '0.1',
      workers: '1',
      plots: 'false',
      verbose: 'false',
    },
    labels: {run: 'node-train'},
  });
  const proxy = await startProxy(address);
  let cut = false;
  const run = subscribe([`--server=${proxy.address}`, `--job=${job.id}`], () => {
    if (!cut) {
      cut = true;
      proxy.cut();  // the job is still running: its end has not been sent yet
    }
  });
  const {code, out, err} = await run.done;
  proxy.close();
  assert.equal(code, 0, err.join('\n'));
  assert.ok(err.some((l) => l.includes('reconnecting')), `no reconnect in:\n${err.join('\n')}`);

  const seqs = out.map((e) => e.seq);
  assert.deepEqual(seqs, out.map((_, i) => i + 1), 'seq must run 1, 2, 3, ... once each');
  assert.ok(out.every((e) => e.job === job.id));
  const trainBatches = out.find((e) => e.event === 'on_train_batch_start').num_batches;
  const valBatches = out.find((e) => e.event === 'on_val_batch_start').num_batches;
  assert.deepEqual(
    out.map((e) => e.event),
    expectedTrainEvents(1, trainBatches, valBatches),
  );
  assert.deepEqual(out.slice(-2).map((e) => e.event), ['on_train_end', 'teardown']);
  const fit = out.find((e) => e.event === 'on_fit_epoch_end');
  assert.equal(fit.epoch, 0);
  assert.ok('metrics/mAP50(B)' in fit.metrics);

  trainJob = await waitDone(job.id);
  assert.equal(trainJob.state, 'JOB_STATE_SUCCEEDED', trainJob.error);
  assert.equal(trainJob.last_seq, out.length);
});

test('a finished job replays only the named events, then subscribe exits', {timeout: 60000}, async () => {
  assert.ok(trainJob, 'needs the train job');
  const {code, out, err} = await subscribe([
    `--server=${address}`,
    trainJob.id,
    '--events=on_fit_epoch_end,on_train_end',
  ]).done;
  assert.equal(code, 0, err.join('\n'));
  assert.deepEqual(out.map((e) => e.event), ['on_fit_epoch_end', 'on_train_end']);
  assert.equal(out[1].seq, trainJob.last_seq - 1);
});

test('event names are checked against the server\'s catalogue', {timeout: 60000}, async () => {
  assert.ok(trainJob, 'needs the train job');
  const {code, err} = await subscribe([`--server=${address}`, trainJob.id, '--events=on_train_ends']).done;
  assert.equal(code, 2);
  assert.ok(err.some((l) => l.includes('unknown event on_train_ends') && l.includes('on_train_end,')),
      err.join('\n'));
  const listed = await subscribe([`--server=${address}`, '--list_events']).done;
  assert.equal(listed.code, 0, listed.err.join('\n'));
  assert.equal(listed.out.length, 25);
  const byName = Object.fromEntries(listed.out.map((e) => [e.name, e]));
  assert.deepEqual(byName.on_predict_postprocess_end.mutations, ['replace_results', 'fail_job']);
  assert.deepEqual(byName.on_val_batch_end.modes, ['MODE_TRAIN', 'MODE_VAL']);
  assert.equal(byName.on_train_epoch_end.stage, 'trainer');
});

test('--intercept removes a class from a predict job\'s results', {timeout: 120000}, async () => {
  assert.ok(trainJob, 'needs the train job');
  const best = trainJob.artifacts.find((a) => a.kind === 'weights_best').path;
  const valDir = path.join(dataDir, 'datasets', 'shapes', 'images', 'val');
  const images = fs
    .readdirSync(valDir)
    .sort()
    .slice(0, 4)
    .map((name) => ({name, data: fs.readFileSync(path.join(valDir, name))}));
  // A barely trained model: a low threshold gives boxes of several classes.
  const predict = async (run) => {
    const job = await unary(clients.jobs, 'SubmitJob', {
      mode: 'MODE_PREDICT',
      args: {model: best, imgsz: '64', conf: '0.001', save: 'false', verbose: 'false'},
      images,
      labels: {run},
    });
    const done = await waitDone(job.id);
    assert.equal(done.state, 'JOB_STATE_SUCCEEDED', done.error);
    assert.equal(done.results.length, images.length);
    return done;
  };

  // Without an interceptor: the most frequent class is the one to remove.
  const baseline = await predict('node-baseline');
  const counts = new Map();
  for (const r of baseline.results) for (const b of r.boxes) counts.set(b.cls, (counts.get(b.cls) || 0) + 1);
  assert.ok(counts.size > 0, 'the baseline predict found no boxes');
  const [cls] = [...counts.entries()].sort((a, b) => b[1] - a[1])[0];
  const className = baseline.results[0].names[cls];
  assert.ok(className, `class ${cls} has no name`);

  let subscribed = 0;
  let ready;
  const readyPromise = new Promise((r) => (ready = r));
  const hook = subscribe(['--server', address, '--label=run=node-hooked', `--intercept=${className}`], undefined, (line) => {
    if (line.includes('subscribed ') && ++subscribed === 2) ready();  // the observer and the interceptor
  });
  const early = await Promise.race([readyPromise.then(() => null), hook.done]);
  assert.equal(early, null, `subscribe ended before subscribing:\n${early && early.err.join('\n')}`);

  const hooked = await predict('node-hooked');
  const left = hooked.results.flatMap((r) => r.boxes);
  assert.equal(left.filter((b) => b.cls === cls).length, 0, `boxes of ${className} are still there`);
  assert.ok(left.length > 0 || counts.size === 1, 'other classes must stay');

  hook.child.kill('SIGINT');
  const {code, out, err} = await hook.done;
  assert.equal(code, 0, err.join('\n'));
  const intercepts = out.filter((l) => l.intercept === 'on_predict_batch_end' && l.job === hooked.id);
  assert.ok(intercepts.length > 0, 'no intercepted event');
  assert.ok(intercepts.reduce((n, l) => n + l.removed, 0) > 0, 'nothing removed');
  const replies = out.filter((l) => l.reply !== undefined && l.job === hooked.id);
  assert.ok(replies.length > 0 && replies.every((l) => l.reply === 'applied'), JSON.stringify(replies));
  const observed = out.filter((l) => l.event !== undefined && l.job === hooked.id);
  assert.equal(observed[observed.length - 1].event, 'on_predict_end');
});

test('jobs followed by label resume after a broken stream without a gap', {timeout: 120000}, async () => {
  assert.ok(trainJob, 'needs the train job');
  const best = trainJob.artifacts.find((a) => a.kind === 'weights_best').path;
  const valDir = path.join(dataDir, 'datasets', 'shapes', 'images', 'val');
  const images = fs
    .readdirSync(valDir)
    .sort()
    .slice(0, 3)
    .map((name) => ({name, data: fs.readFileSync(path.join(valDir, name))}));
  const proxy = await startProxy(address);
  let cut = false;
  let ready;
  const readyPromise = new Promise((r) => (ready = r));
  // Only the job submitted below carries this label.
  const watch = subscribe(
    [`--server=${proxy.address}`, '--label=run=node-watch'],
    (line, child) => {
      if (!cut) {
        cut = true;
        proxy.cut();
      }
      if (line.event === 'on_predict_end') child.kill('SIGINT');
    },
    (line) => {
      if (line.includes('subscribed ')) ready();
    },
  );
  const early = await Promise.race([readyPromise.then(() => null), watch.done]);
  assert.equal(early, null, `subscribe ended before subscribing:\n${early && early.err.join('\n')}`);
  const job = await unary(clients.jobs, 'SubmitJob', {
    mode: 'MODE_PREDICT',
    args: {model: best, imgsz: '64', save: 'false', verbose: 'false'},
    images,
    labels: {run: 'node-watch'},
  });
  const {code, out, err} = await watch.done;
  proxy.close();
  assert.equal(code, 0, err.join('\n'));
  assert.ok(err.some((l) => l.includes('reconnecting')), `no reconnect in:\n${err.join('\n')}`);
  assert.ok(out.every((l) => l.job === job.id));
  const events = out;
  const done = await waitDone(job.id);
  assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
  assert.equal(events.length, done.last_seq);
  assert.equal(events[0].event, 'on_predict_start');
  assert.equal(events[events.length - 1].event, 'on_predict_end');
});

// Bearer tokens: only against a yolohookd that has --token_file.
const help = spawnSync(process.env.YOLOHOOKD || 'yolohookd', ['--help'], {encoding: 'utf8'});
const hasAuth = /--token_file/.test(`${help.stdout}${help.stderr}`);

test('the token is sent as a bearer token; without one the server refuses', {
  timeout: 60000,
  skip: hasAuth ? false : 'this yolohookd has no --token_file',
}, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'yolohook-node-auth-'));
  const viewer = 'node-viewer-0123456789abcdef';
  fs.writeFileSync(path.join(dir, 'tokens.csv'), `${viewer},node-test,viewer\n`);
  fs.writeFileSync(path.join(dir, 'token'), `${viewer}\n`);
  const secured = await startServer(process.env.YOLOHOOKD, [
    `--data_dir=${path.join(dir, 'data')}`,
    `--token_file=${path.join(dir, 'tokens.csv')}`,
  ]);
  try {
    const run = (args, env, onStderr) => {
      const child = spawn(process.execPath, [SUBSCRIBE, `--server=${secured.address}`, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {...process.env, YOLOHOOK_TOKEN: '', YOLOHOOK_TOKEN_FILE: '', ...env},
      });
      const err = [];
      lines(child.stderr, (line) => {
        err.push(line);
        if (onStderr) onStderr(line, child);
      });
      child.stdout.resume();
      return exited(child).then((code) => ({code, err}));
    };
    const stopOnSubscribed = (line, child) => {
      if (line.includes('subscribed ')) child.kill('SIGINT');
    };

    const anonymous = await run([], {});
    assert.equal(anonymous.code, 1, anonymous.err.join('\n'));
    assert.ok(anonymous.err.some((l) => /token/.test(l)), anonymous.err.join('\n'));

    const wrong = await run([], {YOLOHOOK_TOKEN: 'not-a-token'});
    assert.equal(wrong.code, 1, wrong.err.join('\n'));

    const byEnv = await run([], {YOLOHOOK_TOKEN: viewer}, stopOnSubscribed);
    assert.equal(byEnv.code, 0, byEnv.err.join('\n'));
    assert.ok(byEnv.err.some((l) => l.includes('subscribed ')), byEnv.err.join('\n'));

    const byFile = await run([`--token_file=${path.join(dir, 'token')}`], {}, stopOnSubscribed);
    assert.equal(byFile.code, 0, byFile.err.join('\n'));

    // Intercepting needs more than a viewer may do.
    const intercept = await run(['--intercept=circle'], {YOLOHOOK_TOKEN: viewer});
    assert.equal(intercept.code, 1, intercept.err.join('\n'));
  } finally {
    await stopServer(secured.proc);
    fs.rmSync(dir, {recursive: true, force: true});
  }
});
