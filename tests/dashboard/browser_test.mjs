// End-to-end tests of the dashboard in headless Chromium (Debian's package),
// driven by playwright-core, against a real yolohookd with a temporary data
// directory:
//
//   node browser_test.mjs --case=train  --yolohookd=PATH --out=DIR
//   node browser_test.mjs --case=resume --yolohookd=PATH --out=DIR
//
// train:  submits a tiny training run from the page, watches its curves gain
//         points and the job reach SUCCEEDED, and saves a screenshot.
// resume: stops the server in the middle of a run and starts it again on the
//         same port; the page reconnects with the last seq it saw and ends with
//         every event exactly once and every epoch on its curves once.
// predict: trains one epoch, then predicts ten images while
//         yolohook_keep_confident (--keep_confident=PATH) replaces every
//         result; the page draws each image and marks its results replaced.
// Exits 0 when the case passes; prints what failed otherwise.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const opts = Object.fromEntries(process.argv.slice(2).map((a) => {
  const m = /^--([^=]+)=(.*)$/.exec(a);
  if (!m) throw new Error('bad argument ' + a);
  return [m[1], m[2]];
}));
const testCase = opts.case || 'train';
const yolohookd = opts.yolohookd;
const outDir = opts.out || process.cwd();
const chromiumPath = opts.chromium || process.env.CHROMIUM || '/usr/bin/chromium';
// A job this small trains in seconds on two cores: 3 epochs of a few 64 px
// images of the built-in shapes dataset with the smallest model.
const TRAIN_ARGS = 'batch=4 fraction=0.02 workers=1 plots=false';
const WAIT_MS = 240000;

