// A tiny `wx-server-sdk` for Node: what the pay cloud function uses (init,
// DYNAMIC_CURRENT_ENV, getWXContext). The cloud sets the caller's context
// (OPENID, CLIENTIP…) for each call; `invoke` does the same here.
'use strict';

let current = {};
const sdk = {
  DYNAMIC_CURRENT_ENV: Symbol('DYNAMIC_CURRENT_ENV'),
  inited: null,
  init(options) { sdk.inited = options || {}; },
  getWXContext() { return { ...current }; },
};

// Calls a cloud function's `main` as the cloud would for a caller `context`.
async function invoke(main, event, context) {
  current = { APPID: '', ENV: 'test', SOURCE: 'wx_client', ...context };
  try { return await main(event, { function_name: 'pay' }); } finally { current = {}; }
}

module.exports = { sdk, invoke };
