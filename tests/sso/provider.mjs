// A real authorization server for the token-exchange tests: oidc-provider (a certified
// OpenID Provider) with the RFC 8693 grant registered. mcpd (client `mcpd`, HTTP Basic)
// sends an assertion of the actor as the subject token; the grant verifies it with
// mcpd's JWKS (a file from `mcpd token jwks`), for audience = this token endpoint and
// issuer `mcpd`, and issues a JWT access token (ES256, this provider's keys at /jwks)
// whose `sub` is the actor, `aud` the requested audience, `act` mcpd (RFC 8693 4.1).
//
// Env: MCPD_JWKS_FILE, CLIENT_SECRET, AUDIENCES (comma-separated, the resources it
// issues for), TTL (seconds, default 60). Prints its issuer URL on stdout. GET
// /_exchanges: how many token requests it has answered.
import http from 'node:http';
import fs from 'node:fs';
import Provider, { errors } from 'oidc-provider';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify } from 'jose';

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const mcpdKeys = createLocalJWKSet(JSON.parse(fs.readFileSync(process.env.MCPD_JWKS_FILE, 'utf8')));
const audiences = (process.env.AUDIENCES || 'orders-api').split(',');
const ttl = Number(process.env.TTL || 60);
let exchanges = 0;

const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const signing = { ...(await exportJWK(privateKey)), kid: 'sso-1', alg: 'ES256', use: 'sig' };

const server = http.createServer();
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [signing] },
  clients: [{
    client_id: 'mcpd',
    client_secret: process.env.CLIENT_SECRET,
    grant_types: [GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  }],
  features: { devInteractions: { enabled: false } },
  // RFC 8693 4.1: the token names who acts for the subject.
  formats: {
    customizers: {
      jwt(ctx, token, jwt) {
        if (token.gty === 'token_exchange') jwt.payload.act = { sub: token.clientId };
      },
    },
  },
});

async function tokenExchange(ctx) {
  const { subject_token: subjectToken, subject_token_type: type, audience, scope } = ctx.oidc.params;
  if (type !== JWT_TYPE) throw new errors.InvalidRequest(`subject_token_type must be ${JWT_TYPE}`);
  let actor;
  try {
    ({ payload: actor } = await jwtVerify(subjectToken, mcpdKeys, {
      issuer: 'mcpd', audience: `${issuer}/token`, algorithms: ['EdDSA'],
    }));
  } catch (e) {
    throw new errors.InvalidGrant(`subject_token refused: ${e.message}`);
  }
  if (!audiences.includes(audience)) throw new errors.InvalidTarget(`no resource server '${audience}'`);
  const resourceServer = new provider.ResourceServer(audience, {
    audience, scope: 'orders.read orders.write', accessTokenFormat: 'jwt', accessTokenTTL: ttl,
    jwt: { sign: { alg: 'ES256' } },
  });
  const granted = (scope || '').split(' ').filter((s) => resourceServer.scope.split(' ').includes(s));
  const token = new provider.AccessToken({
    accountId: actor.sub,
    client: ctx.oidc.client,
    gty: 'token_exchange',
    scope: granted.join(' ') || undefined,
  });
  token.resourceServer = resourceServer;
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope,
  };
}

provider.registerGrantType(GRANT, tokenExchange, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'scope']);

const app = provider.callback();
server.on('request', (req, res) => {
  if (req.url === '/_exchanges') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ exchanges }));
  }
  if (req.method === 'POST' && req.url === '/token') exchanges += 1;
  return app(req, res);
});
console.log(issuer);
