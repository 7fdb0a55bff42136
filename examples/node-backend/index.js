// A mini program's backend, the part that pays: POST /api/orders places the
// order through PaymentService.CreateOrder and answers the mini program with
// the wx.requestPayment parameters, the order's watch token and the poller's
// WebSocket URL. The mini program then watches the order itself
// (wx.connectSocket); this backend never polls and never holds a stream.
//
//   PAYMENT_SERVICE_URL=http://127.0.0.1:50051 POLLER_WS_BASE=ws://127.0.0.1:8081 \
//   WECHAT_APP_ID=… WECHAT_APP_SECRET=… node index.js
//
// Environment: PAYMENT_SERVICE_URL (payment-service), API_TOKEN (its bearer
// token, if set), POLLER_WS_BASE (the public ws(s):// origin of the poller's
// POLLER_HTTP_ADDR), PORT (3000), WECHAT_APP_ID + WECHAT_APP_SECRET (for
// wx.login's code → openid, WeChat's jscode2session).
'use strict';

const http = require('http');
const https = require('https');
const { paymentClient, createOrder } = require('./payments');

// Prices live on the server: the mini program names an item, never an amount.
const CATALOG = {
  'tea-1': { description: '一杯茶 (a cup of tea)', totalFee: 1 },
  'cake-1': { description: '一块蛋糕 (a piece of cake)', totalFee: 1200 },
};

// wx.login's code → the payer's openid, through WeChat's jscode2session.
function jscode2session(env = process.env) {
  return (code) => new Promise((resolve, reject) => {
    const url = new URL('https://api.weixin.qq.com/sns/jscode2session');
    url.search = new URLSearchParams({
      appid: env.WECHAT_APP_ID || '', secret: env.WECHAT_APP_SECRET || '',
      js_code: code, grant_type: 'authorization_code',
    }).toString();
    https.get(url, { timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        try {
          const reply = JSON.parse(body);
          if (reply.openid) resolve(reply.openid);
          else reject(new Error(`jscode2session: ${reply.errcode} ${reply.errmsg}`));
        } catch (e) { reject(e); }
      });
    }).on('error', reject);
  });
}

function readJson(req, limit = 16 * 1024) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => {
      body += c;
      if (body.length > limit) { reject(new Error('body too large')); req.destroy(); }
    });
    req.on('end', () => { try { resolve(JSON.parse(body || '{}')); } catch (e) { reject(e); } });
    req.on('error', reject);
  });
}

function send(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

// The client's IP for spbill_create_ip (IPv4-mapped IPv6 written as IPv4).
// Behind a proxy, take it from the proxy's header instead.
function clientIp(req) {
  const ip = req.socket.remoteAddress || '127.0.0.1';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

// `payments`: a PaymentService client; `code2session`: code → openid;
// `wsBase`: the poller's public ws(s):// origin.
function createBackend({ payments, code2session, wsBase, env = process.env }) {
  return http.createServer(async (req, res) => {
    if (req.method !== 'POST' || req.url !== '/api/orders') return send(res, 404, { error: 'not found' });
    let body;
    try { body = await readJson(req); } catch (e) { return send(res, 400, { error: 'JSON body expected' }); }
    const item = CATALOG[body.item_id];
    const checkout = typeof body.checkout_id === 'string' ? body.checkout_id : '';
    if (!item || !/^[0-9a-f]{16,32}$/.test(checkout) || typeof body.code !== 'string') {
      return send(res, 400, { error: 'item_id, checkout_id (hex) and code are required' });
    }
    let openid;
    try { openid = await code2session(body.code); } catch (e) {
      return send(res, 401, { error: 'login expired: call wx.login again' });
    }
    try {
      const reply = await createOrder(payments, {
        // One checkout of one user is one order: a retried tap (or a retry
        // after UNAVAILABLE) gets the same order back, never a second one.
        idempotencyKey: `${openid.slice(0, 28)}:${checkout}`,
        openid,
        description: item.description,
        totalFee: item.totalFee,
        clientIp: clientIp(req),
        attach: body.item_id,
      }, { wsBase, env });
      send(res, 200, reply);
    } catch (e) {
      console.error(`CreateOrder failed: ${e.code} ${e.message}`);
      send(res, e.retry ? 503 : 409, { error: e.message, retry: e.retry });
    }
  });
}

module.exports = { createBackend, jscode2session, CATALOG };

if (require.main === module) {
  const env = process.env;
  if (!env.PAYMENT_SERVICE_URL || !env.POLLER_WS_BASE) {
    console.error('PAYMENT_SERVICE_URL and POLLER_WS_BASE are required');
    process.exit(2);
  }
  const server = createBackend({
    payments: paymentClient(env.PAYMENT_SERVICE_URL, env),
    code2session: jscode2session(env),
    wsBase: env.POLLER_WS_BASE,
  });
  server.listen(Number(env.PORT || 3000), () => {
    console.log(`mini program backend on http://127.0.0.1:${server.address().port}/api/orders`);
  });
}
