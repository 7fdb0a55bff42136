// A tiny `wx` for Node: just what the example mini program calls, each doing
// what WeChat's client does, against the real services and the sandbox:
//
// - wx.request: a real HTTP request (fetch);
// - wx.requestPayment: checks paySign as WeChat's client does (the merchant's
//   key over appId, nonceStr, package, signType, timeStamp), then "pays" in the
//   sandbox by the prepay_id in `package` (all the client knows), after which
//   the sandbox sends WeChat's signed notification to the gateway;
// - wx.connectSocket: a real WebSocket (the `ws` package), with SocketTask's
//   onOpen/onMessage/onError/onClose/close;
// - wx.login, wx.getRandomValues.
//
// `loadMiniProgram` runs app.js and a page's js in their own V8 context, with
// App/Page/getApp and this wx as the only host objects, and counts every
// setInterval/setTimeout the page makes, so a test can say "no timer".
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const WebSocket = require('ws');

function paySignOf(p, apiKey) {
  const canonical = ['appId', 'nonceStr', 'package', 'signType', 'timeStamp']
    .map((k) => `${k}=${p[k]}`).join('&') + `&key=${apiKey}`;
  const digest = p.signType === 'HMAC-SHA256'
    ? crypto.createHmac('sha256', apiKey).update(canonical, 'utf8').digest('hex')
    : crypto.createHash('md5').update(canonical, 'utf8').digest('hex');
  return digest.toUpperCase();
}

// What the shim saw, for the test's assertions.
function newLog() {
  return { requests: [], payments: [], sockets: [], timers: { setInterval: 0, setTimeout: 0 } };
}

function createWx({ appId, apiKey, sandboxUrl, log = newLog() }) {
  let logins = 0;
  const wx = {
    log,
    login({ success }) {
      logins += 1;
      success({ code: `shim-code-${logins}`, errMsg: 'login:ok' });
    },
    getRandomValues({ length, success }) {
      success({ randomValues: crypto.randomBytes(length).buffer, errMsg: 'getRandomValues:ok' });
    },
    request({ url, method = 'GET', data, header = {}, success, fail }) {
      const body = method === 'GET' ? undefined : JSON.stringify(data || {});
      fetch(url, { method, body, headers: { 'content-type': 'application/json', ...header } })
        .then(async (res) => {
          const text = await res.text();
          let parsed = text;
          try { parsed = JSON.parse(text); } catch (_) { /* not JSON: the text */ }
          log.requests.push({ url, method, statusCode: res.status });
          if (success) success({ statusCode: res.status, data: parsed, header: Object.fromEntries(res.headers), errMsg: 'request:ok' });
        })
        .catch((e) => { if (fail) fail({ errMsg: `request:fail ${e.message}` }); });
    },
    requestPayment(params) {
      const { success, fail } = params;
      const signed = { ...params, appId };
      const entry = { package: params.package, signType: params.signType, signOk: false, paid: false };
      log.payments.push(entry);
      entry.signOk = paySignOf(signed, apiKey) === params.paySign;
      if (!entry.signOk) { if (fail) fail({ errMsg: 'requestPayment:fail sign error' }); return; }
      const prepayId = String(params.package).replace(/^prepay_id=/, '');
      fetch(`${sandboxUrl}/sandbox/prepay/${encodeURIComponent(prepayId)}/pay`, { method: 'POST' })
        .then(async (res) => {
          if (!res.ok) throw new Error(`sandbox answered ${res.status}: ${await res.text()}`);
          entry.paid = true;
          // As on iOS, the success callback comes a little after the payment.
          setTimeout(() => { if (success) success({ errMsg: 'requestPayment:ok' }); }, 50);
        })
        .catch((e) => { entry.error = e.message; if (fail) fail({ errMsg: `requestPayment:fail ${e.message}` }); });
    },
    connectSocket({ url }) {
      const entry = { url, opened: false, httpStatus: null, messages: [], closeCode: null };
      log.sockets.push(entry);
      const on = { open: [], message: [], error: [], close: [] };
      const emit = (kind, value) => on[kind].forEach((f) => f(value));
      let socket;
      try {
        socket = new WebSocket(url);
      } catch (e) {
        // wx reports a bad URL through the callbacks, never by throwing.
        setImmediate(() => { emit('error', { errMsg: `connectSocket:fail ${e.message}` }); emit('close', { code: 1006, reason: '' }); });
        return { onOpen: (f) => on.open.push(f), onMessage: (f) => on.message.push(f), onError: (f) => on.error.push(f), onClose: (f) => on.close.push(f), send() {}, close() {} };
      }
      socket.on('open', () => { entry.opened = true; emit('open', {}); });
      socket.on('message', (data, isBinary) => {
        const text = isBinary ? data : data.toString('utf8');
        entry.messages.push(text);
        emit('message', { data: text });
      });
      socket.on('error', (e) => {
        // A refused upgrade: ws says "Unexpected server response: 401".
        const m = /Unexpected server response: (\d+)/.exec(e.message);
        if (m) entry.httpStatus = Number(m[1]);
        emit('error', { errMsg: `connectSocket:fail ${e.message}` });
      });
      socket.on('close', (code, reason) => {
        entry.closeCode = code;
        emit('close', { code, reason: reason.toString('utf8') });
      });
      return {
        onOpen: (f) => on.open.push(f),
        onMessage: (f) => on.message.push(f),
        onError: (f) => on.error.push(f),
        onClose: (f) => on.close.push(f),
        send: ({ data }) => socket.send(data),
        close: ({ code = 1000, reason } = {}) => {
          if (socket.readyState === WebSocket.OPEN) socket.close(code, reason);
          else socket.terminate();
        },
      };
    },
  };
  return wx;
}

