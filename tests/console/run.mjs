// The console's browser tests: headless Chromium (Debian's, /usr/bin/chromium)
// driven by playwright-core against a running `twincert serve` with real
// certificates from the test Pebbles, signing in with API tokens and through
// a real OpenID Provider (idp.mjs). Started by tests/e2e/console_browser.rs:
//
//   node run.mjs CONFIG.json
//
// CONFIG (written by the Rust test):
//   base          the API/console base URL (https://127.0.0.1:PORT)
//   issuer        the IdP's issuer URL (idp.mjs), for the OIDC scenarios
//   chromium      the browser executable
//   trust_cert    PEM server certificate the browser accepts (console and
//                 IdP both serve it): only its key is trusted, by SPKI hash
//   tokens        {admin, operator, viewer}: API tokens of those roles
//   names         names issued on both CAs (every one `ready`)
//   swap_ca       the CA the emergency swap moves away from
//   expect_flip   how many names are active on swap_ca (the dry run's count)
//   screenshots   directory the screenshots are written to
//   only          optional list of scenario names to run
// Node's own HTTPS calls (the API checks) trust the harness CA through
// NODE_EXTRA_CA_CERTS, set by the Rust test.
//
// Prints one JSON document on stdout:
//   {"ok": bool, "scenarios": [{"name", "ok", "detail", "ms"}], "screenshots": [file, ...]}
// and exits 0 only when every scenario run passed. Progress goes to stderr.
// Pages are found by the data-testid hooks of docs/console.md.
import { X509Certificate, createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { load } from './modules.mjs';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const pw = await load('playwright-core');
const chromium = pw.chromium ?? pw.default.chromium;

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const tid = (id) => `[data-testid="${id}"]`;
const log = (...a) => console.error('run.mjs:', ...a);

mkdirSync(cfg.screenshots, { recursive: true });
const screenshots = [];

class Failure extends Error {}
function check(cond, what) {
  if (!cond) throw new Failure(what);
}

// --- The browser -------------------------------------------------------------

const spki = createHash('sha256')
  .update(new X509Certificate(readFileSync(cfg.trust_cert)).publicKey.export({ type: 'spki', format: 'der' }))
  .digest('base64');
const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  // As root Chromium's sandbox cannot start; the background-networking
  // flags keep it from calling out of the closed network (TESTENV.md).
  chromiumSandbox: false,
  args: [
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // Trust exactly the test server's key (console and IdP), nothing else:
    // no trust store is changed.
    `--ignore-certificate-errors-spki-list=${spki}`,
  ],
});
log(`Chromium ${browser.version()}`);

// Every answer of the console seen by any browser context: none may be 5xx.
const serverErrors = [];

async function newContext(viewport = DESKTOP, extra = {}) {
  const ctx = await browser.newContext({ viewport, locale: 'en-US', timezoneId: 'UTC', ...extra });
  ctx.setDefaultTimeout(15000);
  ctx.on('response', (r) => {
    if (r.status() >= 500 && r.url().startsWith(cfg.base)) {
      serverErrors.push(`${r.request().method()} ${r.url()} → ${r.status()}`);
    }
  });
  return ctx;
}

async function shot(page, file, fullPage = false) {
  await page.screenshot({ path: join(cfg.screenshots, file), fullPage });
  screenshots.push(file);
}

// --- Helpers -----------------------------------------------------------------