const started = Date.now();
function log(...args) {
  console.log(`[dashboard ${testCase} ${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);
}

// yolohookd with a dashboard, started and stopped like an operator would.
class Daemon {
  constructor(dataDir) { this.dataDir = dataDir; this.proc = null; this.url = ''; }

  start(httpListen) {
    const args = ['--listen=127.0.0.1:0', `--http_listen=${httpListen}`,
      `--data_dir=${this.dataDir}`, '--threads=1'];
    log('starting', yolohookd, args.join(' '));
    const proc = spawn(yolohookd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const logFile = fs.createWriteStream(path.join(outDir, `yolohookd_${testCase}.log`), { flags: 'a' });
    proc.stderr.pipe(logFile);
    return new Promise((resolve, reject) => {
      const lines = readline.createInterface({ input: proc.stdout });
      lines.on('line', (line) => {
        logFile.write(line + '\n');
        const g = /listening on (\S+)/.exec(line);
        if (g) this.grpc = g[1];
        const m = /dashboard on (http:\/\/\S+?)\/?$/.exec(line);
        if (m) { this.url = m[1]; resolve(this.url); }
      });
      proc.on('exit', (code, signal) => reject(new Error(`yolohookd exited (${code ?? signal}) before serving the dashboard`)));
      setTimeout(() => reject(new Error('yolohookd did not serve the dashboard within 60 s')), 60000).unref();
    });
  }

  async stop(signal = 'SIGTERM') {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    await new Promise((resolve) => {
      proc.on('exit', () => resolve());
      proc.kill(signal);
    });
    log('yolohookd stopped');
  }
}

function check(ok, what) {
  if (!ok) throw new Error('check failed: ' + what);
  log('ok:', what);
}

async function submitTrain(page, epochs = 3) {
  await page.click('#submit-panel summary');
  await page.fill('#submit input[name=epochs]', String(epochs));
  await page.fill('#submit input[name=imgsz]', '64');
  await page.fill('#submit input[name=extra]', TRAIN_ARGS);
  await page.click('#submit button[type=submit]');
  await page.waitForFunction(() => /job=/.test(location.hash), null, { timeout: 10000 });
  const id = await page.evaluate(() => window.dash.jobId);
  log('submitted job', id);
  return id;
}

// What the page drew and received, for checks.
function pageState(page) {
  return page.evaluate(() => ({
    state: document.getElementById('job-state').textContent,
    loss: document.getElementById('loss-chart').dataset.epochs,
    metrics: document.getElementById('metric-chart').dataset.epochs,
    lr: document.getElementById('lr-chart').dataset.epochs,
    seqs: window.dash.seqs,
    duplicates: window.dash.duplicates,
    gaps: window.dash.gaps,
    connects: window.dash.connects,
  }));
}

async function lastSeqFromServer(page, id) {
  return page.evaluate(async (jobId) => {
    const headers = window.dash.token ? { Authorization: 'Bearer ' + window.dash.token } : {};
    const res = await fetch('api/jobs/' + jobId, { headers });
    return Number((await res.json()).last_seq);
  }, id);
}

async function checkFinished(page, id) {
  const s = await pageState(page);
  const last = await lastSeqFromServer(page, id);
  check(s.state === 'SUCCEEDED', `the job is SUCCEEDED on the page (${s.state})`);
  check(s.loss === '1,2,3', `the loss curves have epochs 1,2,3 (${s.loss})`);
  check(s.metrics === '1,2,3', `the metric curves have epochs 1,2,3 (${s.metrics})`);
  check(s.lr === '1,2,3', `the learning-rate curves have epochs 1,2,3 (${s.lr})`);
  check(s.duplicates === 0 && s.gaps === 0, `no event came twice or after a gap (${s.duplicates} duplicates, ${s.gaps} gaps)`);
  const contiguous = s.seqs.length === last && s.seqs.every((seq, i) => seq === i + 1);
  check(contiguous, `the page received seqs 1..${last} once each, in order (${s.seqs.length} received)`);
  return s;
}

async function main() {
  if (!yolohookd) throw new Error('--yolohookd=PATH is required');
  if (!fs.existsSync(chromiumPath)) throw new Error(`no Chromium at ${chromiumPath} (deploy/setup.sh installs Debian's chromium)`);
  fs.mkdirSync(outDir, { recursive: true });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'yolohook-dashboard-'));
  const daemon = new Daemon(dataDir);
  let browser = null;
  try {
    const base = await daemon.start('127.0.0.1:0');
    log('dashboard at', base);
    browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('pageerror', (e) => log('page error:', e.message));
    await page.goto(base + '/');
    await page.waitForSelector('#conn.ok', { timeout: 10000 });
    const id = await submitTrain(page, testCase === 'predict' ? 1 : 3);

    if (testCase === 'predict') {
      await page.waitForFunction(() => document.getElementById('job-state').textContent === 'SUCCEEDED', null, { timeout: WAIT_MS });
      const grpc = daemon.grpc;
      // Drops every box (none is above conf 1): each image's results change.
      const keep = spawn(opts.keep_confident, [`--server=${grpc}`, '--min_conf=1.0'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const subscribed = new Promise((resolve) => {
        readline.createInterface({ input: keep.stdout }).on('line', (line) => {
          if (/^intercepting/.test(line)) { log('keep_confident:', line); resolve(); }
        });
      });
      try {
        await Promise.race([subscribed, new Promise((r) => setTimeout(r, 30000).unref())]);
        await new Promise((r) => setTimeout(r, 1000));
        const job = await page.evaluate(async ([dir, weights]) => {
          const res = await fetch('api/jobs', {
            method: 'POST',
            body: JSON.stringify({ mode: 'MODE_PREDICT', args: { model: weights, source: dir + '/datasets/shapes/images/val/0000*.jpg', conf: '0.00001', max_det: '5', imgsz: '64' } }),
          });
          return res.json();
        }, [dataDir, await page.evaluate(async (jobId) => {
          const j = await (await fetch('api/jobs/' + jobId)).json();
          return j.artifacts.find((a) => a.kind === 'weights_last').path;
        }, id)]);
        log('predict job', job.id, job.error || '');
        await page.evaluate((jobId) => { location.hash = 'job=' + jobId; }, job.id);
        await page.waitForFunction(() => document.getElementById('job-state').textContent === 'SUCCEEDED' &&
          document.querySelectorAll('.pred').length === 10, null, { timeout: WAIT_MS });
        await page.waitForTimeout(500);
        const tiles = await page.evaluate(() => [...document.querySelectorAll('.pred')].map((el) => ({
          replaced: el.dataset.replaced, caption: el.querySelector('figcaption').textContent,
        })));
        log('first tile:', tiles[0].caption);
        check(tiles.length === 10, `the page shows the 10 predicted images (${tiles.length})`);
        check(tiles.every((t) => t.replaced === 'true' && /the model found/.test(t.caption)),
          'every image is marked as replaced, with what the model had found');
        const images = await page.evaluate(() => [...window.dash.preds.values()].filter((t) => t.image).length);
        check(images === 10, `every image came with its JPEG (${images})`);
      } finally {
        keep.kill('SIGINT');
      }
    } else if (testCase === 'train') {
      // Sample the curves while the job runs: they must grow one epoch at a time.
      const seen = new Set();
      const deadline = Date.now() + WAIT_MS;
      for (;;) {
        const s = await pageState(page);
        seen.add(s.loss || '');
        if (s.state === 'SUCCEEDED' || s.state === 'FAILED' || Date.now() > deadline) break;
        await page.waitForTimeout(100);
      }
      log('loss curve states seen:', [...seen].map((v) => `[${v}]`).join(' '));
      check(seen.has('1') || seen.has('1,2'), 'the curves gained points while the job ran');
      await checkFinished(page, id);
    } else if (testCase === 'resume') {
      // on_fit_epoch_end comes after the epoch's last.pt is saved: the job
      // resumes from it when the server starts again.
      await page.waitForFunction(() => document.getElementById('metric-chart').dataset.points !== '0', null, { timeout: WAIT_MS });
      const before = await pageState(page);
      log('stopping the server after seq', before.seqs[before.seqs.length - 1], 'epochs', before.loss);
      const port = new URL(base).port;
      await daemon.stop('SIGTERM');
      await page.waitForSelector('#conn.down', { timeout: 30000 });
      await daemon.start(`127.0.0.1:${port}`);
      log('server started again on port', port);
      await page.waitForFunction(() => document.getElementById('job-state').textContent === 'SUCCEEDED' &&
        document.getElementById('metric-chart').dataset.epochs === '1,2,3', null, { timeout: WAIT_MS });
      const s = await checkFinished(page, id);
      check(s.connects >= 2, `the page opened the event stream again (${s.connects} connections)`);
    } else {
      throw new Error('unknown --case ' + testCase);
    }
    const shot = path.join(outDir, `dashboard_${testCase}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    log('screenshot:', shot);
    log('PASSED');
  } finally {
    if (browser) await browser.close();
    await daemon.stop('SIGTERM');
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  log('FAILED:', e.stack || e.message);
  process.exit(1);
});
