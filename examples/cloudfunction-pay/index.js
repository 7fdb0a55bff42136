// Cloud function `pay`, for cloud-development mini programs: where the seeds
// called cloud.cloudPay.unifiedOrder (and then ran a one-second timer query
// from the page), this places the order through PaymentService.CreateOrder and
// returns the wx.requestPayment parameters with the order's watch token and the
// poller's WebSocket URL, so the page pays and then watches its own order.
// The payment result reaches the order through WeChat's notification to the
// gateway (or, for cloudPay merchants, through ../cloudpay-forwarder).
//
// The mini program calls it with wx.cloud.callFunction({ name: 'pay', data: { item_id, checkout_id } }).
// The payer's openid comes from the call's context, never from `data`.
//
// Deploying: upload this folder with wxpay.proto copied beside index.js (or
// WXPAY_PROTO naming it); the cloud installs package.json's dependencies.
// Environment (the function's configuration): PAYMENT_SERVICE_URL
// (https://… to payment-service, reachable from the cloud), API_TOKEN,
// POLLER_WS_BASE (wss://… the poller's public WebSocket origin).
'use strict';

const fs = require('fs');
const path = require('path');
const cloud = require('wx-server-sdk');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

cloud.init({ env: cloud.DYNAMIC_CURRENT_ENV });

// Prices live on the server: the page names an item, never an amount.
const CATALOG = {
  'tea-1': { description: '一杯茶 (a cup of tea)', totalFee: 1 },
};

let client;
function payments(env) {
  if (client) return client;
  const beside = path.join(__dirname, 'wxpay.proto');
  const proto = env.WXPAY_PROTO
    || (fs.existsSync(beside) ? beside : path.join(__dirname, '../../proto/proto/wxpay/v1/wxpay.proto'));
  const wxpay = grpc.loadPackageDefinition(protoLoader.loadSync(proto, {
    keepCase: true, longs: String, enums: String, defaults: true,
  })).wxpay.v1;
  const url = new URL(env.PAYMENT_SERVICE_URL);
  const tls = url.protocol === 'https:';
  // One client per warm instance: the HTTP/2 connection outlives the call.
  client = new wxpay.PaymentService(`${url.hostname}:${url.port || (tls ? 443 : 80)}`,
    tls ? grpc.credentials.createSsl() : grpc.credentials.createInsecure());
  return client;
}

function call(env, request) {
  const metadata = new grpc.Metadata();
  if (env.API_TOKEN) metadata.set('authorization', `Bearer ${env.API_TOKEN}`);
  return new Promise((resolve, reject) => {
    payments(env).CreateOrder(request, metadata, { deadline: Date.now() + 10000 },
      (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

async function pay(event, env = process.env) {
  const { OPENID, CLIENTIP } = cloud.getWXContext();
  const item = CATALOG[event.item_id];
  if (!OPENID || !item || !/^[0-9a-f]{16,32}$/.test(event.checkout_id || '')) {
    return { errcode: 400, errmsg: 'item_id and checkout_id (hex) are required' };
  }
  let reply;
  try {
    reply = await call(env, {
      // One checkout of one payer is one order: a retried call returns it again.
      idempotency_key: `${OPENID.slice(0, 28)}:${event.checkout_id}`,
      openid: OPENID,
      description: item.description,
      total_fee: String(item.totalFee),
      attach: event.item_id,
      client_ip: CLIENTIP || '127.0.0.1',
      expire_seconds: '1800',
    });
  } catch (err) {
    // UNAVAILABLE: the page may call again with the same checkout_id.
    return { errcode: err.code === grpc.status.UNAVAILABLE ? 503 : 409, errmsg: err.details || err.message };
  }
  const no = reply.order.out_trade_no;
  if (!reply.payment) return { errcode: 0, out_trade_no: no, status: reply.order.status, payment: null };
  const p = reply.payment;
  const base = (env.POLLER_WS_BASE || '').replace(/\/+$/, '');
  return {
    errcode: 0,
    out_trade_no: no,
    status: reply.order.status,
    payment: { timeStamp: p.time_stamp, nonceStr: p.nonce_str, package: p.package, signType: p.sign_type, paySign: p.pay_sign },
    watch_token: reply.watch_token,
    watch_url: reply.watch_token && base
      ? `${base}/v1/orders/${encodeURIComponent(no)}/ws?token=${encodeURIComponent(reply.watch_token)}`
      : '',
  };
}

exports.main = async (event) => pay(event);
exports.pay = pay;