/** GET/POST the API with a bearer token; returns {status, body}. */
async function api(method, path, token, body) {
  const r = await fetch(`${cfg.base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: r.status, body: parsed };
}

async function nameView(name) {
  const r = await api('GET', `/v1/names/${encodeURIComponent(name)}`, cfg.tokens.admin);
  check(r.status === 200, `GET /v1/names/${name}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

const activeCa = (v) => v?.[v.active]?.ca;

/** Signs in on the token form; returns the page on /ui/. */
async function tokenSignIn(ctx, token, screenshot) {
  const page = await ctx.newPage();
  const r = await page.goto(`${cfg.base}/ui/login`);
  check(r && r.status() === 200, `GET /ui/login: ${r?.status()}`);
  if (screenshot) await shot(page, screenshot);
  await page.fill(tid('token-input'), token);
  await Promise.all([page.waitForURL(`${cfg.base}/ui/`), page.click(tid('token-submit'))]);
  return page;
}

/** Signs in through the IdP as `login`; returns the page where it ends. */
async function oidcSignIn(ctx, login, screenshot) {
  const page = await ctx.newPage();
  await page.goto(`${cfg.base}/ui/login`);
  await Promise.all([page.waitForURL((u) => u.href.startsWith(cfg.issuer)), page.click(tid('oidc-login'))]);
  // oidc-provider's login form (idp.mjs): any password.
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'correct horse battery staple');
  if (screenshot) await shot(page, screenshot);
  const callbacks = [];
  page.on('request', (r) => {
    if (r.url().startsWith(`${cfg.base}/ui/oidc/callback`)) callbacks.push(r.url());
  });
  const back = page.waitForResponse((r) => r.url().startsWith(`${cfg.base}/ui/oidc/callback`), { timeout: 20000 });
  await page.click('button[type=submit]');
  const cb = await back;
  await page.waitForLoadState();
  // docs/console.md: a successful callback answers 200 with a page that
  // moves on to /ui/ by itself (a 303 would arrive there without the
  // SameSite=Strict cookie, after the IdP's cross-site redirect).
  let movedOn = false;
  let callbackPage = null;
  if (cb.status() === 200) {
    // Read now: the body is gone once the page navigates on.
    callbackPage = await cb.text().catch((e) => `(body not readable: ${e.message.split('\n')[0]})`);
    movedOn = await page
      .waitForURL(`${cfg.base}/ui/`, { timeout: 10000 })
      .then(() => true)
      .catch(() => false);
  }
  return { page, callbackStatus: cb.status(), movedOn, callbackPage, callbackRequests: callbacks.length };
}

async function signedInAs(page) {
  const el = page.locator(tid('signed-in-as'));
  return (await el.count()) ? (await el.first().innerText()).trim() : null;
}

async function sessionCookie(ctx) {
  // The cookie's Path is /ui: ask for the cookies a /ui/ page gets.
  return (await ctx.cookies(`${cfg.base}/ui/`)).find((c) => c.name === 'twincert_session');
}

async function csrfOf(page) {
  const el = page.locator('input[name=csrf]');
  check((await el.count()) > 0, `no csrf field on ${page.url()}`);
  return el.first().inputValue();
}

/**
 * Submits a form built in the page (as a forged or tampered form would be):
 * a real browser POST with the page's cookies and Origin. Returns the POST's
 * response status and the text of the page it ends on.
 */
async function postForm(page, action, fields) {
  const url = `${cfg.base}${action}`;
  const resp = page.waitForResponse((r) => r.url() === url && r.request().method() === 'POST');
  await page.evaluate(
    ({ url, fields }) => {
      const f = document.createElement('form');
      f.method = 'post';
      f.action = url;
      for (const [k, v] of Object.entries(fields)) {
        const i = document.createElement('input');
        i.type = 'hidden';
        i.name = k;
        i.value = v;
        f.appendChild(i);
      }
      document.body.appendChild(f);
      f.submit();
    },
    { url, fields },
  );
  const r = await resp;
  await page.waitForLoadState();
  return { status: r.status(), text: await page.locator('body').innerText() };
}

async function errorText(page) {
  const el = page.locator(tid('error'));
  return (await el.count()) ? (await el.first().innerText()).trim() : null;
}

const is4xx = (s) => s >= 400 && s < 500;

// --- Scenarios ---------------------------------------------------------------

const [firstName] = cfg.names;
const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario('security_headers', async () => {
  const r = await fetch(`${cfg.base}/ui/login`);
  check(r.status === 200, `GET /ui/login: ${r.status}`);
  const csp = r.headers.get('content-security-policy') ?? '';
  check(csp, 'no Content-Security-Policy');
  const scriptSrc = (csp.match(/(?:^|;)\s*script-src([^;]*)/)?.[1] ?? csp.match(/(?:^|;)\s*default-src([^;]*)/)?.[1] ?? '').trim();
  check(scriptSrc && !scriptSrc.includes("'unsafe-inline'"), `CSP allows inline script or sets no script-src: ${csp}`);
  check(/frame-ancestors\s+'none'/.test(csp), `CSP lacks frame-ancestors 'none': ${csp}`);
  check(r.headers.get('referrer-policy') === 'no-referrer', `Referrer-Policy: ${r.headers.get('referrer-policy')}`);
  return `CSP: ${csp}`;
});

scenario('token_sign_in', async () => {
  // A wrong token: an error, no session.
  const bad = await newContext();
  try {
    const page = await bad.newPage();
    await page.goto(`${cfg.base}/ui/login`);
    await page.fill(tid('token-input'), 'not-a-token-0000000000000000');
    const resp = page.waitForResponse((r) => r.url() === `${cfg.base}/ui/login/token`);
    await page.click(tid('token-submit'));
    const r = await resp;
    await page.waitForLoadState();
    check(is4xx(r.status()), `wrong token: POST /ui/login/token answered ${r.status()}, want 4xx`);
    check(await errorText(page), `wrong token: no error shown on ${page.url()}`);
    check(!(await sessionCookie(bad)), 'wrong token: a session cookie was set');
  } finally {
    await bad.close();
  }

  const ctx = await newContext();
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.operator, 'login.png');
    const who = await signedInAs(page);
    check(who && /operator/i.test(who), `signed-in-as "${who}", want the operator role`);
    const c = await sessionCookie(ctx);
    check(c, 'no twincert_session cookie');
    check(c.httpOnly, 'session cookie not HttpOnly');
    check(c.secure || !cfg.base.startsWith('https:'), 'session cookie not Secure over HTTPS');
    check(c.sameSite === 'Strict', `session cookie SameSite=${c.sameSite}`);
    check(c.path === '/ui', `session cookie Path=${c.path}`);
    check(!c.value.includes(cfg.tokens.operator), 'the session cookie carries the API token');
    return `signed in as "${who}"`;
  } finally {
    await ctx.close();
  }
});

