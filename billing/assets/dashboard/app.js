// costpipe dashboard: a single page over the billing API, served by costpipe-billing itself.
//
// Rules this file keeps:
// - Money arrives as exact decimal strings and stays one: amounts shown in the page are
//   formatted from those strings (Intl.NumberFormat formats a string exactly), totals are
//   added with BigInt (decAdd), and each amount's exact text is in its data-amount
//   attribute. Floats are used only for chart heights and bar widths.
// - Text from the API is only ever set as text (no innerHTML): department or model names
//   can hold anything.
// - The key lives in sessionStorage (this tab only) and goes out as a Bearer header.
'use strict';

(() => {
  const KEY = 'costpipe.billing.key';
  const VIEWS = ['overview', 'costs', 'live', 'top', 'anomalies', 'controls', 'invoice'];
  const GRAINS = ['minute', 'hour', 'day', 'week', 'month'];
  const LIVE_WINDOWS = [['1m', '1 minute'], ['5m', '5 minutes'], ['1h', '1 hour'], ['24h', '24 hours']];
  const LIVE_REFRESH_MS = 5000;
  const PALETTE = ['#2bb39a', '#3b82c4', '#e8702a', '#8e5bd0', '#d64545', '#d9a400', '#1f9bb3',
    '#b0578d', '#6c8a2e', '#7a8699'];
  const MAX_SERIES = 8;

  const state = { who: null, seq: 0, timer: null, charts: [], mounts: [] };

  // ---------------------------------------------------------------- DOM helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const $ = (sel, root) => (root || document).querySelector(sel);

  // ---------------------------------------------------------------- exact decimals
  // A decimal string as [BigInt units, scale]; "12.50" -> [1250n, 2].
  function decParse(s) {
    const m = /^(-?)(\d*)(?:\.(\d*))?$/.exec(String(s).trim());
    if (!m) throw new Error(`not a decimal: ${s}`);
    const frac = m[3] || '';
    const v = BigInt((m[2] || '0') + frac);
    return [m[1] ? -v : v, frac.length];
  }
  function decFormat(v, scale) {
    const neg = v < 0n;
    let digits = (neg ? -v : v).toString().padStart(scale + 1, '0');
    let out = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
    if (scale) out = out.replace(/0+$/, '').replace(/\.$/, '');
    return (neg && out !== '0' ? '-' : '') + out;
  }
  function decAdd(a, b) {
    const [x, sx] = decParse(a);
    const [y, sy] = decParse(b);
    const s = Math.max(sx, sy);
    return decFormat(x * 10n ** BigInt(s - sx) + y * 10n ** BigInt(s - sy), s);
  }
  function decCmp(a, b) {
    const [x, sx] = decParse(a);
    const [y, sy] = decParse(b);
    const s = Math.max(sx, sy);
    const d = x * 10n ** BigInt(s - sx) - y * 10n ** BigInt(s - sy);
    return d < 0n ? -1 : d > 0n ? 1 : 0;
  }
  const isZero = (s) => decCmp(s, '0') === 0;
  // Sums `amount(row)` per `currency(row)` exactly: {EUR: "12.3", ...}.
  function sumBy(rows, currency, amount) {
    const out = {};
    for (const r of rows) {
      const c = currency(r);
      out[c] = out[c] === undefined ? decFormat(...decParse(amount(r))) : decAdd(out[c], amount(r));
    }
    return out;
  }

  // ---------------------------------------------------------------- formatting
  const intFmt = new Intl.NumberFormat('en-US');
  function moneyText(amount, currency) {
    // Below one unit, four places (LLM calls cost fractions of a cent); else two.
    const digits = isZero(amount) ? 2 : (/^-?0*\./.test(amount) || /^-?0+$/.test(amount) ? 4 : 2);
    try {
      return new Intl.NumberFormat('en-US', {
        style: 'currency', currency, minimumFractionDigits: digits, maximumFractionDigits: digits,
      }).format(amount);
    } catch (_) {
      return `${amount} ${currency}`;
    }
  }
  function money(amount, currency, testid) {
    if (amount === null || amount === undefined || amount === '') {
      return h('span', { class: 'money muted', 'data-testid': testid, title: 'not available' }, '—');
    }
    return h('span', {
      class: 'money', 'data-amount': amount, 'data-currency': currency, 'data-testid': testid,
      title: `${amount} ${currency} (exact)`,
    }, moneyText(amount, currency));
  }
  const count = (n) => intFmt.format(n);
  const capital = (w) => w.charAt(0).toUpperCase() + w.slice(1);
  function pct(ratio) {
    if (!Number.isFinite(ratio)) return '—';
    return `${ratio >= 10 ? '>999' : Math.round(ratio * 100)} %`;
  }
  // Budget use colours: < 50 % ok, < 80 % warn, < 100 % high, else over.
  function band(ratio) {
    if (!(ratio >= 0.5)) return 'ok';
    if (ratio < 0.8) return 'warn';
    if (ratio < 1) return 'high';
    return 'over';
  }
  function when(rfc3339) {
    // Shown as the API gives it, in the tenant's zone: "2026-03-04 10:15".
    return rfc3339 ? rfc3339.replace('T', ' ').replace(/:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)$/, '') : '';
  }

  // ---------------------------------------------------------------- dates in a zone
  function localDate(tz, d) {
    try {
      return new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' })
        .format(d || new Date());
    } catch (_) {
      return new Date().toISOString().slice(0, 10);
    }
  }
  function addDays(ymd, n) {
    const [y, m, d] = ymd.split('-').map(Number);
    return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
  }
  function monthBounds(tz) {
    const today = localDate(tz);
    return { today, tomorrow: addDays(today, 1), month: today.slice(0, 7), monthStart: `${today.slice(0, 7)}-01` };
  }

  // ---------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  async function api(path, opts) {
    const key = sessionStorage.getItem(KEY) || '';
    let resp;
    try {
      resp = await fetch(path, { headers: { Authorization: `Bearer ${key}` }, cache: 'no-store' });
    } catch (_) {
      throw new ApiError(0, 'unreachable',
        'The billing API cannot be reached: is costpipe-billing running? The page retries when you reload or switch views.');
    }
    if (!resp.ok) {
      let body = null;
      try { body = await resp.json(); } catch (_) { /* not JSON: keep the status */ }
      throw new ApiError(resp.status, (body && body.error) || `http_${resp.status}`,
        (body && body.message) || `The billing API answered ${resp.status} ${resp.statusText}.`);
    }
    return opts && opts.text ? resp.text() : resp.json();
  }
  const T = (tenant) => `/v1/tenants/${encodeURIComponent(tenant)}`;
  const qs = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== undefined && v !== '')).toString();

  // ---------------------------------------------------------------- routing
  function route() {
    const m = /^#\/([^/?]*)\/([a-z]+)(?:\?(.*))?$/.exec(location.hash);
    if (!m) return null;
    return { tenant: decodeURIComponent(m[1]), view: m[2], params: new URLSearchParams(m[3] || '') };
  }
  function href(tenant, view, params) {
    const q = params ? String(params) : '';
    return `#/${encodeURIComponent(tenant)}/${view}${q ? `?${q}` : ''}`;
  }
  function go(tenant, view, params) {
    const next = href(tenant, view, params);
    if (location.hash === next) render();
    else location.hash = next;
  }
  function defaultTenant() {
    const w = state.who;
    if (!w) return '';
    return w.tenant || (w.tenants[0] && w.tenants[0].tenant) || '';
  }
  function tenantInfo(t) {
    const w = state.who;
    return (w && w.tenants.find((x) => x.tenant === t)) || { tenant: t, time_zone: 'UTC', billing_currency: 'USD' };
  }

  // ---------------------------------------------------------------- shell
  function showLogin(message) {
    state.who = null;
    stopTimers();
    $('#login').hidden = false;
    $('#tabs').hidden = true;
    $('#session').hidden = true;
    $('#view').replaceChildren();
    $('#view').dataset.state = 'login';
    const err = $('#login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('#login-key').value = '';
    $('#login-key').focus();
  }
  function showApp() {
    const w = state.who;
    $('#login').hidden = true;
    $('#tabs').hidden = false;
    $('#session').hidden = false;
    $('#role').textContent = w.role === 'admin' ? 'admin key' : `tenant key · ${w.tenant}`;
    const picker = $('#tenant-picker');
    picker.replaceChildren(...w.tenants.map((t) => h('option', { value: t.tenant }, t.tenant)));
    picker.disabled = w.role !== 'admin';
  }
  function logout(message) {
    sessionStorage.removeItem(KEY);
    history.replaceState(null, '', location.pathname);
    showLogin(message);
  }
  async function login(key) {
    sessionStorage.setItem(KEY, key);
    try {
      state.who = await api('/v1/whoami');
    } catch (e) {
      sessionStorage.removeItem(KEY);
      showLogin(e.status === 401 ? 'This key was refused by the billing API.' : e.message);
      return;
    }
    showApp();
    const r = route();
    if (!r || !VIEWS.includes(r.view)) go(defaultTenant(), 'overview');
    else render();
  }
  function stopTimers() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
    for (const c of state.charts) c.destroy();
    state.charts = [];
    state.mounts = [];
  }

  function loading(text) {
    return h('div', { class: 'loading' }, text || 'Loading…');
  }
  function errorBox(e, tenant) {
    const forbidden = e.status === 403;
    const title = forbidden ? 'Not allowed'
      : e.status === 0 ? 'Billing API unreachable'
        : e.status === 503 ? 'Temporarily unavailable'
          : e.status === 422 ? 'Too much to show'
            : `Error ${e.status || ''}`.trim();
    const text = forbidden ? `This key may not read tenant “${tenant}”: the billing API refused it (403).` : e.message;
    return h('div', {
      class: 'error', role: 'alert', 'data-testid': 'error', 'data-status': e.status, 'data-code': e.code,
    }, h('strong', {}, title), text);
  }
  function empty(text) {
    return h('div', { class: 'empty', 'data-testid': 'empty' }, text);
  }

  async function render() {
    stopTimers();
    if (!state.who) return;
    const r = route();
    if (!r || !VIEWS.includes(r.view) || !r.tenant) {
      go(defaultTenant(), 'overview');
      return;
    }
    for (const a of document.querySelectorAll('#tabs a')) {
      const keep = ['costs', 'top', 'anomalies'].includes(a.dataset.view) && ['costs', 'top', 'anomalies'].includes(r.view)
        ? rangeParams(r.params) : null;
      a.href = href(r.tenant, a.dataset.view, keep);
      a.classList.toggle('active', a.dataset.view === r.view);
    }
    const picker = $('#tenant-picker');
    if ([...picker.options].some((o) => o.value === r.tenant)) picker.value = r.tenant;
    const seq = ++state.seq;
    const view = $('#view');
    // data-seq, data-view, data-tenant and data-state tell observers (the browser test) which
    // render the page is showing and whether it settled.
    view.dataset.seq = String(seq);
    view.dataset.view = r.view;
    view.dataset.tenant = r.tenant;
    view.dataset.state = 'loading';
    view.replaceChildren(loading());
    try {
      const node = await RENDER[r.view](r.tenant, r.params, seq);
      if (seq !== state.seq) return;
      view.replaceChildren(node);
      mountAll();
      view.dataset.state = 'ready';
    } catch (e) {
      if (seq !== state.seq) return;
      if (e.status === 401) {
        logout('The billing API refused the key (401): log in again.');
        return;
      }
      if (!(e instanceof ApiError)) console.error(e);
      view.replaceChildren(pageHead(r.tenant, TITLES[r.view]), errorBox(e, r.tenant));
      view.dataset.state = 'error';
    }
  }
  function mountAll() {
    const mounts = state.mounts;
    state.mounts = [];
    for (const m of mounts) m();
  }

  function pageHead(tenant, title, sub, extra) {
    return h('div', { class: 'head' },
      h('div', {}, h('h1', {}, title), h('div', { class: 'sub' }, sub || `Tenant ${tenant}`)),
      extra || null);
  }
  const TITLES = {
    overview: 'Overview', costs: 'Cost over time', live: 'Live windows', top: 'Top spenders',
    anomalies: 'Anomalies', controls: 'Budget control events', invoice: 'Invoice',
  };

  // ---------------------------------------------------------------- charts
  // A uPlot line chart of per-group cost series, created once its box is in the page.
  function costChart(answer, dim, tz, grain, currency) {
    const rows = answer.rows;
    const box = h('div', { class: 'chart', 'data-testid': `chart-${dim}` });
    const mine = rows.filter((r) => r.billing_currency === currency);
    if (!mine.length) return empty('No cost in this range.');
    const xs = [...new Set(mine.map((r) => Date.parse(r.bucket_start) / 1000))].sort((a, b) => a - b);
    const xi = new Map(xs.map((x, i) => [x, i]));
    const byGroup = new Map();
    for (const r of mine) {
      const g = r.group[dim] || '(none)';
      if (!byGroup.has(g)) byGroup.set(g, { total: 0, ys: new Array(xs.length).fill(0) });
      const s = byGroup.get(g);
      const v = Number(r.billing_cost);
      s.total += v;
      s.ys[xi.get(Date.parse(r.bucket_start) / 1000)] += v;
    }
    let groups = [...byGroup.entries()].sort((a, b) => b[1].total - a[1].total);
    if (groups.length > MAX_SERIES) {
      const rest = groups.slice(MAX_SERIES - 1);
      const other = { total: 0, ys: new Array(xs.length).fill(0) };
      for (const [, s] of rest) { other.total += s.total; s.ys.forEach((v, i) => { other.ys[i] += v; }); }
      groups = groups.slice(0, MAX_SERIES - 1).concat([[`${rest.length} others`, other]]);
    }
    const fmtTick = (v) => {
      try {
        return new Intl.NumberFormat('en-US', { style: 'currency', currency, notation: 'compact', maximumFractionDigits: 2 }).format(v);
      } catch (_) { return String(v); }
    };
    const xFrom = Date.parse(answer.from) / 1000;
    const xTo = Date.parse(answer.to) / 1000;
    const nextHour = Math.ceil(Date.now() / 3600000) * 3600;
    state.mounts.push(() => {
      if (typeof uPlot === 'undefined') {
        box.replaceChildren(empty('The chart library did not load.'));
        return;
      }
      const width = Math.max(box.clientWidth, 320);
      const opts = {
        width, height: 260,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), tz),
        // The question's range, so a sparse series sits where it belongs in time; cut at the
        // next hour, since no cost is in the future.
        scales: { x: { time: true, range: () => [xFrom, Math.max(Math.min(xTo, nextHour), xs[xs.length - 1])] } },
        series: [{ label: grain }].concat(groups.map(([g], i) => ({
          label: g, stroke: PALETTE[i % PALETTE.length], width: 2,
          fill: `${PALETTE[i % PALETTE.length]}14`, points: { show: xs.length <= 40 },
          value: (u, v) => (v === null || v === undefined ? '—' : fmtTick(v)),
        }))),
        axes: [{ stroke: '#667085', grid: { stroke: '#eef1f5' } },
          { stroke: '#667085', grid: { stroke: '#eef1f5' }, size: 70, values: (u, vals) => vals.map(fmtTick) }],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      };
      const chart = new uPlot(opts, [xs].concat(groups.map(([, s]) => s.ys)), box);
      state.charts.push(chart);
    });
    return box;
  }
  window.addEventListener('resize', () => {
    for (const c of state.charts) {
      const parent = c.root.parentElement;
      if (parent) c.setSize({ width: Math.max(parent.clientWidth, 320), height: 260 });
    }
  });

  // Total rows (grain=total) of a grouped answer, as a table with exact amounts.
  function totalsTable(rows, dim, testid) {
    if (!rows.length) return empty('No cost in this range.');
    const sorted = rows.slice().sort((a, b) => decCmp(b.billing_cost, a.billing_cost));
    const top = Number(sorted[0].billing_cost) || 1;
    const totals = sumBy(rows, (r) => r.billing_currency, (r) => r.billing_cost);
    const colour = new Map();
    return h('table', { 'data-testid': testid },
      h('thead', {}, h('tr', {}, h('th', {}, capital(dim)), h('th', { class: 'num' }, 'Requests'),
        h('th', { class: 'num' }, 'Tokens in / out'), h('th', {}, ''), h('th', { class: 'num' }, 'Cost'))),
      h('tbody', {}, sorted.map((r) => {
        const g = r.group[dim] || '(none)';
        if (!colour.has(g)) colour.set(g, PALETTE[colour.size % PALETTE.length]);
        return h('tr', {},
          h('td', { class: 'name', title: g }, h('span', { class: 'swatch', style: null, 'data-colour': colour.get(g) }), g),
          h('td', { class: 'num' }, count(r.requests)),
          h('td', { class: 'num' }, `${count(r.tokens.input + r.tokens.cached_input)} / ${count(r.tokens.output)}`),
          h('td', {}, shareBar(Number(r.billing_cost) / top)),
          h('td', { class: 'num' }, money(r.billing_cost, r.billing_currency)));
      })),
      h('tfoot', {}, Object.entries(totals).map(([cur, amount]) => h('tr', {},
        h('td', {}, `Total ${cur}`), h('td', {}), h('td', {}), h('td', {}),
        h('td', { class: 'num' }, money(amount, cur, `${testid}-total-${cur}`))))));
  }
  function shareBar(ratio) {
    const bar = h('div', { class: 'share' }, h('span'));
    bar.firstChild.style.width = `${Math.max(0, Math.min(1, ratio || 0)) * 100}%`;
    return bar;
  }
  // Swatch colours are set through the DOM (the CSP forbids inline style attributes).
  function paintSwatches(root) {
    for (const s of root.querySelectorAll('.swatch[data-colour]')) s.style.background = s.dataset.colour;
  }

  // ---------------------------------------------------------------- view: overview
  async function overview(tenant) {
    const info = tenantInfo(tenant);
    const b = monthBounds(info.time_zone);
    const base = T(tenant);
    const weekAgo = addDays(b.today, -6);
    const [today, mtd, forecast, budgets, recent] = await Promise.all([
      api(`${base}/costs?${qs({ from: b.today, to: b.tomorrow, grain: 'total' })}`),
      api(`${base}/costs?${qs({ from: b.monthStart, to: b.tomorrow, grain: 'total' })}`),
      api(`${base}/forecast?${qs({ period: b.month })}`),
      api(`${base}/budgets/states`),
      api(`${base}/costs?${qs({ from: weekAgo, to: b.tomorrow, grain: 'hour', group_by: 'model' })}`),
    ]);
    const todayBy = sumBy(today.rows, (r) => r.billing_currency, (r) => r.billing_cost);
    const mtdBy = sumBy(mtd.rows, (r) => r.billing_currency, (r) => r.billing_cost);
    const projected = Object.fromEntries(forecast.rows.map((r) => [r.billing_currency, r.projected]));
    const currencies = [...new Set([...Object.keys(mtdBy), ...Object.keys(projected), info.billing_currency])];
    const cur = currencies.find((c) => mtdBy[c] !== undefined) || info.billing_currency;
    const amounts = (by, id) => (Object.keys(by).length
      ? Object.entries(by).map(([c, a]) => money(a, c, `${id}-${c}`))
      : [money('0', cur, `${id}-${cur}`)]);
    const requests = mtd.rows.reduce((n, r) => n + r.requests, 0);
    const projectedCard = kpi('Projected month', amounts(projected, 'kpi-forecast'),
      forecast.rows.length ? `trend ×${forecast.rows[0].trend_correction} · ${forecast.days_in_period} days` : 'nothing spent yet',
      'kpi-forecast');
    // The projection moves with the clock: the instant it was made is kept beside it.
    projectedCard.dataset.asOf = forecast.as_of;
    const kpis = h('div', { class: 'grid kpis' },
      kpi('Today', amounts(todayBy, 'kpi-today'), `${b.today} (${info.time_zone})`, 'kpi-today'),
      kpi('Month to date', amounts(mtdBy, 'kpi-mtd'), `${count(requests)} requests since ${b.monthStart}`, 'kpi-mtd'),
      projectedCard,
      kpi('Budgets', [h('span', {}, String(budgets.budgets.length))],
        `${budgets.budgets.filter((x) => levelOf(x) !== 'OK').length} above OK`, 'kpi-budgets'));
    const gauges = budgets.budgets.length
      ? h('div', { class: 'grid gauges', 'data-testid': 'budgets' },
        budgets.budgets.map((x) => budgetCard(x, tenant, { today: todayBy, mtd: mtdBy, projected })))
      : empty(`No budget state has been published for ${tenant} yet. Define budgets with costpipe-budgets (or PUT /v1/budgets/{id}); the aggregator records each level change here.`);
    const chart = h('div', { class: 'card section' }, h('h2', {}, `Last 7 days by hour and model (${cur})`),
      costChart(recent, 'model', info.time_zone, 'hour', cur));
    return h('div', {},
      pageHead(tenant, `Overview · ${tenant}`, `Costs in ${info.time_zone} · billing currency ${info.billing_currency}`),
      kpis,
      h('div', { class: 'section' }, h('h3', {}, 'Budgets'), gauges),
      chart);
  }
  function kpi(label, value, note, testid) {
    return h('div', { class: 'card kpi', 'data-testid': testid },
      h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), h('div', { class: 'note' }, note));
  }

  // A budget without a STATE record never left OK (it is listed for its forecast).
  const levelOf = (b) => (b.state ? b.state.level : 'OK');

  // One budget: a semicircle gauge of its recorded use, and bars of today / month to date /
  // forecast against its limit where they measure the same thing (a tenant-wide budget in
  // the tenant's billing currency).
  function budgetCard(b, tenant, sums) {
    const s = b.state || b.forecast;
    const level = levelOf(b);
    const ratio = Number(s.spend) / Number(s.limit);
    const scope = Object.entries(s.scope || {}).map(([k, v]) => `${k}=${v}`).join(', ') || 'global';
    const tenantWide = Object.keys(s.scope || {}).length === 1 && s.scope.tenant === tenant;
    const meters = [];
    const meter = (label, amount, id) => {
      if (amount === undefined) return;
      const r = Number(amount) / Number(s.limit);
      const bar = h('div', { class: 'bar' }, h('span', { class: `fill-${band(r)}` }), h('i'), h('i'));
      bar.children[0].style.width = `${Math.min(1, Math.max(0, r)) * 100}%`;
      bar.children[1].style.left = '50%';
      bar.children[2].style.left = '80%';
      meters.push(h('div', { class: 'meter', 'data-testid': id },
        h('span', { class: 'muted' }, label), bar,
        h('span', { class: `num lvl-${band(r)}` }, money(amount, s.currency), ` · ${pct(r)}`)));
    };
    if (tenantWide) {
      if (s.period_kind === 'day') meter('Today', sums.today[s.currency], 'meter-today');
      if (s.period_kind === 'month') {
        meter('Month to date', sums.mtd[s.currency], 'meter-mtd');
        meter('Forecast', sums.projected[s.currency], 'meter-forecast');
      }
    }
    if (b.forecast && b.forecast.forecast_spend) meter('Aggregator forecast', b.forecast.forecast_spend, 'meter-agg-forecast');
    return h('div', { class: 'card gauge', 'data-testid': 'budget', 'data-budget': b.budget_id },
      h('div', { class: 'top' },
        h('div', {}, h('div', { class: 'id' }, b.budget_id), h('div', { class: 'scope' }, `${scope} · ${s.period_kind}`)),
        h('div', {}, h('span', { class: `badge ${level}` }, level), s.shadow ? h('span', { class: 'badge shadow' }, 'shadow') : null)),
      gaugeSvg(ratio),
      h('div', { class: 'note' },
        'Recorded ', money(s.spend, s.currency, 'budget-spend'), ' of ', money(s.limit, s.currency, 'budget-limit'),
        ` at ${when(b.decided_at)}`),
      meters);
  }
  function gaugeSvg(ratio) {
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '-14 -16 228 134');
    const el = (tag, attrs) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      svg.append(e);
      return e;
    };
    // The arc spans 0..120 % so that an overrun shows; ticks at 50, 80 and 100 %.
    const FULL = 1.2;
    const pt = (f, r) => {
      const a = Math.PI * (1 - f);
      return [100 + r * Math.cos(a), 100 - r * Math.sin(a)];
    };
    const arc = (f0, f1, r) => {
      const [x0, y0] = pt(f0, r);
      const [x1, y1] = pt(f1, r);
      return `M ${x0.toFixed(2)} ${y0.toFixed(2)} A ${r} ${r} 0 0 1 ${x1.toFixed(2)} ${y1.toFixed(2)}`;
    };
    el('path', { d: arc(0, 1, 80), fill: 'none', stroke: '#eef1f5', 'stroke-width': 18 });
    const f = Math.max(0, Math.min(Number.isFinite(ratio) ? ratio : FULL, FULL)) / FULL;
    if (f > 0) el('path', { d: arc(0, Math.max(f, 0.004), 80), class: `arc arc-${band(ratio)}`, 'stroke-width': 18 });
    for (const t of [0.5, 0.8, 1]) {
      const [x0, y0] = pt(t / FULL, 68);
      const [x1, y1] = pt(t / FULL, 93);
      el('line', { x1: x0, y1: y0, x2: x1, y2: y1, stroke: '#1c2433', 'stroke-opacity': 0.35, 'stroke-width': 1.5 });
      const [tx, ty] = pt(t / FULL, 104);
      const label = el('text', { x: tx, y: ty, 'font-size': 9, 'text-anchor': 'middle', fill: '#667085' });
      label.textContent = `${t * 100}%`;
    }
    const value = el('text', { x: 100, y: 98, 'text-anchor': 'middle', 'font-size': 26, 'font-weight': 700, class: `ink-${band(ratio)}`, 'data-testid': 'gauge-pct' });
    value.textContent = pct(ratio);
    return svg;
  }

  // ---------------------------------------------------------------- view: costs
  function rangeParams(params) {
    const p = new URLSearchParams();
    for (const k of ['from', 'to', 'grain']) if (params && params.get(k)) p.set(k, params.get(k));
    return p;
  }
  function rangeOf(tenant, params) {
    const b = monthBounds(tenantInfo(tenant).time_zone);
    // Default: the last 30 days, so that the chart says something early in a month too.
    return {
      from: params.get('from') || addDays(b.today, -29),
      to: params.get('to') || b.tomorrow,
      grain: GRAINS.includes(params.get('grain')) ? params.get('grain') : 'day',
    };
  }
  function rangeBar(tenant, view, range, withGrain) {
    const from = h('input', { type: 'date', value: range.from, 'data-testid': 'range-from', 'aria-label': 'from' });
    const to = h('input', { type: 'date', value: range.to, 'data-testid': 'range-to', 'aria-label': 'to (exclusive)' });
    const grain = h('select', { 'data-testid': 'range-grain' }, GRAINS.map((g) => h('option', { value: g, selected: g === range.grain }, g)));
    const apply = h('button', { type: 'submit', 'data-testid': 'range-apply' }, 'Show');
    return h('form', {
      class: 'controls',
      onsubmit: (ev) => {
        ev.preventDefault();
        go(tenant, view, qs({ from: from.value, to: to.value, grain: withGrain ? grain.value : undefined }));
      },
    },
    h('label', {}, 'From', from), h('label', {}, 'To (exclusive)', to),
    withGrain ? h('label', {}, 'Grain', grain) : null, apply);
  }
  async function costs(tenant, params) {
    const info = tenantInfo(tenant);
    const r = rangeOf(tenant, params);
    const base = `${T(tenant)}/costs`;
    const q = (o) => `${base}?${qs({ from: r.from, to: r.to, ...o })}`;
    const [total, byModel, byDept, modelTotals, deptTotals] = await Promise.all([
      api(q({ grain: 'total' })),
      api(q({ grain: r.grain, group_by: 'model' })),
      api(q({ grain: r.grain, group_by: 'department' })),
      api(q({ grain: 'total', group_by: 'model' })),
      api(q({ grain: 'total', group_by: 'department' })),
    ]);
    const totals = sumBy(total.rows, (x) => x.billing_currency, (x) => x.billing_cost);
    const cur = Object.keys(totals)[0] || info.billing_currency;
    const requests = total.rows.reduce((n, x) => n + x.requests, 0);
    const savings = sumBy(total.rows, (x) => x.billing_currency, (x) => x.billing_cache_savings);
    const node = h('div', { 'data-from': total.from, 'data-to': total.to },
      pageHead(tenant, `Cost over time · ${tenant}`, `${when(total.from)} → ${when(total.to)} (${total.time_zone}), by ${r.grain}`,
        rangeBar(tenant, 'costs', r, true)),
      h('div', { class: 'grid kpis' },
        kpi('Total in range', Object.keys(totals).length ? Object.entries(totals).map(([c, a]) => money(a, c, `costs-total-${c}`)) : [money('0', cur, `costs-total-${cur}`)],
          `${count(requests)} requests · source ${total.source}`, 'costs-total'),
        kpi('Cache savings', Object.entries(savings).map(([c, a]) => money(a, c, `costs-savings-${c}`)), 'what cached reads saved', 'costs-savings')),
      h('div', { class: 'grid two' },
        h('div', { class: 'card' }, h('h2', {}, `By model (${cur})`), costChart(byModel, 'model', info.time_zone, r.grain, cur),
          h('div', { class: 'scroll' }, totalsTable(modelTotals.rows, 'model', 'by-model'))),
        h('div', { class: 'card' }, h('h2', {}, `By department (${cur})`), costChart(byDept, 'department', info.time_zone, r.grain, cur),
          h('div', { class: 'scroll' }, totalsTable(deptTotals.rows, 'department', 'by-department')))));
    paintSwatchesLater(node);
    return node;
  }
  function paintSwatchesLater(node) {
    state.mounts.push(() => paintSwatches(node));
  }

  // ---------------------------------------------------------------- view: live
  async function live(tenant, params, seq) {
    const view = await api(`${T(tenant)}/live`);
    const node = liveNode(tenant, view);
    scheduleLive(tenant, seq);
    return node;
  }
  function scheduleLive(tenant, seq) {
    state.timer = setTimeout(async () => {
      if (seq !== state.seq) return;
      let node;
      try {
        node = liveNode(tenant, await api(`${T(tenant)}/live`));
      } catch (e) {
        if (seq !== state.seq) return;
        node = h('div', {}, pageHead(tenant, `Live windows · ${tenant}`), errorBox(e, tenant));
      }
      if (seq !== state.seq) return;
      $('#view').replaceChildren(node);
      scheduleLive(tenant, seq);
    }, LIVE_REFRESH_MS);
  }
  function liveNode(tenant, v) {
    const cur = v.billing_currency;
    const watermark = v.watermark_ms > 0 ? new Date(v.watermark_ms).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : 'none yet';
    const cards = h('div', { class: 'grid kpis' }, LIVE_WINDOWS.map(([w, label]) => kpi(`Last ${label}`,
      [money(v.totals[w] && v.totals[w].cost, cur, `live-${w}`)],
      `${count((v.totals[w] && v.totals[w].events) || 0)} events`, `live-card-${w}`)));
    const table = v.keys.length
      ? h('div', { class: 'scroll' }, h('table', { 'data-testid': 'live-keys' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Department'), h('th', {}, 'Model'),
          [...LIVE_WINDOWS.map(([w]) => w), 'day', 'month'].map((w) => h('th', { class: 'num' }, w)))),
        h('tbody', {}, v.keys.map((k) => h('tr', {},
          h('td', { class: 'name' }, k.department || '(none)'), h('td', { class: 'name' }, k.model),
          [...LIVE_WINDOWS.map(([w]) => w), 'day', 'month'].map((w) => h('td', { class: 'num' },
            money(k.windows[w] && k.windows[w].cost, cur))))))))
      : empty(`The aggregator holds no window of ${tenant} right now: no event in the last 24 hours.`);
    return h('div', {},
      pageHead(tenant, `Live windows · ${tenant}`,
        `Sliding windows up to the watermark ${watermark}, from the aggregator instance holding ${tenant}; refreshed every ${LIVE_REFRESH_MS / 1000} s`),
      cards,
      h('div', { class: 'card' }, h('h2', {}, `By department and model (${cur})`), table));
  }

  // ---------------------------------------------------------------- view: top
  async function top(tenant, params) {
    const r = rangeOf(tenant, params);
    const base = T(tenant);
    const range = { from: r.from, to: r.to };
    const [users, features, traces] = await Promise.all([
      api(`${base}/top?${qs({ ...range, dimension: 'user', n: 10 })}`),
      api(`${base}/top?${qs({ ...range, dimension: 'feature', n: 10 })}`),
      api(`${base}/top/traces?${qs({ ...range, n: 10 })}`),
    ]);
    const ranked = (rows, name, testid, label) => {
      if (!rows.length) return empty(`No ${label} in this range.`);
      const first = Number(rows[0].cost) || 1;
      return h('table', { 'data-testid': testid },
        h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, capital(label)), h('th', { class: 'num' }, 'Requests'), h('th', {}), h('th', { class: 'num' }, 'Cost'))),
        h('tbody', {}, rows.map((x, i) => h('tr', {},
          h('td', { class: 'muted' }, String(i + 1)), h('td', { class: 'name', title: name(x) }, name(x) || '(none)'),
          h('td', { class: 'num' }, count(x.requests)), h('td', {}, shareBar(Number(x.cost) / first)),
          h('td', { class: 'num' }, money(x.cost, x.billing_currency, `${testid}-${i}`))))));
    };
    const asCost = (rows, dim) => rows.map((x) => ({ ...x, cost: x.billing_cost, key: x.group[dim] }));
    return h('div', {},
      pageHead(tenant, `Top spenders · ${tenant}`, `${when(users.from)} → ${when(users.to)}`, rangeBar(tenant, 'top', r, false)),
      h('div', { class: 'grid three' },
        h('div', { class: 'card' }, h('h2', {}, 'Users'), ranked(asCost(users.rows, 'user'), (x) => x.key, 'top-users', 'user')),
        h('div', { class: 'card' }, h('h2', {}, 'Features'), ranked(asCost(features.rows, 'feature'), (x) => x.key, 'top-features', 'feature')),
        h('div', { class: 'card' }, h('h2', {}, 'Traces'), ranked(traces.rows.map((x) => ({ ...x, cost: x.billing_cost })), (x) => x.id, 'top-traces', 'trace'))));
  }

  // ---------------------------------------------------------------- view: anomalies
  async function anomalies(tenant, params) {
    const r = rangeOf(tenant, params);
    const a = await api(`${T(tenant)}/anomalies?${qs({ from: r.from, to: r.to })}`);
    const rules = (xs) => xs.map((x) => h('span', { class: 'badge kind' }, x.replaceAll('_', ' ')));
    const hours = a.hours.length
      ? h('table', { 'data-testid': 'anomaly-hours' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Hour'), h('th', { class: 'num' }, 'Cost'), h('th', { class: 'num' }, 'Trailing 24 h mean'), h('th', {}, 'Rules'))),
        h('tbody', {}, a.hours.map((x) => h('tr', {}, h('td', {}, when(x.hour_start)),
          h('td', { class: 'num' }, money(x.billing_cost, x.billing_currency)),
          h('td', { class: 'num' }, money(x.trailing_mean, x.billing_currency)), h('td', {}, rules(x.rules))))))
      : empty('No costly hour in this range.');
    const requests = a.requests.length
      ? h('table', { 'data-testid': 'anomaly-requests' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Request'), h('th', {}, 'Time'), h('th', {}, 'Model'), h('th', { class: 'num' }, 'Cost'), h('th', { class: 'num' }, 'p95'))),
        h('tbody', {}, a.requests.map((x) => h('tr', {}, h('td', { class: 'name', title: x.request_id }, x.request_id || x.event_id),
          h('td', {}, when(x.event_time)), h('td', { class: 'name' }, x.model),
          h('td', { class: 'num' }, money(x.billing_cost, x.billing_currency)), h('td', { class: 'num' }, money(x.p95, x.billing_currency))))))
      : empty('No request above twice the p95 in this range.');
    const jumps = a.token_jumps.length
      ? h('table', { 'data-testid': 'anomaly-jumps' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Day'), h('th', { class: 'num' }, 'p95 tokens / request'), h('th', { class: 'num' }, 'Day before'), h('th', { class: 'num' }, 'Requests'))),
        h('tbody', {}, a.token_jumps.map((x) => h('tr', {}, h('td', {}, x.day), h('td', { class: 'num' }, count(x.p95_tokens_per_request)),
          h('td', { class: 'num' }, count(x.previous_day_p95)), h('td', { class: 'num' }, count(x.requests))))))
      : empty('No jump in tokens per request in this range.');
    return h('div', { 'data-testid': 'anomalies' },
      pageHead(tenant, `Anomalies · ${tenant}`, `${when(a.from)} → ${when(a.to)} (${a.time_zone})`, rangeBar(tenant, 'anomalies', r, false)),
      h('div', { class: 'grid two' },
        h('div', { class: 'card' }, h('h2', {}, `Costly hours (${a.hours.length})`), h('p', { class: 'sub' }, a.method.hours), h('div', { class: 'scroll' }, hours)),
        h('div', { class: 'card' }, h('h2', {}, `Costly requests (${a.requests.length})`), h('p', { class: 'sub' }, a.method.requests), h('div', { class: 'scroll' }, requests))),
      h('div', { class: 'card section', style: null }, h('h2', {}, `Token jumps (${a.token_jumps.length})`), h('p', { class: 'sub' }, a.method.token_jumps), jumps));
  }

  // ---------------------------------------------------------------- view: controls
  async function controls(tenant) {
    const c = await api(`${T(tenant)}/controls?${qs({ n: 100 })}`);
    const body = c.events.length
      ? h('div', { class: 'scroll' }, h('table', { 'data-testid': 'controls' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Decided'), h('th', {}, 'Budget'), h('th', {}, 'Kind'), h('th', {}, 'Level'),
          h('th', { class: 'num' }, 'Spend'), h('th', { class: 'num' }, 'Limit'), h('th', { class: 'num' }, 'Use'), h('th', {}, 'Period'), h('th', {}, 'Reason'))),
        h('tbody', {}, c.events.map((e) => {
          const rec = e.record || {};
          const spend = e.kind === 'FORECAST' && rec.forecast_spend ? rec.forecast_spend : rec.spend;
          const ratio = Number(spend) / Number(rec.limit);
          return h('tr', { 'data-testid': 'control', 'data-control': e.control_id, 'data-budget': e.budget_id },
            h('td', {}, when(e.decided_at)), h('td', { class: 'name', title: e.budget_id }, e.budget_id),
            h('td', {}, h('span', { class: 'badge kind' }, e.kind), rec.shadow ? h('span', { class: 'badge shadow' }, 'shadow') : null),
            h('td', {}, e.previous_level ? [h('span', { class: `badge ${e.previous_level}` }, e.previous_level), ' → '] : null,
              h('span', { class: `badge ${e.level}` }, e.level)),
            h('td', { class: 'num' }, spend ? money(spend, rec.currency) : '—'),
            h('td', { class: 'num' }, rec.limit ? money(rec.limit, rec.currency) : '—'),
            h('td', { class: `num lvl-${band(ratio)}` }, pct(ratio)),
            h('td', { class: 'name', title: rec.period }, rec.period || ''),
            h('td', { class: 'name', title: rec.reason }, rec.reason || ''));
        }))))
      : empty(`No control record for ${tenant} yet: the aggregator writes one when a budget changes level, forecasts an overrun or sees a spike.`);
    return h('div', {},
      pageHead(tenant, `Budget control events · ${tenant}`, `The latest ${c.events.length} records, newest first (budget_control_history)`),
      h('div', { class: 'card' }, body));
  }

  // ---------------------------------------------------------------- view: invoice
  async function invoice(tenant, params) {
    const info = tenantInfo(tenant);
    const period = /^\d{4}-\d{2}$/.test(params.get('period') || '') ? params.get('period') : monthBounds(info.time_zone).month;
    const url = `${T(tenant)}/invoices/${encodeURIComponent(period)}`;
    const inv = await api(url);
    const month = h('input', { type: 'month', value: period, 'data-testid': 'invoice-period', 'aria-label': 'month' });
    const picker = h('form', {
      class: 'controls',
      onsubmit: (ev) => { ev.preventDefault(); go(tenant, 'invoice', qs({ period: month.value })); },
    }, h('label', {}, 'Month', month), h('button', { type: 'submit' }, 'Show'));
    const status = h('span', { class: 'sub', 'data-testid': 'csv-status' });
    const csv = h('button', {
      type: 'button', class: 'secondary', 'data-testid': 'csv-download',
      onclick: async () => {
        status.textContent = 'Downloading…';
        try {
          const text = await api(`${url}?format=csv`, { text: true });
          const blob = new Blob([text], { type: 'text/csv' });
          const a = h('a', { href: URL.createObjectURL(blob), download: `${inv.invoice_id}.csv` });
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(a.href), 10000);
          status.textContent = `Saved ${inv.invoice_id}.csv (${count(blob.size)} bytes)`;
          status.dataset.bytes = String(blob.size);
        } catch (e) {
          status.textContent = `CSV download failed: ${e.message}`;
          status.dataset.error = e.code;
        }
      },
    }, 'Download CSV');
    const lines = inv.lines.length
      ? h('table', { 'data-testid': 'invoice-lines' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Model'), h('th', { class: 'num' }, 'Requests'), h('th', { class: 'num' }, 'Tokens in / out'),
          h('th', { class: 'num' }, 'Amount'), h('th', { class: 'num' }, 'Billed'))),
        h('tbody', {}, inv.lines.map((l) => h('tr', {},
          h('td', { class: 'name', title: l.line_id }, l.model), h('td', { class: 'num' }, count(l.requests)),
          h('td', { class: 'num' }, `${count(l.tokens.input + l.tokens.cached_input)} / ${count(l.tokens.output)}`),
          h('td', { class: 'num' }, money(l.amount, l.currency)), h('td', { class: 'num' }, money(l.billing_amount, l.billing_currency))))))
      : empty(`No usage billed to ${tenant} in ${period}.`);
    const extra = [...inv.adjustments.map((l) => ({ name: `Adjustment ${l.period} · ${l.model}`, amount: l.billing_amount, cur: l.billing_currency })),
      ...inv.terms.map((t) => ({ name: `${t.kind} ${t.percent} %`, amount: t.billing_amount, cur: t.billing_currency }))];
    const totals = h('table', { 'data-testid': 'invoice-totals' },
      h('tbody', {},
        extra.map((x) => h('tr', {}, h('td', {}, x.name), h('td', { class: 'num' }, money(x.amount, x.cur)))),
        inv.totals.map((t) => h('tr', { class: 'total-line' }, h('td', {}, `Total ${t.billing_currency}`),
          h('td', { class: 'num' }, money(t.total, t.billing_currency, `invoice-total-${t.billing_currency}`))))));
    const subtotals = inv.subtotals_by_department.length
      ? h('table', {}, h('tbody', {}, inv.subtotals_by_department.map((s) => h('tr', {},
        h('td', { class: 'name' }, s.name || '(none)'), h('td', { class: 'num' }, count(s.requests)),
        h('td', { class: 'num' }, money(s.billing_amount, s.billing_currency))))))
      : empty('No department.');
    return h('div', { 'data-testid': 'invoice', 'data-invoice': inv.invoice_id },
      pageHead(tenant, `Invoice ${period} · ${tenant}`, `${inv.invoice_id} · ${inv.status}${inv.issued_at ? ` on ${when(inv.issued_at)}` : ' (draft as of now)'}`,
        h('div', { class: 'controls' }, picker, csv, status)),
      h('div', { class: 'card section inv-head' },
        h('div', {}, h('span', {}, 'Period'), `${when(inv.period_start)} → ${when(inv.period_end)}`),
        h('div', {}, h('span', {}, 'Time zone'), inv.time_zone),
        h('div', {}, h('span', {}, 'Status'), inv.status),
        h('div', {}, h('span', {}, 'Total'), inv.totals.map((t) => money(t.total, t.billing_currency)))),
      h('div', { class: 'grid two' },
        h('div', { class: 'card' }, h('h2', {}, 'Lines'), h('div', { class: 'scroll' }, lines)),
        h('div', {},
          h('div', { class: 'card section' }, h('h2', {}, 'Totals'), totals),
          h('div', { class: 'card' }, h('h2', {}, 'By department'), subtotals))));
  }

  const RENDER = { overview, costs, live, top, anomalies, controls, invoice };

  // ---------------------------------------------------------------- start
  function start() {
    $('#login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('#login-key').value.trim();
      if (key) login(key);
    });
    $('#logout').addEventListener('click', () => logout(''));
    $('#tenant-picker').addEventListener('change', (ev) => {
      const r = route();
      go(ev.target.value, r ? r.view : 'overview', r ? rangeParams(r.params) : null);
    });
    window.addEventListener('hashchange', () => { if (state.who) render(); });
    const key = sessionStorage.getItem(KEY);
    if (key) login(key);
    else showLogin('');
  }
  start();
})();