// Runs the mini program's app.js, then `route`'s page, and returns the page
// instance as the framework would hold it (this.data, this.setData, methods).
function loadMiniProgram(dir, route, { wx, globalData = {} }) {
  let app;
  let definition;
  const log = wx.log;
  const context = vm.createContext({
    wx,
    console,
    App: (a) => { app = a; },
    Page: (p) => { definition = p; },
    getApp: () => app,
    setTimeout: (f, ms) => { log.timers.setTimeout += 1; return setTimeout(f, ms); },
    clearTimeout,
    setInterval: (f, ms) => { log.timers.setInterval += 1; return setInterval(f, ms); },
    clearInterval,
  });
  vm.runInContext(fs.readFileSync(path.join(dir, 'app.js'), 'utf8'), context, { filename: 'app.js' });
  if (!app) throw new Error('app.js did not call App()');
  Object.assign(app.globalData, globalData);
  const file = path.join(dir, `${route}.js`);
  vm.runInContext(fs.readFileSync(file, 'utf8'), context, { filename: `${route}.js` });
  if (!definition) throw new Error(`${route}.js did not call Page()`);

  const waiters = [];
  const page = { route, data: JSON.parse(JSON.stringify(definition.data || {})), history: [] };
  for (const [k, v] of Object.entries(definition)) if (typeof v === 'function') page[k] = v;
  page.setData = (patch) => {
    Object.assign(page.data, patch);
    page.history.push({ ...patch });
    for (const w of waiters.slice()) w();
  };
  // Resolves once `predicate(page.data)` holds; rejects after `ms`.
  page.waitFor = (predicate, ms, what) => new Promise((resolve, reject) => {
    if (predicate(page.data)) return resolve(page.data);
    const timer = setTimeout(() => {
      waiters.splice(waiters.indexOf(check), 1);
      reject(new Error(`${what}: not within ${ms} ms; data ${JSON.stringify(page.data)}`));
    }, ms);
    function check() {
      if (!predicate(page.data)) return;
      clearTimeout(timer);
      waiters.splice(waiters.indexOf(check), 1);
      resolve(page.data);
    }
    waiters.push(check);
  });
  return page;
}

module.exports = { createWx, loadMiniProgram, paySignOf, newLog };