scenario('keyboard_sign_in', async () => {
  // Keyboard only: Tab to the token field, type, Enter.
  const ctx = await newContext();
  try {
    const page = await ctx.newPage();
    await page.goto(`${cfg.base}/ui/login`);
    let focused = null;
    for (let i = 0; i < 15 && focused !== 'token-input'; i++) {
      await page.keyboard.press('Tab');
      focused = await page.evaluate(() => document.activeElement?.getAttribute('data-testid'));
    }
    check(focused === 'token-input', 'Tab never reaches the token field');
    await page.keyboard.type(cfg.tokens.viewer);
    await Promise.all([page.waitForURL(`${cfg.base}/ui/`), page.keyboard.press('Enter')]);
    const who = await signedInAs(page);
    check(who && /viewer/i.test(who), `signed-in-as "${who}" after a keyboard sign-in`);
    // The sign-out button is reachable by Tab too.
    let onSignOut = false;
    for (let i = 0; i < 40 && !onSignOut; i++) {
      await page.keyboard.press('Tab');
      onSignOut = await page.evaluate(() => document.activeElement?.getAttribute('data-testid') === 'sign-out');
    }
    check(onSignOut, 'Tab never reaches the sign-out button');
    return 'token field and sign-out reached by Tab; signed in with Enter';
  } finally {
    await ctx.close();
  }
});

scenario('without_javascript', async () => {
  // Reading works with JavaScript off: sign in, the names, a name.
  const ctx = await newContext(DESKTOP, { javaScriptEnabled: false });
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.viewer);
    let r = await page.goto(`${cfg.base}/ui/names`);
    check(r.status() === 200, `/ui/names without JavaScript: ${r.status()}`);
    check((await page.locator(tid('name-row')).count()) >= cfg.names.length, 'no name rows without JavaScript');
    r = await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    check(r.status() === 200, `name page without JavaScript: ${r.status()}`);
    check(await page.locator(tid('slot-primary')).count(), 'no primary slot without JavaScript');
    return 'sign-in, names and a name read with JavaScript off';
  } finally {
    await ctx.close();
  }
});

scenario('pages', async () => {
  const ctx = await newContext();
  const notes = [];
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.admin);
    for (const id of ['overview-states', 'overview-posture', 'overview-ca-mix', 'overview-expiry', 'overview-alerts']) {
      check(await page.locator(tid(id)).count(), `overview: no ${id}`);
    }
    await shot(page, 'overview.png');

    let r = await page.goto(`${cfg.base}/ui/names`);
    check(r.status() === 200, `/ui/names: ${r.status()}`);
    check(await page.locator(tid('names-table')).count(), 'names: no names-table');
    const rows = await page.locator(`${tid('name-row')}`).evaluateAll((els) => els.map((e) => e.dataset.name));
    for (const n of cfg.names) check(rows.includes(n), `names: no row for ${n} (rows: ${rows.join(', ')})`);
    await shot(page, 'names.png');

    // Search narrows the list.
    r = await page.goto(`${cfg.base}/ui/names?q=${encodeURIComponent(firstName)}`);
    check(r.status() === 200, `/ui/names?q=: ${r.status()}`);
    const found = await page.locator(tid('name-row')).evaluateAll((els) => els.map((e) => e.dataset.name));
    check(found.includes(firstName) && found.length < cfg.names.length, `search ${firstName}: ${found.join(', ')}`);

    r = await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    check(r.status() === 200, `/ui/names/${firstName}: ${r.status()}`);
    const v = await nameView(firstName);
    for (const slot of ['primary', 'backup']) {
      const text = await page.locator(tid(`slot-${slot}`)).innerText();
      check(text.includes(v[slot].ca), `slot-${slot} does not show its CA ${v[slot].ca}: ${text}`);
      const serial = String(v[slot].serial ?? '');
      check(!serial || text.toLowerCase().includes(serial.toLowerCase()), `slot-${slot} does not show serial ${serial}`);
    }
    check(await page.locator(tid('swap-submit')).count(), 'name detail: an admin sees no swap-submit');
    check(!/BEGIN [A-Z ]*PRIVATE KEY/.test(await page.content()), 'a private key is on the name page');
    await shot(page, 'name.png', true);

    for (const p of ['emergency', 'cas', 'alerts', 'incidents', 'operations', 'audit', 'tokens']) {
      r = await page.goto(`${cfg.base}/ui/${p}`);
      if (r.status() !== 200) {
        notes.push(`/ui/${p}: ${r.status()}`);
        continue;
      }
      check(await signedInAs(page), `/ui/${p}: no signed-in-as`);
      await shot(page, `${p}.png`);
    }
    check(!notes.length, notes.join('; '));

    // The audit log filters by actor/action/name.
    r = await page.goto(`${cfg.base}/ui/audit?name=${encodeURIComponent(firstName)}`);
    check(r.status() === 200, `/ui/audit?name=: ${r.status()}`);

    // Phone width: the same pages, readable (no horizontal scrolling of the page).
    const phone = await ctx.newPage();
    await phone.setViewportSize(PHONE);
    for (const [path, file] of [
      ['/ui/', 'overview-phone.png'],
      [`/ui/names/${encodeURIComponent(firstName)}`, 'name-phone.png'],
    ]) {
      r = await phone.goto(`${cfg.base}${path}`);
      check(r.status() === 200, `${path} (phone): ${r.status()}`);
      const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      check(overflow <= 1, `${path} at 390 px scrolls sideways by ${overflow} px`);
      await shot(phone, file);
    }
    return `${screenshots.length} screenshots so far`;
  } finally {
    await ctx.close();
  }
});

