// Drives every Node example against a running stack, as their users would:
//
// 1. the mini program page (../miniprogram, through the wx shim) asks the Node
//    backend (../node-backend) for an order, pays with wx.requestPayment and
//    learns SUCCESS over wx.connectSocket;
// 2. forged, tampered and other orders' watch tokens are refused (HTTP 401);
// 3. the cloud function (../cloudfunction-pay, through the wx-server-sdk shim)
//    places an order; its watch token opens the WebSocket, and the node-watch
//    client (../node-watch, gRPC WatchOrder) watches the same order; both see
//    it paid;
// 4. when GATEWAY_CALLBACK_URL and CLOUDPAY_CALLBACK_SECRET are set, the
//    cloud-pay forwarder (../cloudpay-forwarder) relays WeChat's callback for
//    an order paid in the sandbox without a notification: acknowledged (the
//    gateway's orderquery agrees), and the same callback signed ten minutes
//    ago (a replay) refused.
//
// Environment: PAYMENT_SERVICE_URL (http://host:port), POLLER_ADDR (host:port,
// gRPC), POLLER_WS_BASE (ws://host:port), SANDBOX_URL, WECHAT_APP_ID,
// WECHAT_API_KEY (the shim checks paySign as WeChat's client would).
// It prints one line `REPORT {json}` with what it saw, for the Rust test to
// judge, and exits non-zero (with the reason) when a step fails outright.
'use strict';

const crypto = require('crypto');
const path = require('path');
const Module = require('module');
const { spawn } = require('child_process');
const { createWx, loadMiniProgram } = require('./wx');
const { sdk, invoke } = require('./wx-server-sdk');

const STEP_MS = 20000;
const env = process.env;
for (const name of ['PAYMENT_SERVICE_URL', 'POLLER_ADDR', 'POLLER_WS_BASE', 'SANDBOX_URL', 'WECHAT_APP_ID', 'WECHAT_API_KEY']) {
  if (!env[name]) { console.error(`${name} is required`); process.exit(2); }
}

// The cloud function requires 'wx-server-sdk'; in the cloud that is the real
// package, here the shim (the real one talks only to Tencent's cloud).
const load = Module._load;
Module._load = function loadWithShim(request, ...rest) {
  return request === 'wx-server-sdk' ? sdk : load.call(this, request, ...rest);
};

const examples = path.join(__dirname, '..');
const { createBackend } = require(path.join(examples, 'node-backend'));
const { paymentClient } = require(path.join(examples, 'node-backend/payments'));
const cloudPay = require(path.join(examples, 'cloudfunction-pay'));

const OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o';

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

// Opens a socket through the shim and resolves when it is closed, with what it got.
function socketOutcome(wx, url, onMessage = () => {}) {
  return new Promise((resolve) => {
    const task = wx.connectSocket({ url });
    const entry = wx.log.sockets[wx.log.sockets.length - 1];
    task.onMessage(({ data }) => onMessage(JSON.parse(data), task));
    task.onClose(() => resolve(entry));
  });
}

function lines(stream, onLine) {
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    buffered += chunk;
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) { onLine(buffered.slice(0, i)); buffered = buffered.slice(i + 1); }
  });
}

