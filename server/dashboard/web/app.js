// The yolohook dashboard: the job list (polled), and for the selected job its
// events as Server-Sent Events drawn as curves, progress, predictions and a
// log. No framework, no charting library; every URL is relative so the page
// works wherever yolohookd serves it.
'use strict';

(function () {
  const TOKEN_KEY = 'yolohook.token';
  const POLL_MS = 2000;
  const MAX_EVENT_ROWS = 400;
  const LOSS_COLORS = ['#2563eb', '#dc2626', '#16a34a'];
  const METRICS = [
    ['P', 'metrics/precision(B)', '#7c3aed'],
    ['R', 'metrics/recall(B)', '#0891b2'],
    ['mAP50', 'metrics/mAP50(B)', '#ea580c'],
    ['mAP50-95', 'metrics/mAP50-95(B)', '#16a34a'],
  ];
  const LR_COLORS = ['#2563eb', '#dc2626', '#16a34a', '#ca8a04'];
  const BOX_COLORS = ['#ef4444', '#3b82f6', '#22c55e', '#eab308', '#a855f7',
    '#06b6d4', '#f97316', '#ec4899', '#84cc16', '#6366f1'];

  const $ = (id) => document.getElementById(id);

  // Everything the page knows; exposed as window.dash for tests and curious
  // people.
  const dash = {
    token: '',
    principal: null,   // {name, role, auth} from api/whoami
    info: null,        // ServerInfo from api/info: the event catalogue, arguments, limits
    jobs: [],
    job: null,         // the selected job's record
    jobId: '',
    stream: null,      // the EventSource following jobId
    streamEnded: false,
    retryMs: 1000,
    lastSeq: 0,        // the last event seq shown
    seqs: [],          // every seq shown, in order
    duplicates: 0,     // events that arrived twice (skipped)
    gaps: 0,           // times a seq arrived after a missing one
    connects: 0,       // event streams connected for this job (browser reconnects included)
    epochs: new Map(), // epoch (1-based) -> {loss:[], lr:{}, metrics:{}}
    totalEpochs: 0,
    preds: new Map(),  // "seq-index" -> prediction tile state
    opening: 0,        // openStream calls so far (the latest one wins)
  };
  window.dash = dash;

  // --- HTTP ---

  function authHeaders() {
    return dash.token ? { Authorization: 'Bearer ' + dash.token } : {};
  }

  async function api(method, path, body) {
    const init = { method, headers: authHeaders() };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!res.ok) {
      const message = data && data.error ? data.error.message : text || res.statusText;
      const err = new Error(message);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function setConn(ok, text) {
    const el = $('conn');
    el.textContent = text;
    el.className = 'conn ' + (ok ? 'ok' : 'down');
  }

  // --- Sign in ---

  function loadToken() {
    // http://host/#token=TOKEN signs in: a fragment never leaves the
    // browser, so the token stays out of server and proxy logs.
    const params = new URLSearchParams(location.hash.replace(/^#/, ''));
    if (params.has('token')) {
      localStorage.setItem(TOKEN_KEY, params.get('token'));
      params.delete('token');
      const h = params.toString();
      history.replaceState(null, '', location.pathname + location.search + (h ? '#' + h : ''));
    }
    dash.token = localStorage.getItem(TOKEN_KEY) || '';
  }

  async function whoami() {
    try {
      dash.principal = await api('GET', 'api/whoami');
    } catch (e) {
      dash.principal = null;
    }
    const p = dash.principal;
    // Without auth on the server there is nothing to sign in to.
    $('who').textContent = p && p.auth ? p.name + ' (' + p.role + ')' : '';
    $('token').hidden = !!p;
    $('login').querySelector('button[type=submit]').hidden = !!p;
    $('logout').hidden = !(p && p.auth);
    updateStop();
  }

  function canOperate() {
    const p = dash.principal;
    return !!p && (p.role === 'operator' || p.role === 'admin');
  }

  // --- Job list ---

  async function poll() {
    try {
      const list = await api('GET', 'api/jobs?page_size=50');
      dash.jobs = (list && list.jobs) || [];
      setConn(true, 'live');
      renderJobs();
      const current = dash.jobs.find((j) => j.id === dash.jobId);
      if (current) {
        dash.job = current;
        renderJobHead();
        // A stream that ended (the job finished or the server went away)
        // opens again when the job runs again (a resumed training run).
        if (!dash.stream && !isFinished(current.state) && dash.streamEnded) openStream();
      }
    } catch (e) {
      setConn(false, e.status === 401 ? 'sign in' : 'offline');
      if (e.status === 401) whoami();
    }
  }

  function isFinished(state) {
    return ['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED',
      'JOB_STATE_INTERRUPTED'].includes(state);
  }

  const shortState = (s) => (s || '').replace('JOB_STATE_', '');
  const shortMode = (m) => (m || '').replace('MODE_', '').toLowerCase();

  function renderJobs() {
    const body = $('jobs').tBodies[0];
    const rows = [];
    for (const job of dash.jobs) {
      const tr = document.createElement('tr');
      tr.dataset.id = job.id;
      if (job.id === dash.jobId) tr.className = 'selected';
      const created = job.create_time ? new Date(job.create_time).toLocaleTimeString() : '';
      const cells = [job.id, shortMode(job.mode), '', created, String(job.last_seq || 0)];
      cells.forEach((text, i) => {
        const td = document.createElement('td');
        if (i === 2) {
          const span = document.createElement('span');
          span.className = 'state ' + shortState(job.state);
          span.textContent = shortState(job.state);
          td.appendChild(span);
        } else {
          td.textContent = text;
        }
        tr.appendChild(td);
      });
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $('jobs-empty').hidden = dash.jobs.length > 0;
  }

  // --- The selected job ---

  function selectJob(id) {
    if (id === dash.jobId) return;
    closeStream();
    dash.jobId = id;
    dash.job = dash.jobs.find((j) => j.id === id) || null;
    dash.lastSeq = 0;
    dash.seqs = [];
    dash.duplicates = 0;
    dash.gaps = 0;
    dash.connects = 0;
    dash.epochs = new Map();
    dash.totalEpochs = 0;
    dash.preds = new Map();
    dash.streamEnded = false;
    $('events').replaceChildren();
    $('predictions').replaceChildren();
    $('progress').value = 0;
    $('progress-label').textContent = '';
    $('job-panel').hidden = !id;
    renderJobs();
    if (!id) return;
    renderJobHead();
    scheduleDraw();
    openStream();
    api('GET', 'api/jobs/' + encodeURIComponent(id)).then((job) => {
      if (dash.jobId !== id) return;
      dash.job = job;
      renderJobHead();
    }).catch((e) => { $('job-error').textContent = e.message; });
  }

  function renderJobHead() {
    const job = dash.job;
    $('job-title').textContent = job ? shortMode(job.mode) + ' ' + job.id : dash.jobId;
    const st = $('job-state');
    st.textContent = job ? shortState(job.state) : '';
    st.className = 'state ' + (job ? shortState(job.state) : '');
    // Curves and epoch progress are for training runs.
    const training = !job || job.mode === 'MODE_TRAIN';
    $('charts').hidden = !training;
    $('progress-row').hidden = !training;
    $('job-error').textContent = job && job.error ? job.error : '';
    updateStop();
  }

  function updateStop() {
    const stop = $('stop');
    const job = dash.job;
    stop.hidden = !job || isFinished(job.state);
    stop.disabled = !canOperate();
    stop.title = canOperate() ? 'Cancel this job' : 'Stopping a job needs the operator role';
  }

  async function stopJob() {
    $('stop-error').textContent = '';
    try {
      dash.job = await api('POST', 'api/jobs/' + encodeURIComponent(dash.jobId) + '/cancel');
      renderJobHead();
    } catch (e) {
      $('stop-error').textContent = e.message;
    }
  }

  // --- Events ---

  async function openStream() {
    closeStream();
    dash.streamEnded = false;
    const id = dash.jobId;
    const opening = ++dash.opening;
    const path = 'api/events/' + encodeURIComponent(id);
    let url = path + '?images=1';
    if (dash.lastSeq > 0) url += '&last_event_id=' + dash.lastSeq;
    if (dash.token) {
      // An EventSource cannot send the token in a header, and a token in a
      // URL ends up in logs: the URL carries a single-use ticket instead.
      try {
        const t = await api('POST', 'api/tickets?for=' + encodeURIComponent('/' + path));
        url += '&ticket=' + encodeURIComponent(t.ticket);
      } catch (e) {
        setTimeout(() => { if (dash.jobId === id && !dash.stream) openStream(); }, dash.retryMs);
        dash.retryMs = Math.min(dash.retryMs * 2, 10000);
        return;
      }
      if (opening !== dash.opening || dash.jobId !== id) return;  // superseded
    }
    if (!dash.info) {
      // The server names its events: the stream listens for each of them.
      try {
        dash.info = await api('GET', 'api/info');
      } catch (e) {
        setTimeout(() => { if (dash.jobId === id && !dash.stream) openStream(); }, dash.retryMs);
        dash.retryMs = Math.min(dash.retryMs * 2, 10000);
        return;
      }
      if (opening !== dash.opening || dash.jobId !== id) return;  // superseded
    }
    const es = new EventSource(url);
    dash.stream = es;
    es.onopen = () => { dash.connects++; dash.retryMs = 1000; };
    for (const event of dash.info.events) es.addEventListener(event.name, onEvent);
    es.addEventListener('end', (e) => {
      // The job finished: nothing more will come on this stream.
      closeStream();
      dash.streamEnded = true;
      try {
        const info = JSON.parse(e.data);
        if (dash.job && info.state) { dash.job.state = info.state; renderJobHead(); }
      } catch (err) { /* the job list poll brings the state too */ }
      poll();
    });
    es.onerror = () => {
      // The browser reconnects by itself (sending Last-Event-ID) while the
      // stream is CONNECTING; once it gives up (a used ticket is refused) we
      // open a new one that names the last seq in the URL.
      if (dash.token && es.readyState !== EventSource.CLOSED) es.close();
      if (es.readyState !== EventSource.CLOSED || dash.stream !== es) return;
      dash.stream = null;
      setTimeout(() => { if (dash.jobId === id && !dash.stream) openStream(); }, dash.retryMs);
      dash.retryMs = Math.min(dash.retryMs * 2, 10000);
    };
  }

  function closeStream() {
    if (dash.stream) dash.stream.close();
    dash.stream = null;
  }

  function onEvent(e) {
    let ev;
    try { ev = JSON.parse(e.data); } catch (err) { return; }
    const seq = Number(ev.seq || e.lastEventId);
    if (seq <= dash.lastSeq) { dash.duplicates++; return; }
    if (dash.lastSeq > 0 && seq !== dash.lastSeq + 1) dash.gaps++;
    dash.lastSeq = seq;
    dash.seqs.push(seq);
    if (ev.trainer) onTrainer(ev);
    if (ev.predictor) onPredictor(ev, seq);
    logEvent(ev, seq);
  }

  function epochEntry(epoch) {
    let entry = dash.epochs.get(epoch);
    if (!entry) {
      entry = { loss: null, lr: null, metrics: null };
      dash.epochs.set(epoch, entry);
    }
    return entry;
  }

  function onTrainer(ev) {
    const t = ev.trainer;
    const epoch = (t.epoch || 0) + 1;
    if (t.epochs) dash.totalEpochs = t.epochs;
    if (ev.name === 'on_train_batch_end' || ev.name === 'on_train_epoch_end') {
      const nb = t.num_batches || 1;
      const done = ev.name === 'on_train_epoch_end' ? nb : (t.batch_index || 0) + 1;
      const total = dash.totalEpochs || 1;
      $('progress').value = Math.min(1, ((epoch - 1) + done / nb) / total);
      $('progress-label').textContent =
        'epoch ' + epoch + '/' + total + ' batch ' + done + '/' + nb;
    }
    if (ev.name === 'on_train_epoch_end') {
      const entry = epochEntry(epoch);
      entry.loss = (t.tloss || []).map(Number);
      entry.lr = t.lr || {};
      scheduleDraw();
    } else if (ev.name === 'on_fit_epoch_end') {
      const entry = epochEntry(epoch);
      entry.metrics = t.metrics || {};
      if (!entry.loss) entry.loss = (t.tloss || []).map(Number);
      if (!entry.lr) entry.lr = t.lr || {};
      scheduleDraw();
    } else if (ev.name === 'on_train_end') {
      $('progress').value = 1;
    }
  }

  function summary(ev) {
    const t = ev.trainer, v = ev.validator, p = ev.predictor, x = ev.exporter;
    if (t) {
      let s = 'epoch ' + ((t.epoch || 0) + 1) + '/' + (t.epochs || '?');
      if (ev.name.includes('batch')) s += ' batch ' + ((t.batch_index || 0) + 1) + '/' + (t.num_batches || '?');
      if (ev.name === 'on_train_batch_end') s += ' loss ' + Number(t.loss || 0).toFixed(3);
      if (ev.name === 'on_fit_epoch_end' && t.metrics) {
        s += ' mAP50 ' + Number(t.metrics['metrics/mAP50(B)'] || 0).toFixed(3);
      }
      return s;
    }
    if (v) return 'batch ' + ((v.batch_index || 0) + 1) + '/' + (v.num_batches || '?') + ' seen ' + (v.seen || 0);
    if (p) return (p.strings || []).join('; ') || 'seen ' + (p.seen || 0);
    if (x) return x.output || x.file || '';
    return '';
  }

  const pendingRows = [];
  function logEvent(ev, seq) {
    const li = document.createElement('li');
    const s = document.createElement('span');
    s.className = 'seq';
    s.textContent = seq;
    const n = document.createElement('span');
    n.className = 'name';
    n.textContent = ev.name;
    li.append(s, n, document.createTextNode(summary(ev)));
    pendingRows.push(li);
    scheduleDraw();
  }

  // --- Predictions ---

  function describe(result) {
    const counts = new Map();
    for (const b of result.boxes || []) counts.set(b.cls || 0, (counts.get(b.cls || 0) || 0) + 1);
    if (counts.size === 0) return '(no detections)';
    const names = result.names || {};
    return [...counts.keys()].sort((a, b) => a - b).map((cls) => {
      const k = counts.get(cls);
      return k + ' ' + (names[cls] !== undefined ? names[cls] : cls) + (k > 1 ? 's' : '');
    }).join(', ');
  }

  function sameBoxes(a, b) {
    const x = a.boxes || [], y = b.boxes || [];
    if (x.length !== y.length) return false;
    return x.every((p, i) => ['x1', 'y1', 'x2', 'y2', 'conf', 'cls'].every((k) => (p[k] || 0) === (y[i][k] || 0)));
  }

  function onPredictor(ev, seq) {
    const p = ev.predictor;
    if (ev.name !== 'on_predict_postprocess_end' && ev.name !== 'on_predict_batch_end') return;
    const results = p.results || [];
    results.forEach((result, i) => {
      const key = (p.batch_index || 0) + '-' + i + '-' + (p.paths ? p.paths[i] : '');
      let tile = dash.preds.get(key);
      if (!tile) {
        tile = { first: result, result, image: null, described: '', replaced: false, el: null };
        dash.preds.set(key, tile);
      }
      tile.result = result;
      if (p.images && p.images[i] && p.images[i].data) tile.image = p.images[i].data;
      if (p.strings && p.strings[i]) {
        // The engine describes the detections before any callback runs: a
        // final description that differs means a callback replaced them.
        const m = /: \d+x\d+ (.*), [\d.]+ms$/.exec(p.strings[i]);
        if (m) tile.described = m[1];
      }
      tile.replaced = (tile.described !== '' && tile.described !== describe(result)) ||
        !sameBoxes(tile.first, result);
      drawPrediction(tile, seq);
    });
  }

  function drawPrediction(tile, seq) {
    if (!tile.el) {
      tile.el = document.createElement('figure');
      tile.el.className = 'pred';
      tile.canvas = document.createElement('canvas');
      tile.caption = document.createElement('figcaption');
      tile.badge = document.createElement('span');
      tile.badge.className = 'badge';
      tile.badge.textContent = 'replaced';
      tile.el.append(tile.canvas, tile.badge, tile.caption);
      $('predictions').appendChild(tile.el);
    }
    const r = tile.result;
    tile.el.classList.toggle('replaced', tile.replaced);
    tile.badge.hidden = !tile.replaced;
    tile.el.dataset.replaced = tile.replaced ? 'true' : 'false';
    tile.caption.textContent = (r.path || '').split('/').pop() + ': ' + describe(r) +
      (tile.replaced ? ' (replaced; the model found ' + tile.described + ')' : '');
    const w = r.orig_width || 320, h = r.orig_height || 320;
    const c = tile.canvas;
    c.width = w;
    c.height = h;
    const ctx = c.getContext('2d');
    const boxes = () => {
      ctx.lineWidth = Math.max(1, Math.round(Math.max(w, h) / 200));
      ctx.font = Math.max(10, Math.round(h / 28)) + 'px sans-serif';
      for (const b of r.boxes || []) {
        const color = BOX_COLORS[(b.cls || 0) % BOX_COLORS.length];
        const names = r.names || {};
        const label = (names[b.cls || 0] !== undefined ? names[b.cls || 0] : b.cls || 0) +
          ' ' + Number(b.conf || 0).toFixed(2);
        ctx.strokeStyle = color;
        ctx.setLineDash(tile.replaced ? [6, 3] : []);
        ctx.strokeRect(b.x1 || 0, b.y1 || 0, (b.x2 || 0) - (b.x1 || 0), (b.y2 || 0) - (b.y1 || 0));
        const tw = ctx.measureText(label).width + 4;
        ctx.fillStyle = color;
        ctx.fillRect(b.x1 || 0, Math.max(0, (b.y1 || 0) - 14), tw, 14);
        ctx.fillStyle = '#fff';
        ctx.fillText(label, (b.x1 || 0) + 2, Math.max(11, (b.y1 || 0) - 3));
      }
    };
    if (tile.image) {
      const img = new Image();
      img.onload = () => { ctx.drawImage(img, 0, 0, w, h); boxes(); };
      img.src = 'data:image/jpeg;base64,' + tile.image;
    } else {
      ctx.fillStyle = '#e5e7eb';
      ctx.fillRect(0, 0, w, h);
      boxes();
    }
    tile.seq = seq;
  }

  // --- Charts ---

  let drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      flushRows();
      drawCharts();
    });
  }

  function flushRows() {
    if (!pendingRows.length) return;
    const list = $('events');
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.append(...pendingRows.splice(0));
    while (list.childElementCount > MAX_EVENT_ROWS) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
    $('event-count').textContent = '(' + dash.seqs.length + ' received, last seq ' + dash.lastSeq + ')';
  }

  function drawCharts() {
    const epochs = [...dash.epochs.keys()].sort((a, b) => a - b);
    const loss = [0, 1, 2].map((i) => ({
      label: ['box', 'cls', 'dfl'][i],
      color: LOSS_COLORS[i],
      points: epochs.filter((e) => dash.epochs.get(e).loss && dash.epochs.get(e).loss.length > i)
        .map((e) => [e, dash.epochs.get(e).loss[i]]),
    }));
    const metrics = METRICS.map(([label, key, color]) => ({
      label, color,
      points: epochs.filter((e) => dash.epochs.get(e).metrics && key in dash.epochs.get(e).metrics)
        .map((e) => [e, Number(dash.epochs.get(e).metrics[key])]),
    }));
    const groups = new Set();
    for (const e of epochs) for (const k of Object.keys(dash.epochs.get(e).lr || {})) groups.add(k);
    const lr = [...groups].sort().map((k, i) => ({
      label: k.replace('lr/', ''),
      color: LR_COLORS[i % LR_COLORS.length],
      points: epochs.filter((e) => dash.epochs.get(e).lr && k in dash.epochs.get(e).lr)
        .map((e) => [e, Number(dash.epochs.get(e).lr[k])]),
    }));
    drawChart($('loss-chart'), loss);
    drawChart($('metric-chart'), metrics, { min: 0 });
    drawChart($('lr-chart'), lr, { min: 0 });
  }

  function fmt(v) {
    if (v === 0) return '0';
    const a = Math.abs(v);
    if (a < 0.01 || a >= 10000) return v.toExponential(1);
    return Number(v.toPrecision(3)).toString();
  }

  function drawChart(canvas, series, opts) {
    opts = opts || {};
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 300, cssH = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
    canvas.dataset.points = String(Math.max(0, ...series.map((s) => s.points.length)));
    canvas.dataset.epochs = [...new Set(pts.map((p) => p[0]))].sort((a, b) => a - b).join(',');
    ctx.font = '11px sans-serif';
    // The legend first: it wraps onto more rows when the chart is narrow.
    const legend = series.map((s) => {
      const p = s.points.filter((q) => Number.isFinite(q[1]));
      return { color: s.color, text: s.label + (p.length ? ' ' + fmt(p[p.length - 1][1]) : '') };
    });
    let lx = 8, ly = 10;
    for (const item of legend) {
      const width = 24 + ctx.measureText(item.text).width;
      if (lx > 8 && lx + width > cssW) { lx = 8; ly += 14; }
      item.x = lx;
      item.y = ly;
      lx += width;
    }
    const left = 52, right = 10, top = ly + 14, bottom = 24;
    const w = cssW - left - right, h = cssH - top - bottom;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    for (const item of legend) {
      ctx.fillStyle = item.color;
      ctx.fillRect(item.x, item.y - 2, 10, 3);
      ctx.fillStyle = '#374151';
      ctx.fillText(item.text, item.x + 14, item.y);
    }
    ctx.fillStyle = '#6b7280';
    if (!pts.length) {
      ctx.fillText('waiting for the first epoch', left + 8, top + h / 2);
      return;
    }
    let xMax = Math.max(dash.totalEpochs || 1, ...pts.map((p) => p[0]));
    const xMin = 1;
    if (xMax === xMin) xMax = xMin + 1;
    let yMin = Math.min(...pts.map((p) => p[1]));
    let yMax = Math.max(...pts.map((p) => p[1]));
    if (opts.min !== undefined) yMin = Math.min(yMin, opts.min);
    if (yMax === yMin) { yMax = yMin + (Math.abs(yMin) || 1) * 0.1; }
    const pad = (yMax - yMin) * 0.05;
    yMax += pad;
    if (opts.min === undefined) yMin -= pad;
    const X = (x) => left + ((x - xMin) / (xMax - xMin)) * w;
    const Y = (y) => top + h - ((y - yMin) / (yMax - yMin)) * h;

    // Grid and axes.
    ctx.strokeStyle = '#e5e7eb';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const v = yMin + ((yMax - yMin) * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, Y(v)); ctx.lineTo(left + w, Y(v)); ctx.stroke();
      ctx.fillText(fmt(v), left - 4, Y(v));
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const step = Math.max(1, Math.ceil((xMax - xMin) / 10));
    for (let x = xMin; x <= xMax; x += step) ctx.fillText(String(x), X(x), top + h + 4);
    ctx.strokeStyle = '#9ca3af';
    ctx.strokeRect(left, top, w, h);

    // Lines and points.
    for (const s of series) {
      const p = s.points.filter((q) => Number.isFinite(q[1]));
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      p.forEach((q, i) => (i ? ctx.lineTo(X(q[0]), Y(q[1])) : ctx.moveTo(X(q[0]), Y(q[1]))));
      ctx.stroke();
      for (const q of p) { ctx.beginPath(); ctx.arc(X(q[0]), Y(q[1]), 3, 0, 2 * Math.PI); ctx.fill(); }
    }
  }

  // --- Wiring ---

  function submitJob(ev) {
    ev.preventDefault();
    const form = ev.target;
    const args = {};
    for (const key of ['data', 'model', 'epochs', 'imgsz']) {
      const v = form.elements[key].value.trim();
      if (v) args[key] = v;
    }
    for (const kv of form.elements.extra.value.trim().split(/\s+/).filter(Boolean)) {
      const i = kv.indexOf('=');
      if (i <= 0) { $('submit-error').textContent = 'expected key=value, got ' + kv; return; }
      args[kv.slice(0, i)] = kv.slice(i + 1);
    }
    $('submit-error').textContent = '';
    api('POST', 'api/jobs', { mode: 'MODE_TRAIN', args }).then((job) => {
      location.hash = 'job=' + job.id;
      poll();
    }).catch((e) => { $('submit-error').textContent = e.message; });
  }

  function fromHash() {
    const m = /job=([^&]+)/.exec(location.hash);
    selectJob(m ? decodeURIComponent(m[1]) : '');
  }

  loadToken();
  $('jobs').tBodies[0].addEventListener('click', (e) => {
    const tr = e.target.closest('tr');
    if (tr) location.hash = 'job=' + encodeURIComponent(tr.dataset.id);
  });
  $('stop').addEventListener('click', stopJob);
  $('submit').addEventListener('submit', submitJob);
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    dash.token = $('token').value.trim();
    localStorage.setItem(TOKEN_KEY, dash.token);
    $('token').value = '';
    whoami();
    poll();
    if (dash.jobId) openStream();
  });
  $('logout').addEventListener('click', () => {
    dash.token = '';
    localStorage.removeItem(TOKEN_KEY);
    closeStream();
    whoami();
    poll();
  });
  window.addEventListener('hashchange', fromHash);
  window.addEventListener('resize', scheduleDraw);
  whoami();
  poll().then(fromHash);
  setInterval(poll, POLL_MS);
})();