scenario('oidc_operator', async () => {
  check(cfg.issuer, 'no issuer configured');
  const ctx = await newContext();
  try {
    const { page, callbackStatus, movedOn, callbackPage, callbackRequests } = await oidcSignIn(
      ctx,
      'alice',
      'idp-login.png',
    );
    check(callbackStatus === 200, `callback answered ${callbackStatus}: ${await errorText(page)}`);
    const stuck = movedOn ? null : `${page.url()}: ${await errorText(page)}`;
    // The session exists whether or not the page moved on by itself.
    if (!movedOn) await page.goto(`${cfg.base}/ui/`);
    const who = await signedInAs(page);
    check(who && /alice/.test(who) && /operator/i.test(who), `signed-in-as "${who}", want alice as operator`);
    await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    check(await page.locator(tid('swap-submit')).count(), 'alice (operator) sees no swap-submit');
    // The person is the actor in the audit log (the sign-in is audited).
    const audit = await api('GET', '/v1/events?limit=50', cfg.tokens.admin);
    check(audit.status === 200, `GET /v1/events: ${audit.status}`);
    check(
      JSON.stringify(audit.body).includes('alice@example.test'),
      `no audit event with actor alice@example.test: ${JSON.stringify(audit.body).slice(0, 300)}`,
    );
    callbackMovedOn = movedOn
      ? { ok: true }
      : {
          ok: false,
          why:
            `the callback's page did not move on to /ui/ by itself (the callback URL was requested ` +
            `${callbackRequests} times); the browser ended on ${stuck} ` +
            `(its meta refresh: ${callbackPage?.match(/<meta[^>]*refresh[^>]*>/i)?.[0] ?? callbackPage?.slice(0, 200)})`,
        };
    return `signed in as "${who}"${movedOn ? '' : ' (after opening /ui/ by hand: see oidc_callback_moves_on)'}`;
  } finally {
    await ctx.close();
  }
});

// Whether the page the callback answers with took the browser on to /ui/
// by itself, as a person's browser must (set by oidc_operator).
let callbackMovedOn = null;

scenario('oidc_callback_moves_on', async () => {
  check(callbackMovedOn, 'oidc_operator did not get as far as the callback');
  check(callbackMovedOn.ok, callbackMovedOn.why);
  return 'the callback page moved on to /ui/ by itself';
});

scenario('oidc_unmapped_refused', async () => {
  check(cfg.issuer, 'no issuer configured');
  const ctx = await newContext();
  try {
    const { page, callbackStatus } = await oidcSignIn(ctx, 'mallory');
    check(callbackStatus !== 303 || page.url() !== `${cfg.base}/ui/`, 'mallory (no mapped group) was signed in');
    check(callbackStatus < 500, `callback answered ${callbackStatus}`);
    check(!(await signedInAs(page)), `mallory is signed in: ${await signedInAs(page)}`);
    const err = await errorText(page);
    check(err, `no error shown for a person without a twincert role (${page.url()}, ${callbackStatus})`);
    const r = await page.goto(`${cfg.base}/ui/`);
    check(page.url().startsWith(`${cfg.base}/ui/login`) || is4xx(r.status()), `mallory reaches ${page.url()}`);
    return `refused (${callbackStatus}): ${err}`;
  } finally {
    await ctx.close();
  }
});

scenario('viewer_refused', async () => {
  const before = await nameView(firstName);
  const ctx = await newContext();
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.viewer);
    const who = await signedInAs(page);
    check(who && /viewer/i.test(who), `signed-in-as "${who}", want viewer`);
    const r = await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    check(r.status() === 200, `viewer: name page ${r.status()}`);
    check((await page.locator(tid('swap-submit')).count()) === 0, 'a viewer sees the swap button');
    check((await page.locator(tid('swap-form')).count()) === 0, 'a viewer sees the swap form');
    check(!/BEGIN [A-Z ]*PRIVATE KEY/.test(await page.content()), 'a viewer sees a private key');
    await shot(page, 'name-viewer.png');
    // Forged: the swap form posted anyway, with the viewer's own valid CSRF token.
    const csrf = await csrfOf(page);
    const out = await postForm(page, `/ui/names/${encodeURIComponent(firstName)}/swap`, {
      csrf,
      reason: 'forged by a viewer',
    });
    check(out.status === 403, `viewer's forged swap answered ${out.status}, want 403`);
    check(/operator/i.test(out.text), `the refusal does not name the role needed: ${out.text.slice(0, 300)}`);
    const after = await nameView(firstName);
    check(after.active === before.active, `the viewer's swap happened: active ${before.active} → ${after.active}`);
    return `forged swap refused: ${out.text.replace(/\s+/g, ' ').slice(0, 160)}`;
  } finally {
    await ctx.close();
  }
});

