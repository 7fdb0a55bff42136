// Cloud-pay callback forwarder: the cloud function named as `functionName` in
// cloud.cloudPay.unifiedOrder. WeChat calls it with the payment result; it
// forwards the event, byte for byte as signed, to the gateway's
// POST /cloudpay/callback with the current unix time in X-Cloudpay-Timestamp and
// an HMAC-SHA256 (hex) of timestamp + "\n" + body under the shared secret in
// X-Cloudpay-Signature, and returns the gateway's { errcode, errmsg } to WeChat.
// The gateway refuses a timestamp more than 5 minutes from its clock (a replay)
// and applies a SUCCESS only once WeChat's orderquery agrees. Any failure
// returns a non-zero errcode, so WeChat retries (for up to two days); each
// retry is signed afresh.
//
// Environment (cloud function configuration):
//   GATEWAY_CALLBACK_URL      e.g. https://pay.example.com/cloudpay/callback
//   CLOUDPAY_CALLBACK_SECRET  the same secret the gateway is configured with
//                             (at least 32 bytes: `openssl rand -hex 16`)

'use strict';

const crypto = require('crypto');
const http = require('http');
const https = require('https');

const TIMEOUT_MS = 5000;

// HMAC-SHA256 (lowercase hex) of `${timestamp}\n${body}`: the timestamp is
// signed too, so it cannot be moved forward to replay a captured callback.
function sign(secret, timestamp, body) {
  return crypto
    .createHmac('sha256', secret)
    .update(`${timestamp}\n`, 'utf8')
    .update(body, 'utf8')
    .digest('hex');
}

function post(url, body, headers) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const transport = target.protocol === 'https:' ? https : http;
    const req = transport.request(
      target,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': Buffer.byteLength(body, 'utf8') },
        timeout: TIMEOUT_MS,
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('gateway timed out')));
    req.on('error', reject);
    req.end(body, 'utf8');
  });
}

async function forward(event, env = process.env, now = () => Date.now()) {
  const url = env.GATEWAY_CALLBACK_URL;
  const secret = env.CLOUDPAY_CALLBACK_SECRET;
  if (!url || !secret) {
    return { errcode: -1, errmsg: 'forwarder not configured' };
  }
  // Sign exactly the bytes that are sent: the gateway verifies the raw body.
  const body = JSON.stringify(event);
  const timestamp = String(Math.floor(now() / 1000));
  try {
    const res = await post(url, body, {
      'content-type': 'application/json',
      'x-cloudpay-timestamp': timestamp,
      'x-cloudpay-signature': sign(secret, timestamp, body),
    });
    const reply = JSON.parse(res.text);
    if (res.status === 200 && reply && reply.errcode === 0) {
      return { errcode: 0, errmsg: 'SUCCESS' };
    }
    return { errcode: typeof reply.errcode === 'number' && reply.errcode !== 0 ? reply.errcode : 1, errmsg: String(reply.errmsg || 'FAIL') };
  } catch (e) {
    console.error('cloudpay forward failed:', e.message);
    return { errcode: -1, errmsg: 'gateway unreachable' };
  }
}

// The cloud function entry point.
exports.main = async (event) => forward(event);
exports.forward = forward;
exports.sign = sign;
