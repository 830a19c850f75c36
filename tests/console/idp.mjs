// A real OpenID Provider for the console tests: oidc-provider (the certified
// Node.js implementation) on loopback HTTPS.
//
//   node idp.mjs --port P --cert server.pem --key server.key \
//       --redirect https://127.0.0.1:API/ui/oidc/callback --secret S
//
// One confidential client `twincert` (client_secret_basic or _post, the
// authorization code flow only, PKCE S256 required) whose only redirect URL
// is --redirect. Sign-in is oidc-provider's own login form (any password;
// the login picks the account below); consent is granted for this first-party
// client without a page. Prints one JSON line {"issuer": ...} on stdout when
// it listens; logs each authorization, token and userinfo request on stderr.
//
// Accounts (the `groups` claim is in the ID token and in userinfo, asked for
// by the `openid` or the `groups` scope):
//   alice   twincert-operators   → operator (with the console's role_map)
//   victor  twincert-viewers     → viewer
//   ada     twincert-admins      → admin
//   mallory contractors          → no twincert role (sign-in refused)
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { parseArgs } from 'node:util';

import { load } from './modules.mjs';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    redirect: { type: 'string', multiple: true },
    secret: { type: 'string' },
  },
});
for (const k of ['port', 'cert', 'key', 'redirect', 'secret']) {
  if (!args[k]) {
    console.error(`idp.mjs: --${k} is required`);
    process.exit(2);
  }
}

export const ACCOUNTS = {
  alice: { email: 'alice@example.test', name: 'Alice Operator', groups: ['twincert-operators'] },
  victor: { email: 'victor@example.test', name: 'Victor Viewer', groups: ['twincert-viewers'] },
  ada: { email: 'ada@example.test', name: 'Ada Admin', groups: ['twincert-admins'] },
  mallory: { email: 'mallory@example.test', name: 'Mallory', groups: ['contractors'] },
};

const { default: Provider } = await load('oidc-provider');

const issuer = `https://127.0.0.1:${args.port}`;
const signing = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'twincert',
      client_secret: args.secret,
      redirect_uris: args.redirect,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // Every authorization request must carry an S256 code challenge.
  pkce: { required: () => true },
  jwks: { keys: [{ ...signing, use: 'sig', alg: 'RS256', kid: 'test-rs256' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub', 'groups'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // The scope's claims go into the ID token too (not only userinfo).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, id) {
    const a = ACCOUNTS[id];
    if (!a) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: a.email, email_verified: true, name: a.name, groups: a.groups };
      },
    };
  },
  // A first-party client: consent is implied (oidc-provider's
  // "skip consent" recipe), so the flow is login form → redirect.
  async loadExistingGrant(ctx) {
    const id = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (id) return ctx.oidc.provider.Grant.find(id);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><title>IdP error</title><h1 data-testid="idp-error">${out.error}</h1><p>${String(
      out.error_description ?? '',
    ).replace(/[<>&]/g, '')}</p>`;
  },
});

// An unknown login gets the dev form again (findAccount undefined) — no
// account outside the list above can sign in.
for (const ev of ['authorization.error', 'grant.error', 'server_error', 'userinfo.error']) {
  provider.on(ev, (_ctx, err) => console.error(`idp: ${ev}: ${err.message} ${err.error_description ?? ''}`));
}
provider.on('authorization.success', (ctx) => console.error(`idp: authorization.success client=${ctx.oidc.client?.clientId}`));
provider.on('grant.success', (ctx) => console.error(`idp: grant.success client=${ctx.oidc.client?.clientId}`));

const server = createServer({ cert: readFileSync(args.cert), key: readFileSync(args.key) }, provider.callback());
server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