scenario('oidc_viewer', async () => {
  check(cfg.issuer, 'no issuer configured');
  const ctx = await newContext();
  try {
    const { page, movedOn } = await oidcSignIn(ctx, 'victor');
    if (!movedOn) await page.goto(`${cfg.base}/ui/`);
    const who = await signedInAs(page);
    check(who && /victor/.test(who) && /viewer/i.test(who), `signed-in-as "${who}", want victor as viewer`);
    await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    check((await page.locator(tid('swap-submit')).count()) === 0, 'victor (viewer) sees the swap button');
    return `signed in as "${who}"`;
  } finally {
    await ctx.close();
  }
});

scenario('csrf_refused', async () => {
  const before = await nameView(firstName);
  const ctx = await newContext();
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.operator);
    await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    const action = `/ui/names/${encodeURIComponent(firstName)}/swap`;
    const none = await postForm(page, action, { reason: 'no csrf' });
    check(none.status === 403, `a swap without csrf answered ${none.status}, want 403`);
    await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    const wrong = await postForm(page, action, { reason: 'wrong csrf', csrf: 'A'.repeat(43) });
    check(wrong.status === 403, `a swap with a wrong csrf answered ${wrong.status}, want 403`);
    // A token from another session does not do either.
    const other = await newContext();
    const otherPage = await tokenSignIn(other, cfg.tokens.operator);
    const foreign = await csrfOf(otherPage);
    await other.close();
    await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    const cross = await postForm(page, action, { reason: 'foreign csrf', csrf: foreign });
    check(cross.status === 403, `a swap with another session's csrf answered ${cross.status}, want 403`);
    const after = await nameView(firstName);
    check(after.active === before.active, `a CSRF-less swap happened: ${before.active} → ${after.active}`);
    return 'missing, wrong and foreign csrf refused with 403';
  } finally {
    await ctx.close();
  }
});

