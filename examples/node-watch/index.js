// Watches one order on the poller and prints each status change.
//   npm install && node index.js <host:port> <out_trade_no>
// API_TOKEN, when set, is sent as `authorization: Bearer <token>`.
// The stream ends after a message with terminal=true, or cleanly (no terminal
// message) at its deadline; UNAVAILABLE means the poller is shutting down: watch again.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [addr, outTradeNo] = process.argv.slice(2);
if (!addr || !outTradeNo) {
  console.error('usage: node index.js <host:port> <out_trade_no>');
  process.exit(2);
}

const definition = protoLoader.loadSync(
  path.join(__dirname, '../../proto/proto/wxpay/v1/wxpay.proto'),
  { keepCase: true, longs: String, enums: String, defaults: true },
);
const wxpay = grpc.loadPackageDefinition(definition).wxpay.v1;
const client = new wxpay.OrderStatusService(addr, grpc.credentials.createInsecure(), {
  // Match the server's HTTP/2 keepalive so idle streams survive proxies.
  'grpc.keepalive_time_ms': 30000,
});

const metadata = new grpc.Metadata();
if (process.env.API_TOKEN) {
  metadata.set('authorization', `Bearer ${process.env.API_TOKEN}`);
}

let final = false;
const call = client.WatchOrder({ out_trade_no: outTradeNo, timeout_seconds: 0 }, metadata);
call.on('data', (e) => {
  final = e.terminal;
  console.log(`${e.out_trade_no} ${e.status} version=${e.version} source=${e.source}` +
    `${e.transaction_id ? ` transaction_id=${e.transaction_id}` : ''}${e.terminal ? ' (final)' : ''}`);
});
call.on('status', (status) => {
  if (status.code === grpc.status.OK && !final) {
    console.log('deadline reached; watch again to keep waiting');
  }
  // The stream is over: let the process exit (an open channel would hold it).
  client.close();
});
call.on('error', (err) => {
  console.error(`${grpc.status[err.code]}: ${err.details}`);
  process.exitCode = 1;
});