async function main() {
  const report = {};
  const wx = createWx({ appId: env.WECHAT_APP_ID, apiKey: env.WECHAT_API_KEY, sandboxUrl: env.SANDBOX_URL });

  // 1. The backend, with wx.login's code mapped to a payer (jscode2session is
  //    WeChat's own API, which the sandbox does not play).
  const payments = paymentClient(env.PAYMENT_SERVICE_URL, env);
  const codes = [];
  const backend = createBackend({
    payments,
    wsBase: env.POLLER_WS_BASE,
    code2session: async (code) => { codes.push(code); return OPENID; },
  });
  await new Promise((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const backendUrl = `http://127.0.0.1:${backend.address().port}`;

  // The page, as the framework runs it: onLoad, then the payer taps Pay.
  const started = Date.now();
  const page = loadMiniProgram(path.join(examples, 'miniprogram'), 'pages/pay/pay', {
    wx, globalData: { backend: backendUrl },
  });
  page.onLoad({ item: 'tea-1' });
  page.pay();
  await page.waitFor((d) => d.state === 'paid' || d.state === 'failed', STEP_MS, 'the page learns the outcome');
  const pageSocket = wx.log.sockets[0];
  report.page = {
    state: page.data.state,
    message: page.data.message,
    out_trade_no: page.data.outTradeNo,
    transaction_id: page.data.transactionId,
    states: page.history.filter((p) => p.state).map((p) => p.state),
    socket_statuses: pageSocket ? pageSocket.messages.map((m) => JSON.parse(m).status) : [],
    socket_url: pageSocket ? pageSocket.url : '',
    pay_sign_ok: wx.log.payments.every((p) => p.signOk) && wx.log.payments.length === 1,
    paid_in_sandbox: wx.log.payments.length === 1 && wx.log.payments[0].paid,
    timers: { ...wx.log.timers },
    backend_requests: wx.log.requests.map((r) => r.statusCode),
    logins: codes.length,
    ms: Date.now() - started,
  };
  // The server closes the socket after the final status; wait for it.
  if (pageSocket) await within(STEP_MS, 'the page socket closes', new Promise((r) => {
    const check = () => (pageSocket.closeCode !== null ? r() : setTimeout(check, 10));
    check();
  }));
  report.page.close_code = pageSocket ? pageSocket.closeCode : null;

  // 2. Tokens: forged, tampered, another order's.
  const paidNo = page.data.outTradeNo;
  const token = new URL(pageSocket.url).searchParams.get('token');
  const other = await (await fetch(`${backendUrl}/api/orders`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code: 'second', item_id: 'cake-1', checkout_id: crypto.randomBytes(16).toString('hex') }),
  })).json();
  const url = (no, t) => `${env.POLLER_WS_BASE}/v1/orders/${no}/ws?token=${encodeURIComponent(t)}`;
  const tampered = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
  const refusals = {};
  for (const [name, u] of Object.entries({
    forged: url(paidNo, 'forged'),
    tampered: url(paidNo, tampered),
    foreign: url(paidNo, other.watch_token),
    none: `${env.POLLER_WS_BASE}/v1/orders/${paidNo}/ws`,
  })) {
    const entry = await within(STEP_MS, `the ${name} token`, socketOutcome(wx, u));
    refusals[name] = { http_status: entry.httpStatus, opened: entry.opened, messages: entry.messages.length };
  }
  // The other order's own token works (so the 401s above are the token's doing).
  const own = await within(STEP_MS, 'the second order\'s own token', socketOutcome(wx, other.watch_url, (_, t) => t.close()));
  refusals.own = { http_status: own.httpStatus, opened: own.opened, first: own.messages[0] && JSON.parse(own.messages[0]).status };
  report.tokens = refusals;

  // 3. The cloud function, then its order watched by a WebSocket and by node-watch.
  const cloud = await invoke(cloudPay.main, { item_id: 'tea-1', checkout_id: crypto.randomBytes(16).toString('hex') }, { OPENID, CLIENTIP: '127.0.0.1' });
  report.cloud = { errcode: cloud.errcode, out_trade_no: cloud.out_trade_no, has_payment: !!cloud.payment, has_token: !!cloud.watch_token, sdk_inited: !!sdk.inited };
  if (cloud.errcode !== 0) throw new Error(`the cloud function answered ${JSON.stringify(cloud)}`);

  const seen = { ws: [], grpc: [] };
  let notpays = 0;
  let paid = null;
  const payWhenBothWait = () => {
    notpays += 1;
    if (notpays !== 2) return;
    // Both watchers hold NOTPAY: the payer pays, by the prepay_id as WeChat's client would.
    const prepay = cloud.payment.package.replace(/^prepay_id=/, '');
    paid = fetch(`${env.SANDBOX_URL}/sandbox/prepay/${prepay}/pay`, { method: 'POST' }).then((r) => r.status);
  };
  const ws = socketOutcome(wx, cloud.watch_url, (e) => {
    seen.ws.push(e.status);
    if (e.status === 'NOTPAY') payWhenBothWait();
  });
  const watcher = spawn(process.execPath, [path.join(examples, 'node-watch/index.js'), env.POLLER_ADDR, cloud.out_trade_no], {
    env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let watchErr = '';
  watcher.stderr.on('data', (c) => { watchErr += c; });
  lines(watcher.stdout, (line) => {
    seen.grpc.push(line);
    if (/ (ORDER_STATUS_)?NOTPAY /.test(line)) payWhenBothWait();
  });
  const watchExit = new Promise((resolve) => watcher.on('exit', (code) => resolve(code)));
  const [wsEntry, watchCode] = await within(STEP_MS, 'the cloud order is seen paid', Promise.all([ws, watchExit]))
    .catch((e) => {
      watcher.kill();
      throw new Error(`${e.message}; seen ${JSON.stringify(seen)}; node-watch stderr: ${watchErr}`);
    });
  report.cloud.ws_statuses = seen.ws;
  report.cloud.ws_close_code = wsEntry.closeCode;
  report.cloud.node_watch = { exit_code: watchCode, lines: seen.grpc, stderr: watchErr.trim() };
  report.cloud.sandbox_pay_status = paid ? await paid : null;

  if (env.GATEWAY_CALLBACK_URL && env.CLOUDPAY_CALLBACK_SECRET) {
    report.forwarder = await forwardOne();
  }

  backend.close();
  payments.close();
  console.log(`REPORT ${JSON.stringify(report)}`);
}

// 4. A cloud-pay order paid in the sandbox with its notification dropped, so
// only the forwarded callback can tell the gateway; then the same callback as
// if captured and replayed ten minutes later.
async function forwardOne() {
  const forwarder = require(path.join(examples, 'cloudpay-forwarder'));
  const placed = await invoke(cloudPay.main, { item_id: 'tea-1', checkout_id: crypto.randomBytes(16).toString('hex') }, { OPENID, CLIENTIP: '127.0.0.1' });
  if (placed.errcode !== 0) throw new Error(`the cloud function answered ${JSON.stringify(placed)}`);
  const res = await fetch(`${env.SANDBOX_URL}/sandbox/orders/${placed.out_trade_no}/pay`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ delivery: 'drop' }),
  });
  if (res.status !== 200) throw new Error(`sandbox pay answered ${res.status}`);
  const order = await res.json();
  // What WeChat passes the callback function (cloud.cloudPay, camelCase).
  const event = {
    returnCode: 'SUCCESS',
    resultCode: 'SUCCESS',
    appid: env.WECHAT_APP_ID,
    outTradeNo: placed.out_trade_no,
    transactionId: order.transaction_id,
    totalFee: order.total_fee,
    cashFee: order.total_fee,
    feeType: 'CNY',
    timeEnd: '20240102150405',
    openid: OPENID,
  };
  const first = await forwarder.main(event);
  const replay = await forwarder.forward(event, env, () => Date.now() - 10 * 60 * 1000);
  return { out_trade_no: placed.out_trade_no, transaction_id: order.transaction_id, reply: first, replay };
}

main().then(() => process.exit(0), (e) => {
  console.error(`drive failed: ${e.stack || e.message}`);
  process.exit(1);
});