scenario('bad_input', async () => {
  const ctx = await newContext();
  const notes = [];
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.operator);
    const before = await nameView(firstName);

    // Missing reason: the browser's own `required` check removed, as a
    // hand-made request would be.
    await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    await page.locator(`${tid('swap-reason')}`).evaluate((e) => e.removeAttribute('required'));
    await page.fill(tid('swap-reason'), '');
    const resp = page.waitForResponse((r) => r.request().method() === 'POST');
    await page.click(tid('swap-submit'));
    const r = await resp;
    await page.waitForLoadState();
    check(is4xx(r.status()), `swap without a reason answered ${r.status()}, want 4xx`);
    const err = await errorText(page);
    check(err && /reason/i.test(err), `swap without a reason: error "${err}" does not name the field`);
    const apiSame = await api('POST', `/v1/names/${encodeURIComponent(firstName)}/swap`, cfg.tokens.operator, { reason: '' });
    check(is4xx(apiSame.status), `API swap with an empty reason answered ${apiSame.status}`);
    if (apiSame.body?.detail && !err.includes(apiSame.body.detail)) {
      notes.push(`UI says "${err}", API says "${apiSame.body.detail}"`);
    }
    await shot(page, 'error-missing-reason.png');
    check((await nameView(firstName)).active === before.active, 'a swap without a reason happened');

    // A bad name.
    const bad = 'bad_name!.example.test';
    const rb = await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(bad)}`);
    check(is4xx(rb.status()), `/ui/names/${bad} answered ${rb.status()}, want 4xx`);
    const errB = await errorText(page);
    check(errB, `/ui/names/${bad}: no error shown`);
    const apiB = await api('GET', `/v1/names/${encodeURIComponent(bad)}`, cfg.tokens.operator);
    check(rb.status() === apiB.status, `/ui/names/${bad} answered ${rb.status()}, the API ${apiB.status}`);
    if (apiB.body?.detail && !errB.includes(apiB.body.detail)) {
      notes.push(`bad name: UI says "${errB}", API says "${apiB.body.detail}"`);
    }

    // An unknown name.
    const ru = await page.goto(`${cfg.base}/ui/names/nobody-here.example.test`);
    check(ru.status() === 404, `/ui/names/<unknown> answered ${ru.status()}, want 404`);
    check(await errorText(page), 'unknown name: no error shown');

    // Report compromise with a confirmation that is not the name.
    await page.goto(`${cfg.base}/ui/names/${encodeURIComponent(firstName)}`);
    const form = page.locator(tid('compromise-form'));
    const reason = form.locator('input[name=reason]:not([type=hidden])');
    if (await reason.count()) await reason.fill('browser test: wrong confirmation');
    await page.fill(tid('compromise-confirm'), 'not-the-name.example.test');
    const compResp = page.waitForResponse((r) => r.request().method() === 'POST');
    await page.click(tid('compromise-submit'));
    const comp = await compResp;
    await page.waitForLoadState();
    check(is4xx(comp.status()), `compromise with a wrong confirmation answered ${comp.status()}, want 4xx`);
    const errC = await errorText(page);
    check(errC && /confirm/i.test(errC), `compromise with a wrong confirmation: error "${errC}" does not name the confirmation`);
    const after = await nameView(firstName);
    check(
      after.primary.serial === before.primary.serial && after.backup.serial === before.backup.serial,
      'a compromise without a typed confirmation changed the certificates',
    );

    // A forged session cookie (a made-up value, or a role written into it)
    // is no session.
    const forged = await newContext();
    await forged.addCookies([
      { name: 'twincert_session', value: 'admin', url: `${cfg.base}/ui/` },
    ]);
    const fp = await forged.newPage();
    const rf = await fp.goto(`${cfg.base}/ui/`);
    check(
      fp.url().startsWith(`${cfg.base}/ui/login`) || is4xx(rf.status()),
      `a forged cookie reached ${fp.url()} (${rf.status()})`,
    );
    check(!(await signedInAs(fp)), 'a forged cookie is signed in');
    await forged.close();
    check(!notes.length, notes.join('; '));
    return 'missing reason, bad name, unknown name, wrong confirmation, forged cookie: 4xx with the error';
  } finally {
    await ctx.close();
  }
});

scenario('emergency_swap', async () => {
  const before = await Promise.all(cfg.names.map(nameView));
  const onCa = before.filter((v) => activeCa(v) === cfg.swap_ca);
  check(onCa.length === cfg.expect_flip, `${onCa.length} names active on ${cfg.swap_ca}, config says ${cfg.expect_flip}`);
  const ctx = await newContext();
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.operator);
    const dryRun = async () => {
      await page.goto(`${cfg.base}/ui/emergency`);
      await page.selectOption(tid('scope-ca'), cfg.swap_ca);
      const reason = page.locator(tid('scope-reason'));
      if (await reason.count()) await reason.fill('browser test: CA-wide swap');
      await Promise.all([page.waitForLoadState(), page.click(tid('dry-run-submit'))]);
      await page.locator(tid('dry-run-flip-count')).waitFor();
      return Number((await page.locator(tid('dry-run-flip-count')).innerText()).trim());
    };
    const flips = await dryRun();
    check(flips === cfg.expect_flip, `dry run says ${flips} flip, want ${cfg.expect_flip}`);
    check(await page.locator(tid('dry-run-skipped')).count(), 'dry run: no skipped count');
    await shot(page, 'emergency-dry-run.png');
    // The dry run changed nothing.
    for (const v of onCa) check(activeCa(await nameView(v.name)) === cfg.swap_ca, `${v.name} moved on a dry run`);

    // A wrong confirmation is refused and changes nothing.
    // A visible reason on the confirmation form, if it asks for one there.
    const reasonC = page.locator('form:has([data-testid="confirm-submit"]) input[name=reason]:not([type=hidden])');
    if (await reasonC.count()) await reasonC.fill('browser test: CA-wide swap');
    await page.fill(tid('confirm-input'), 'not-the-ca');
    const wrongResp = page.waitForResponse((r) => r.request().method() === 'POST');
    await page.click(tid('confirm-submit'));
    const wr = await wrongResp;
    await page.waitForLoadState();
    check(is4xx(wr.status()), `a wrong confirmation answered ${wr.status()}, want 4xx`);
    check(await errorText(page), 'a wrong confirmation shows no error');
    for (const v of onCa) check(activeCa(await nameView(v.name)) === cfg.swap_ca, `${v.name} moved on a wrong confirmation`);

    // Confirmed by typing the CA id: the operation page follows it to done.
    await dryRun();
    if (await reasonC.count()) await reasonC.fill('browser test: CA-wide swap');
    await page.fill(tid('confirm-input'), cfg.swap_ca);
    await Promise.all([page.waitForURL(/\/ui\/operations\//, { timeout: 30000 }), page.click(tid('confirm-submit'))]);
    // The page refreshes itself (meta refresh, no script) until done: no
    // reload from here, only reads between its refreshes.
    const progress = page.locator(tid('operation-progress'));
    const deadline = Date.now() + 240000;
    const seen = new Set();
    let state = null;
    for (;;) {
      state = await progress.getAttribute('data-state', { timeout: 5000 }).catch(() => null);
      if (state) seen.add(state);
      if (state === 'done') break;
      check(state === null || state === 'running', `operation state ${state}`);
      check(Date.now() < deadline, `operation still ${state} after 240 s (states seen: ${[...seen].join(', ')})`);
      await page.waitForTimeout(300);
    }
    await page.waitForLoadState();
    await shot(page, 'operation-done.png');

    // The API agrees: every name that was active on the CA now is not.
    for (const v of onCa) {
      const now = await nameView(v.name);
      check(activeCa(now) !== cfg.swap_ca && now.active !== v.active, `${v.name} after the swap: ${JSON.stringify(now.active)} on ${activeCa(now)}`);
    }
    const ops = await api('GET', '/v1/operations', cfg.tokens.admin);
    return `dry run ${flips}, operation done; API: ${onCa.length} names moved off ${cfg.swap_ca} (${ops.status})`;
  } finally {
    await ctx.close();
  }
});

scenario('emergency_distrust', async () => {
  // After emergency_swap: distrust the CA swapped away from. Names still
  // active on it flip; every slot it holds is re-provisioned elsewhere.
  const ca = cfg.swap_ca;
  const before = await Promise.all(cfg.names.map(nameView));
  const onCa = before.filter((v) => activeCa(v) === ca);
  const holding = before.filter((v) => v.primary.ca === ca || v.backup.ca === ca);
  const cas0 = await api('GET', '/v1/cas', cfg.tokens.admin);
  check(!cas0.body.items.find((c) => c.id === ca).distrusted, `${ca} is distrusted before the scenario`);

  // An operator sees no distrust form; a forged one is refused by the
  // API's rule (admin), and changes nothing.
  const opCtx = await newContext();
  try {
    const op = await tokenSignIn(opCtx, cfg.tokens.operator);
    await op.goto(`${cfg.base}/ui/emergency`);
    check(await op.locator(tid('rekey-form')).count(), 'an operator sees no re-key form');
    check((await op.locator(tid('distrust-form')).count()) === 0, 'an operator sees the distrust form');
    const out = await postForm(op, '/ui/emergency/distrust', { csrf: await csrfOf(op), ca, reason: 'forged', confirm: ca });
    check(out.status === 403, `an operator's forged distrust answered ${out.status}, want 403`);
    check(/admin/.test(out.text), `the refusal does not name the role needed: ${out.text.slice(0, 300)}`);
  } finally {
    await opCtx.close();
  }

  const ctx = await newContext();
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.admin);
    const dryRun = async () => {
      await page.goto(`${cfg.base}/ui/emergency`);
      await page.selectOption(tid('distrust-ca'), ca);
      await page.fill(tid('distrust-reason'), 'browser test: CA distrust');
      await Promise.all([page.waitForLoadState(), page.click(tid('distrust-dry-run-submit'))]);
      await page.locator(tid('distrust-flip-count')).waitFor();
      return {
        flips: Number((await page.locator(tid('distrust-flip-count')).innerText()).trim()),
        reprovision: Number((await page.locator(tid('distrust-reprovision')).innerText()).trim()),
      };
    };
    const dry = await dryRun();
    check(dry.flips === onCa.length, `distrust dry run says ${dry.flips} flip, want ${onCa.length}`);
    check(dry.reprovision === holding.length, `distrust dry run re-provisions ${dry.reprovision}, want ${holding.length}`);
    await shot(page, 'distrust-dry-run.png');

    // A wrong confirmation: refused, nothing changed.
    await page.fill(tid('distrust-confirm-input'), `${ca}-not`);
    const wrongResp = page.waitForResponse((r) => r.request().method() === 'POST');
    await page.click(tid('distrust-confirm-submit'));
    const wr = await wrongResp;
    await page.waitForLoadState();
    check(is4xx(wr.status()), `a wrong confirmation answered ${wr.status()}, want 4xx`);
    check(/confirm/.test((await errorText(page)) ?? ''), `a wrong confirmation shows no error naming it: ${await errorText(page)}`);
    const cas1 = await api('GET', '/v1/cas', cfg.tokens.admin);
    check(!cas1.body.items.find((c) => c.id === ca).distrusted, `${ca} distrusted on a wrong confirmation`);

    // Typed CA id: the operation page follows the re-provisioning to done.
    await dryRun();
    await page.fill(tid('distrust-confirm-input'), ca);
    await Promise.all([page.waitForURL(/\/ui\/operations\//, { timeout: 30000 }), page.click(tid('distrust-confirm-submit'))]);
    const progress = page.locator(tid('operation-progress'));
    const deadline = Date.now() + 240000;
    let state = null;
    for (;;) {
      state = await progress.getAttribute('data-state', { timeout: 5000 }).catch(() => null);
      if (state === 'done') break;
      check(state === null || state === 'running', `operation state ${state}`);
      check(Date.now() < deadline, `distrust operation still ${state} after 240 s`);
      await page.waitForTimeout(300);
    }

    // The API agrees: distrusted, and no slot is on it any more.
    const cas2 = await api('GET', '/v1/cas', cfg.tokens.admin);
    check(cas2.body.items.find((c) => c.id === ca).distrusted === true, `${ca} is not distrusted: ${JSON.stringify(cas2.body)}`);
    for (const v of holding) {
      const now = await nameView(v.name);
      check(now.primary.ca !== ca && now.backup.ca !== ca, `${v.name} still holds a slot on ${ca}: ${now.primary.ca}/${now.backup.ca}`);
    }
    return `dry run: ${dry.flips} flip, ${dry.reprovision} re-provisioned; operation done; ${ca} distrusted`;
  } finally {
    await ctx.close();
  }
});

