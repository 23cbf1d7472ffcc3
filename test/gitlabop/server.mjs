// A GitLab-shaped OpenID provider for oidc-authservice's tests, built on
// node-oidc-provider (OpenID Certified). It behaves as ../../../shared/CONTRACT.md §3
// describes GitLab: numeric string `sub`, profile claims and `groups_direct`
// in the ID token, `groups` (direct and inherited) only in userinfo, ID
// tokens that expire after ID_TOKEN_TTL (GitLab: 120 s), refresh tokens on
// every code flow, revocation and introspection endpoints, scopes `openid
// profile email` only (any other scope is refused with invalid_scope), and no
// end_session_endpoint. PROFILE=full adds RP-initiated and back-channel
// logout with `sid` in ID tokens, for single-logout tests.
//
// Its access tokens are opaque, as GitLab's OAuth tokens are, unless
// ACCESS_TOKEN_AUDIENCE names a resource server: then they are RFC 9068
// JWTs (typ at+jwt) for that audience, carrying the user's email and
// groups_direct too (a provider set up for JWT access tokens; GitLab's are
// never JWTs).
//
// Test-only endpoints (127.0.0.1 only): POST /__test/revoke?sub=S revokes
// every grant and token of S (the user revoking the application);
// POST /__test/backchannel?sub=S&sid=X sends a back-channel logout token to
// the client; POST /__test/groups?login=L with a JSON array sets L's direct
// groups (an administrator added them): the ID tokens issued from then on,
// refreshed ones too, carry them; GET /__test/counts: how many requests each
// endpoint got (userinfo, token, revocation); GET /__test/healthz.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const env = (k, d) => process.env[k] ?? d;
const PORT = Number(env('PORT', '4444'));
const ISSUER = env('ISSUER', `http://127.0.0.1:${PORT}`);
const PROFILE = env('PROFILE', 'gitlab');
const CLIENT_ID = env('CLIENT_ID', 'kubeflow');
const CLIENT_SECRET = env('CLIENT_SECRET', 'kubeflow-secret');
const list = (k) => env(k, '').split(',').map((s) => s.trim()).filter(Boolean);
const REDIRECT_URIS = list('REDIRECT_URIS');
const full = PROFILE === 'full';
const ACCESS_TOKEN_AUDIENCE = env('ACCESS_TOKEN_AUDIENCE', '');
const counts = { userinfo: 0, token: 0, revocation: 0 };

// Accounts by login name (ACCOUNTS_JSON or ACCOUNTS_FILE). GitLab's groups:
// direct memberships in the ID token (groups_direct), direct and inherited
// in userinfo (groups).
// ACCOUNTS_FILE holds the same JSON for accounts too large for the
// environment (thousands of groups).
const accounts = JSON.parse(process.env.ACCOUNTS_FILE ? readFileSync(process.env.ACCOUNTS_FILE, 'utf8') : env('ACCOUNTS_JSON', JSON.stringify({
  alice: { sub: '4217', email: 'alice@example.com', name: 'Alice Example', groups_direct: ['acme/ml'], groups: ['acme', 'acme/ml'] },
  bob: { sub: '4218', email: 'bob@example.com', name: 'Bob Example', groups_direct: [], groups: [] },
  // Registered (self-service) with a colleague's address, never verified.
  mallory: { sub: '4666', email: 'alice@example.com', email_verified: false, name: 'Mallory', groups_direct: [], groups: [] },
})));
const bySub = new Map();
function account(login) {
  let a = accounts[login];
  if (!a) {
    let h = 0;
    for (const c of login) h = (h * 31 + c.charCodeAt(0)) % 900000;
    a = { sub: String(100000 + h), email: `${login}@example.com`, name: login, groups_direct: [], groups: [] };
  }
  a.login = login;
  bySub.set(a.sub, a);
  return a;
}

