// cxr serve's page: uploads images to the JSON API (docs/serve.md) and shows
// the answers. Plain JavaScript, no framework, nothing fetched from
// elsewhere. Every text from the server or from file names goes through
// textContent, never innerHTML.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const token = params.get('token') || '';
  const state = {
    models: [],
    results: [],   // one entry per row: {name, state, model, result, error}
    selected: -1,
    sortDescending: true,
  };

  function withToken(url) {
    if (!token) return url;
    return url + (url.includes('?') ? '&' : '?') + 'token=' +
      encodeURIComponent(token);
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h['Authorization'] = 'Bearer ' + token;
    return h;
  }

  async function getJson(url, options) {
    const res = await fetch(withToken(url), options);
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      body = {error: 'HTTP ' + res.status + ' without a JSON answer'};
    }
    if (!res.ok) {
      throw new Error((body && body.error) || ('HTTP ' + res.status));
    }
    return body;
  }

  function model() {
    const id = $('model-select').value;
    return state.models.find((m) => m.id === id) || state.models[0];
  }

  function pct(x) {
    return (100 * x).toFixed(0) + ' %';
  }

  // What the run's threshold means, from its test split (GET /models).
  function thresholdMeaning(m) {
    if (m.test && m.test.sensitivity !== null && m.test.specificity !== null) {
      return 'On the run\'s test split (n = ' + m.test.n + ') this threshold ' +
        'found ' + pct(m.test.sensitivity) + ' of ' + m.positive +
        ' images (sensitivity) and cleared ' + pct(m.test.specificity) +
        ' of ' + m.negative + ' images (specificity).';
    }
    return 'No test-split evaluation at this threshold (cxr evaluate RUN ' +
      'measures it).';
  }

  function showModel() {
    const m = model();
    if (!m) return;
    document.querySelectorAll('.pos-name').forEach((e) => {
      e.textContent = m.positive;
    });
    let text = 'Decision: ' + m.positive + ' when P(' + m.positive + ') \u2265 ' +
      m.threshold.toFixed(3) + (m.calibrated ? ' (calibrated probability)' :
        ' (uncalibrated probability)') + ', otherwise ' + m.negative + '. ' +
      thresholdMeaning(m);
    if (!m.has_detector) {
      text += ' This run has no out-of-distribution detector; only the ' +
        'input checks can warn.';
    }
    $('threshold-info').textContent = text;
    $('card-text').textContent = m.card || '(no model card in this run)';
  }

  async function loadModels() {
    if (token) $('token-note').hidden = false;
    try {
      const body = await getJson('/api/v1/models', {headers: headers()});
      state.models = body.models || [];
      const select = $('model-select');
      select.textContent = '';
      for (const m of state.models) {
        const o = document.createElement('option');
        o.value = m.id;
        o.textContent = m.id + ' (' + m.arch + ', ' + m.input_size + ' px)';
        select.appendChild(o);
      }
      select.disabled = state.models.length < 2;
      showModel();
      $('status').textContent = 'ready';
    } catch (e) {
      $('status').textContent = 'error: ' + e.message;
    }
  }

  function contentType(name) {
    const n = name.toLowerCase();
    if (n.endsWith('.png')) return 'image/png';
    if (n.endsWith('.jpg') || n.endsWith('.jpeg')) return 'image/jpeg';
    if (n.endsWith('.bmp')) return 'image/bmp';
    if (n.endsWith('.dcm') || n.endsWith('.dicom')) return 'application/dicom';
    return 'application/octet-stream';
  }

  function oodText(r) {
    if (!r || r.in_distribution) return '';
    return 'Out of distribution: ' + (r.reasons.length ? r.reasons.join('; ') :
      'flagged') + '. P means nothing for this image.';
  }

  function renderRow(entry) {
    const tr = entry.row;
    const r = entry.result;
    // The attributes the browser test reads (docs/serve.md).
    tr.setAttribute('data-state', entry.state);
    tr.setAttribute('data-name', entry.name);
    tr.setAttribute('data-p', r ? r.p.toFixed(4) : '');
    tr.setAttribute('data-ood', r && !r.in_distribution ? '1' : '0');
    tr.classList.toggle('flagged', !!(r && !r.in_distribution));
    tr.querySelector('.prob').textContent =
      entry.state === 'pending' ? '\u2026' : (r ? r.p.toFixed(4) : '');
    tr.querySelector('.decision').textContent =
      entry.state === 'error' ? 'error' : (r ? r.decision : 'waiting');
    tr.querySelector('.ood').textContent =
      entry.state === 'error' ? entry.error : oodText(r);
  }

  function addRow(name) {
    const tr = document.createElement('tr');
    tr.className = 'result';
    tr.tabIndex = 0;
    for (const cls of ['name', 'prob', 'decision', 'ood']) {
      const td = document.createElement('td');
      td.className = cls;
      tr.appendChild(td);
    }
    tr.querySelector('.name').textContent = name;
    const entry = {name: name, state: 'pending', model: $('model-select').value,
                   result: null, error: '', row: tr};
    state.results.push(entry);
    tr.addEventListener('click', () => select(entry));
    tr.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        select(entry);
      }
    });
    renderRow(entry);
    $('rows').appendChild(tr);
    updateButtons();
    return entry;
  }

  function updateButtons() {
    const any = state.results.some((e) => e.state !== 'pending');
    $('export-csv').disabled = !any;
    $('export-json').disabled = !any;
    $('clear').disabled = state.results.length === 0;
  }

  async function score(file, entry) {
    const url = '/api/v1/predict?maps=1&preview=1&model=' +
      encodeURIComponent(entry.model) + '&name=' + encodeURIComponent(file.name);
    try {
      const body = await getJson(url, {
        method: 'POST',
        headers: headers({'Content-Type': contentType(file.name)}),
        body: file,
      });
      const r = body.results[0];
      if (r.error) throw new Error(r.error);
      entry.result = r;
      entry.state = 'done';
    } catch (e) {
      entry.state = 'error';
      entry.error = e.message;
    }
    renderRow(entry);
    updateButtons();
    if (state.results[state.selected] === entry) select(entry);
  }

  // Two requests at a time: the server queues the rest anyway, and a large
  // batch does not fill its queue.
  async function addFiles(files) {
    const jobs = Array.from(files).map((f) => ({file: f, entry: addRow(f.name)}));
    let next = 0;
    const lane = async () => {
      while (next < jobs.length) {
        const j = jobs[next++];
        await score(j.file, j.entry);
      }
    };
    await Promise.all([lane(), lane()]);
    if (!$('detail').hidden) return;
    const first = state.results.find((e) => e.state !== 'pending');
    if (first) select(first);
  }

  function select(entry) {
    state.selected = state.results.indexOf(entry);
    document.querySelectorAll('tr.result').forEach((tr) => {
      tr.setAttribute('aria-selected', tr === entry.row ? 'true' : 'false');
    });
    const d = $('detail');
    d.hidden = false;
    $('detail-name').textContent = entry.name;
    const r = entry.result;
    const ood = $('detail-ood');
    ood.textContent = oodText(r);
    ood.hidden = !ood.textContent;
    $('detail-error').hidden = entry.state !== 'error';
    $('detail-error').textContent = entry.error;
    const img = $('detail-image');
    if (r && r.preview) {
      img.src = r.preview;
    } else {
      img.removeAttribute('src');
    }
    if (r) {
      const m = state.models.find((x) => x.id === entry.model) || model();
      $('detail-summary').textContent = 'P(' + m.positive + ') = ' +
        r.p.toFixed(4) + ' (raw ' + r.p_raw.toFixed(4) + '): ' + r.decision +
        ' at the threshold ' + r.threshold.toFixed(3) + '. Image ' + r.width +
        ' \u00d7 ' + r.height + ' ' + r.format + '; model ' + entry.model + '. ' +
        thresholdMeaning(m);
    } else {
      $('detail-summary').textContent =
        entry.state === 'pending' ? 'Waiting for the server\u2026' : '';
    }
    drawOverlay();
  }

  // Colour map for the gray Grad-CAM PNGs: transparent for no evidence,
  // through red to yellow for the most.
  function heat(v) {
    const t = v / 255;
    return [255, Math.round(255 * Math.max(0, (t - 0.5) * 2)), 0,
            Math.round(255 * Math.min(1, t * 1.5))];
  }

  let overlayToken = 0;
  function drawOverlay() {
    const canvas = $('overlay');
    const img = $('detail-image');
    const ctx = canvas.getContext('2d');
    const which = $('map-toggle').value;
    canvas.style.opacity = String($('opacity').value / 100);
    const entry = state.results[state.selected];
    const r = entry && entry.result;
    const mine = ++overlayToken;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!r || !r.maps || which === 'none') return;
    const src = which === 'covid' ? r.maps.positive : r.maps.negative;
    const map = new Image();
    map.onload = () => {
      if (mine !== overlayToken) return;
      const small = document.createElement('canvas');
      small.width = map.naturalWidth;
      small.height = map.naturalHeight;
      const sctx = small.getContext('2d');
      sctx.drawImage(map, 0, 0);
      const px = sctx.getImageData(0, 0, small.width, small.height);
      for (let i = 0; i < px.data.length; i += 4) {
        const c = heat(px.data[i]);
        px.data[i] = c[0];
        px.data[i + 1] = c[1];
        px.data[i + 2] = c[2];
        px.data[i + 3] = c[3];
      }
      sctx.putImageData(px, 0, 0);
      // The model saw the image resized to a square: stretch the map back
      // over the whole image.
      canvas.width = img.naturalWidth || small.width;
      canvas.height = img.naturalHeight || small.height;
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
    };
    map.src = src;
  }

  function sortRows() {
    const dir = state.sortDescending ? -1 : 1;
    const rows = state.results.slice().sort((a, b) => {
      const pa = a.result ? a.result.p : null;
      const pb = b.result ? b.result.p : null;
      if (pa === null && pb === null) return 0;
      if (pa === null) return 1;  // pending and errors last
      if (pb === null) return -1;
      return dir * (pa - pb);
    });
    for (const e of rows) $('rows').appendChild(e.row);
    $('prob-header').setAttribute('aria-sort',
      state.sortDescending ? 'descending' : 'ascending');
    state.sortDescending = !state.sortDescending;
  }

  function exported() {
    return state.results.filter((e) => e.state !== 'pending').map((e) => {
      const r = e.result || {};
      return {
        name: e.name, model: e.model, p: r.p, p_raw: r.p_raw,
        decision: r.decision, threshold: r.threshold,
        in_distribution: r.in_distribution, ood_score: r.ood_score,
        reasons: r.reasons || [], error: e.error || undefined,
      };
    });
  }

  function download(text, type, name) {
    const url = URL.createObjectURL(new Blob([text], {type: type}));
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function csvField(v) {
    if (v === undefined || v === null) return '';
    const s = String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function exportCsv() {
    const head = ['name', 'model', 'p', 'p_raw', 'decision', 'threshold',
                  'in_distribution', 'ood_score', 'reasons', 'error'];
    const lines = [head.join(',')];
    for (const r of exported()) {
      lines.push([r.name, r.model, r.p, r.p_raw, r.decision, r.threshold,
                  r.in_distribution === undefined ? '' :
                    (r.in_distribution ? 1 : 0),
                  r.ood_score, r.reasons.join('; '), r.error]
        .map(csvField).join(','));
    }
    download(lines.join('\n') + '\n', 'text/csv', 'cxr-worklist.csv');
  }

  function exportJson() {
    download(JSON.stringify({results: exported()}, null, 2) + '\n',
             'application/json', 'cxr-worklist.json');
  }

  function clearAll() {
    state.results = [];
    state.selected = -1;
    $('rows').textContent = '';
    $('detail').hidden = true;
    updateButtons();
  }

  function setup() {
    $('model-select').addEventListener('change', showModel);
    $('file-input').addEventListener('change', (ev) => {
      addFiles(ev.target.files);
      ev.target.value = '';
    });
    const zone = $('drop-zone');
    zone.addEventListener('dragover', (ev) => {
      ev.preventDefault();
      zone.classList.add('over');
    });
    zone.addEventListener('dragleave', () => zone.classList.remove('over'));
    zone.addEventListener('drop', (ev) => {
      ev.preventDefault();
      zone.classList.remove('over');
      if (ev.dataTransfer && ev.dataTransfer.files.length) {
        addFiles(ev.dataTransfer.files);
      }
    });
    $('map-toggle').addEventListener('change', drawOverlay);
    $('opacity').addEventListener('input', () => {
      $('overlay').style.opacity = String($('opacity').value / 100);
    });
    $('detail-image').addEventListener('load', drawOverlay);
    $('sort-prob').addEventListener('click', sortRows);
    $('export-csv').addEventListener('click', exportCsv);
    $('export-json').addEventListener('click', exportJson);
    $('clear').addEventListener('click', clearAll);
    loadModels();
  }

  setup();
})();