scenario('tokens', async () => {
  const name = 'browser-made';
  const ctx = await newContext();
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.admin);
    await page.goto(`${cfg.base}/ui/tokens`);
    await page.fill(tid('token-name'), name);
    await page.selectOption(tid('token-role'), 'viewer');
    await page.selectOption(tid('token-expiry'), '86400');
    await Promise.all([page.waitForLoadState(), page.click(tid('token-create-submit'))]);
    const secret = (await page.locator(tid('token-secret')).innerText()).trim();
    check(/^tc_/.test(secret), `no token secret shown: "${secret}"`);
    const works = await api('GET', '/v1/names', secret);
    check(works.status === 200, `the new token: GET /v1/names answered ${works.status}`);

    // Never shown again.
    await page.goto(`${cfg.base}/ui/tokens`);
    check(!(await page.content()).includes(secret), 'the secret is on the tokens page again');
    const row = page.locator(`${tid('token-row')}[data-name="${name}"]`);
    check(await row.count(), `no row for ${name}`);

    // Delete: a wrong confirmation deletes nothing; the name does.
    await row.locator(tid('token-delete-confirm')).fill('not-it');
    const wrongResp = page.waitForResponse((r) => r.request().method() === 'POST');
    await row.locator(tid('token-delete-submit')).click();
    check(is4xx((await wrongResp).status()), 'a wrong delete confirmation was not refused');
    await page.waitForLoadState();
    check((await api('GET', '/v1/names', secret)).status === 200, 'the token stopped working on a wrong confirmation');
    const row2 = page.locator(`${tid('token-row')}[data-name="${name}"]`);
    await row2.locator(tid('token-delete-confirm')).fill(name);
    await Promise.all([page.waitForLoadState(), row2.locator(tid('token-delete-submit')).click()]);
    await page.locator(tid('token-deleted')).waitFor();
    const gone = await api('GET', '/v1/names', secret);
    check(gone.status === 401, `the deleted token: GET /v1/names answered ${gone.status}, want 401`);
    check((await page.locator(`${tid('token-row')}[data-name="${name}"]`).count()) === 0, 'the deleted token is still listed');
    return 'created (secret shown once, works on /v1), deleted (401 on /v1)';
  } finally {
    await ctx.close();
  }
});

