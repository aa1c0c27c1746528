// A test upstream that trusts mcpd's identity assertions the way a real API would: every
// request must carry a JWT that verifies, with the `jose` library, against mcpd's JWKS
// (its /.well-known/jwks.json, or a file from `mcpd token jwks`) for this API's audience
// and mcpd's issuer, EdDSA only (or, for token exchange, the SSO's JWKS, issuer and
// algorithm). It answers with the verified claims, or 401 and why.
//
// Env: AUDIENCE, ISSUER, ALGORITHMS (default EdDSA), HEADER (default authorization; "Bearer " is stripped there),
// JWKS_FILE (else POST /_jwks {"url": ...} sets the remote JWKS before the first call).
// Prints its URL on stdout. Test endpoints: POST /_verify {token, audience?, at?}
// verifies a token again (at a Unix time of the test's choosing), GET /_seen lists the
// credentials received.
import http from 'node:http';
import fs from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify } from 'jose';

const { AUDIENCE, ISSUER, JWKS_FILE } = process.env;
const ALGORITHMS = (process.env.ALGORITHMS || 'EdDSA').split(',');
const HEADER = (process.env.HEADER || 'authorization').toLowerCase();
let keys = JWKS_FILE ? createLocalJWKSet(JSON.parse(fs.readFileSync(JWKS_FILE, 'utf8'))) : null;
const seen = [];

async function verify(token, { audience, at } = {}) {
  if (!keys) throw Object.assign(new Error('no JWKS configured'), { code: 'NO_JWKS' });
  const { payload, protectedHeader } = await jwtVerify(token, keys, {
    issuer: ISSUER,
    audience: audience ?? AUDIENCE,
    algorithms: ALGORITHMS,
    currentDate: at == null ? undefined : new Date(at * 1000),
  });
  return { ...payload, kid: protectedHeader.kid };
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function refused(res, e) {
  reply(res, 401, { error: e.code || 'ERR', message: e.message });
}

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', async () => {
    try {
      if (req.url === '/_seen') return reply(res, 200, seen);
      if (req.url === '/_jwks') {
        keys = createRemoteJWKSet(new URL(JSON.parse(body).url));
        return reply(res, 200, { ok: true });
      }
      if (req.url === '/_verify') {
        const { token, audience, at } = JSON.parse(body);
        return reply(res, 200, await verify(token, { audience, at }));
      }
      let credential = req.headers[HEADER];
      seen.push({ path: req.url, credential: credential ?? null, authorization: req.headers.authorization ?? null });
      if (!credential) return reply(res, 401, { error: 'MISSING', message: `no ${HEADER} header` });
      if (HEADER === 'authorization') {
        if (!credential.startsWith('Bearer ')) return reply(res, 401, { error: 'SCHEME', message: 'not a bearer credential' });
        credential = credential.slice('Bearer '.length);
      }
      return reply(res, 200, { verified: true, claims: await verify(credential) });
    } catch (e) {
      return refused(res, e);
    }
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(`http://127.0.0.1:${server.address().port}`);
});
