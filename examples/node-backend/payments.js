// A PaymentService client and the one call a mini program's backend needs:
// CreateOrder, turned into what the mini program is handed (the
// wx.requestPayment object, the watch token and the poller's WebSocket URL).
// Shared by the HTTP backend (index.js) and the cloud function example, which
// require it rather than copy it.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// The contract, from this repository; a deployment that ships this file alone
// (a cloud function) copies wxpay.proto beside it or names it in WXPAY_PROTO.
function protoPath(env = process.env) {
  if (env.WXPAY_PROTO) return env.WXPAY_PROTO;
  const beside = path.join(__dirname, 'wxpay.proto');
  if (fs.existsSync(beside)) return beside;
  return path.join(__dirname, '../../proto/proto/wxpay/v1/wxpay.proto');
}

// `PAYMENT_SERVICE_URL` as the poller takes it (http://host:port or https://…):
// grpc-js wants host:port and the credentials that go with the scheme.
function paymentClient(url, env = process.env) {
  const target = new URL(url);
  const definition = protoLoader.loadSync(protoPath(env), {
    keepCase: true, longs: String, enums: String, defaults: true,
  });
  const wxpay = grpc.loadPackageDefinition(definition).wxpay.v1;
  const credentials = target.protocol === 'https:'
    ? grpc.credentials.createSsl()
    : grpc.credentials.createInsecure();
  const port = target.port || (target.protocol === 'https:' ? '443' : '80');
  return new wxpay.PaymentService(`${target.hostname}:${port}`, credentials);
}

function metadata(env = process.env) {
  const m = new grpc.Metadata();
  // API_TOKEN: payment-service's bearer token. It never leaves the backend.
  if (env.API_TOKEN) m.set('authorization', `Bearer ${env.API_TOKEN}`);
  return m;
}

// The poller's public WebSocket URL for one order (POLLER_WS_BASE, e.g.
// wss://pay.example.com: the TLS-terminating proxy in front of POLLER_HTTP_ADDR).
function watchUrl(wsBase, outTradeNo, token) {
  const base = wsBase.replace(/\/+$/, '');
  return `${base}/v1/orders/${encodeURIComponent(outTradeNo)}/ws?token=${encodeURIComponent(token)}`;
}

// What a gRPC status means for the mini program: retry (the same key returns
// the same order) or give up with WeChat's reason.
class PaymentError extends Error {
  constructor(err) {
    super(err.details || err.message);
    this.code = grpc.status[err.code] || 'UNKNOWN';
    this.retry = err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED;
  }
}

// CreateOrder, then the reply the mini program gets. `order` is
// { idempotencyKey, openid, description, totalFee, clientIp, attach }.
function createOrder(client, order, { wsBase, env = process.env, deadlineMs = 10000 }) {
  const request = {
    idempotency_key: order.idempotencyKey,
    openid: order.openid,
    description: order.description,
    total_fee: String(order.totalFee),
    attach: order.attach || '',
    client_ip: order.clientIp,
    expire_seconds: String(order.expireSeconds || 1800),
  };
  return new Promise((resolve, reject) => {
    client.CreateOrder(request, metadata(env), { deadline: Date.now() + deadlineMs }, (err, reply) => {
      if (err) return reject(new PaymentError(err));
      const no = reply.order.out_trade_no;
      if (!reply.payment) {
        // Already paid or closed under this key: nothing to pay.
        return resolve({ out_trade_no: no, status: reply.order.status, payment: null });
      }
      const p = reply.payment;
      resolve({
        out_trade_no: no,
        status: reply.order.status,
        // Exactly wx.requestPayment's fields (appId is implied by the mini program).
        payment: {
          timeStamp: p.time_stamp,
          nonceStr: p.nonce_str,
          package: p.package,
          signType: p.sign_type,
          paySign: p.pay_sign,
        },
        // Empty when payment-service has no WATCH_TOKEN_SECRET: the mini program
        // then has no push channel and must ask its backend instead.
        watch_token: reply.watch_token,
        watch_url: reply.watch_token && wsBase ? watchUrl(wsBase, no, reply.watch_token) : '',
      });
    });
  });
}

module.exports = { paymentClient, createOrder, watchUrl, PaymentError, protoPath };