scenario('sign_out', async () => {
  const ctx = await newContext();
  try {
    const page = await tokenSignIn(ctx, cfg.tokens.operator);
    const old = await sessionCookie(ctx);
    check(old, 'no session cookie');
    const csrf = await csrfOf(page);
    await Promise.all([page.waitForURL(/\/ui\/login/), page.click(tid('sign-out'))]);
    check(!(await signedInAs(page)), 'still signed in after sign-out');
    // The old cookie, replayed in a fresh browser, is no session any more.
    const replay = await newContext();
    await replay.addCookies([old]);
    const rp = await replay.newPage();
    const r = await rp.goto(`${cfg.base}/ui/`);
    check(rp.url().startsWith(`${cfg.base}/ui/login`) || is4xx(r.status()), `the old cookie still reaches ${rp.url()}`);
    check(!(await signedInAs(rp)), 'the old cookie is still signed in');
    // Nor can it post (with the old session's CSRF token).
    await rp.goto(`${cfg.base}/ui/login`);
    const out = await postForm(rp, `/ui/names/${encodeURIComponent(firstName)}/check`, { csrf });
    check(out.status !== 200 && out.status < 500 && !(await signedInAs(rp)), `the old cookie posted: ${out.status}`);
    await replay.close();
    return 'signed out; the old cookie is refused';
  } finally {
    await ctx.close();
  }
});

scenario('no_server_errors', async () => {
  // Last: every answer the browsers got in the scenarios above.
  check(!serverErrors.length, `5xx answers: ${serverErrors.join('; ')}`);
  return 'no 5xx in any scenario';
});

// --- Run ---------------------------------------------------------------------

const results = [];
for (const s of scenarios) {
  if (cfg.only && !cfg.only.includes(s.name)) continue;
  const t0 = Date.now();
  try {
    const detail = await s.fn();
    results.push({ name: s.name, ok: true, detail: detail ?? '', ms: Date.now() - t0 });
    log(`ok   ${s.name} (${Date.now() - t0} ms): ${detail ?? ''}`);
  } catch (e) {
    const detail = e instanceof Failure ? e.message : `${e.name}: ${e.message}`.split('\n').slice(0, 6).join(' | ');
    results.push({ name: s.name, ok: false, detail, ms: Date.now() - t0 });
    log(`FAIL ${s.name} (${Date.now() - t0} ms): ${detail}`);
  }
}
await browser.close();

const ok = results.length > 0 && results.every((r) => r.ok);
process.stdout.write(`${JSON.stringify({ ok, scenarios: results, screenshots }, null, 2)}\n`);
process.exit(ok ? 0 : 1);