// An in-memory adapter that can also revoke everything of one account.
const store = new Map();
class Adapter {
  constructor(name) { this.name = name; }
  key(id) { return `${this.name}:${id}`; }
  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, exp: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
  }
  async find(id) {
    const e = store.get(this.key(id));
    if (!e || e.exp < Date.now()) return undefined;
    return e.payload;
  }
  async findByUid(uid) {
    for (const [k, e] of store) if (k.startsWith(`${this.name}:`) && e.payload.uid === uid) return e.payload;
    return undefined;
  }
  async findByUserCode() { return undefined; }
  async consume(id) { const e = store.get(this.key(id)); if (e) e.payload.consumed = Math.floor(Date.now() / 1000); }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const [k, e] of store) if (e.payload.grantId === grantId) store.delete(k);
  }
}
function revokeAccount(sub) {
  let n = 0;
  for (const [k, e] of store) {
    if (e.payload.accountId === sub && /^(AccessToken|RefreshToken|Grant|AuthorizationCode|Session):/.test(k)) { store.delete(k); n++; }
  }
  return n;
}

const SCOPES = ['openid', 'profile', 'email'];
const client = {
  client_id: CLIENT_ID,
  client_secret: CLIENT_SECRET,
  redirect_uris: REDIRECT_URIS,
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
};
if (full) {
  client.post_logout_redirect_uris = list('POST_LOGOUT_REDIRECT_URIS');
  if (env('BACKCHANNEL_LOGOUT_URI', '')) {
    client.backchannel_logout_uri = env('BACKCHANNEL_LOGOUT_URI');
    client.backchannel_logout_session_required = true;
  }
}

const provider = new Provider(ISSUER, {
  adapter: Adapter,
  clients: [client],
  scopes: SCOPES,
  claims: {
    openid: ['sub'],
    profile: ['name', 'nickname', 'preferred_username', 'groups_direct', 'groups'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    const a = bySub.get(sub);
    if (!a) return undefined;
    return {
      accountId: sub,
      async claims(use) {
        const c = { sub, name: a.name, nickname: a.login, preferred_username: a.login, email: a.email, email_verified: a.email_verified !== false };
        if (use === 'id_token') c.groups_direct = a.groups_direct;
        if (use === 'userinfo') c.groups = a.groups;
        return c;
      },
    };
  },
  features: {
    resourceIndicators: ACCESS_TOKEN_AUDIENCE ? {
      enabled: true,
      defaultResource: async () => ACCESS_TOKEN_AUDIENCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: SCOPES.join(' '), audience: ACCESS_TOKEN_AUDIENCE, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } },
      }),
    } : { enabled: false },
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    rpInitiatedLogout: { enabled: full },
    backchannelLogout: { enabled: full },
  },
  // The user's identity in JWT access tokens, as a provider set up for
  // them adds it (RFC 9068 requires only sub).
  async extraTokenClaims(ctx, token) {
    if (!ACCESS_TOKEN_AUDIENCE || token.kind !== 'AccessToken') return undefined;
    const a = bySub.get(token.accountId);
    return a ? { email: a.email, email_verified: a.email_verified !== false, groups_direct: a.groups_direct } : undefined;
  },
  ttl: {
    IdToken: Number(env('ID_TOKEN_TTL', '120')),
    AccessToken: Number(env('ACCESS_TOKEN_TTL', '7200')),
    RefreshToken: Number(env('REFRESH_TOKEN_TTL', '86400')),
    AuthorizationCode: 60,
    Grant: 86400,
    Interaction: 600,
    Session: 86400,
  },
  // GitLab issues a refresh token with every code flow, no offline_access.
  issueRefreshToken: async (ctx, c) => c.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  rotateRefreshToken: true,
  // First-party application: no consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const g = await ctx.oidc.provider.Grant.find(grantId);
      if (g) return g;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(SCOPES.join(' '));
    if (ACCESS_TOKEN_AUDIENCE) grant.addResourceScope(ACCESS_TOKEN_AUDIENCE, SCOPES.join(' '));
    await grant.save();
    return grant;
  },
  pkce: { required: () => false },
  cookies: { keys: ['gitlabop-test-cookie-key'] },
  clientBasedCORS: () => true,
  // Its SSRF protection refuses loopback addresses, where every peer of the
  // tests lives: drop the protecting dispatcher (test tooling only).
  fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
});
provider.proxy = true;
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// devInteractions accepts any login: register the account on the way in.
provider.use(async (ctx, next) => {
  if (ctx.path === '/me') counts.userinfo++;
  if (ctx.path === '/token') counts.token++;
  if (ctx.path === '/token/revocation') counts.revocation++;
  if (ctx.method === 'POST' && ctx.path.startsWith('/interaction/')) {
    const chunks = [];
    for await (const c of ctx.req) chunks.push(c);
    const params = new URLSearchParams(Buffer.concat(chunks).toString());
    const login = params.get('login');
    // The account id becomes the login form's value: make it GitLab's
    // numeric user id.
    if (login) params.set('login', account(login).sub);
    const body = params.toString();
    // Give the body back to the provider's own parser.
    const { Readable } = await import('node:stream');
    const replay = Readable.from([Buffer.from(body)]);
    replay.headers = { ...ctx.req.headers, 'content-length': String(Buffer.byteLength(body)) };
    Object.assign(replay, { method: ctx.req.method, url: ctx.req.url, httpVersion: ctx.req.httpVersion, socket: ctx.req.socket, connection: ctx.req.connection });
    ctx.req = replay;
    ctx.request.req = replay;
  }
  // GitLab refuses unknown scopes (a `groups` scope does not exist).
  if (ctx.method === 'GET' && ctx.path === '/auth' && ctx.query.scope) {
    const bad = ctx.query.scope.split(' ').filter((s) => s && !SCOPES.includes(s));
    const uri = ctx.query.redirect_uri;
    if (bad.length && ctx.query.client_id === CLIENT_ID && REDIRECT_URIS.includes(uri)) {
      const u = new URL(uri);
      u.searchParams.set('error', 'invalid_scope');
      u.searchParams.set('error_description', `The requested scope is invalid, unknown, or malformed: ${bad.join(' ')}`);
      if (ctx.query.state) u.searchParams.set('state', ctx.query.state);
      ctx.redirect(u.toString());
      return;
    }
  }
  if (ctx.path.startsWith('/__test/')) {
    ctx.set('Cache-Control', 'no-store');
    if (ctx.path === '/__test/healthz') { ctx.body = 'ok'; return; }
    if (ctx.path === '/__test/counts') { ctx.body = counts; return; }
    if (ctx.method === 'POST' && ctx.path === '/__test/revoke') {
      ctx.body = { revoked: revokeAccount(ctx.query.sub) };
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/__test/groups') {
      const chunks = [];
      for await (const c of ctx.req) chunks.push(c);
      const groups = JSON.parse(Buffer.concat(chunks).toString() || '[]');
      if (!ctx.query.login || !Array.isArray(groups)) {
        ctx.status = 400;
        return;
      }
      account(ctx.query.login).groups_direct = groups;
      ctx.body = { groups_direct: groups.length };
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/__test/backchannel') {
      const c = await provider.Client.find(CLIENT_ID);
      try {
        await c.backchannelLogout(ctx.query.sub, ctx.query.sid);
      } catch (err) {
        console.error('backchannel logout failed:', err, err.cause);
        ctx.status = 502;
        ctx.body = { error: String(err), cause: String(err.cause) };
        return;
      }
      ctx.body = { sent: true };
      return;
    }
    ctx.status = 404;
    return;
  }
  await next();
});

const server = provider.listen(PORT, '127.0.0.1', () => {
  console.log(`gitlabop ready ${ISSUER}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
