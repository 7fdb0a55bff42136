// The pay page: asks its backend for an order, pays with wx.requestPayment,
// and learns the result over one WebSocket to the poller (wx.connectSocket with
// the order's watch token) instead of the seeds' setInterval timer that asked
// the backend once a second.
//
// wx.requestPayment's success callback is not proof of payment (on iOS it fires
// only after the payer taps "Done"): the page shows "paid" only when the poller
// says SUCCESS, which it says only after WeChat's verified notification (or an
// orderquery) reached the service.
const app = getApp();

// The socket is reopened after a close without a final status (the stream's
// deadline, a poller restart): a few times, then the page asks for a refresh.
const MAX_REOPENS = 3;

function hex(bytes) {
  return Array.prototype.map.call(new Uint8Array(bytes), (b) => (b < 16 ? '0' : '') + b.toString(16)).join('');
}

Page({
  data: {
    itemId: 'tea-1',
    // idle → creating → paying → confirming → paid | failed
    state: 'idle',
    outTradeNo: '',
    orderStatus: '',
    transactionId: '',
    message: '',
  },

  onLoad(query) {
    if (query && query.item) this.setData({ itemId: query.item });
    // One checkout id per page visit: a repeated tap, or a retry after a
    // network error, asks for the same order, never a second one.
    wx.getRandomValues({
      length: 16,
      success: ({ randomValues }) => { this.checkoutId = hex(randomValues); },
    });
  },

  onUnload() {
    this.finished = true;
    if (this.socket) this.socket.close({ code: 1000 });
  },

  pay() {
    if (this.data.state !== 'idle' && this.data.state !== 'failed') return;
    this.finished = false;
    this.setData({ state: 'creating', message: '' });
    wx.login({
      success: ({ code }) => this.createOrder(code),
      fail: () => this.fail('wx.login failed'),
    });
  },

  createOrder(code) {
    wx.request({
      url: `${app.globalData.backend}/api/orders`,
      method: 'POST',
      data: { code, item_id: this.data.itemId, checkout_id: this.checkoutId },
      success: ({ statusCode, data }) => {
        if (statusCode !== 200) return this.fail((data && data.error) || `HTTP ${statusCode}`);
        if (!data.payment) return this.fail(`the order is ${data.status}`);
        this.setData({ outTradeNo: data.out_trade_no, state: 'paying' });
        // Watch first, pay once the socket is open: by then the poller has
        // subscribed to the order and read it, so nothing that happens while
        // WeChat's sheet is up can be missed. A socket that cannot open (no
        // socket domain registered, no network) must not stop the payment.
        let asked = false;
        const payOnce = () => {
          if (asked) return;
          asked = true;
          this.requestPayment(data.payment);
        };
        this.watch(data.watch_url, 0, payOnce);
      },
      fail: ({ errMsg }) => this.fail(errMsg),
    });
  },

  requestPayment(payment) {
    wx.requestPayment({
      timeStamp: payment.timeStamp,
      nonceStr: payment.nonceStr,
      package: payment.package,
      signType: payment.signType,
      paySign: payment.paySign,
      // Not proof: wait for the poller's SUCCESS.
      success: () => { if (this.data.state === 'paying') this.setData({ state: 'confirming' }); },
      fail: ({ errMsg }) => {
        if (this.data.state === 'paid') return;
        // Cancelled or failed in WeChat's sheet: stop watching; the same
        // checkout id pays the same order if the payer taps again.
        this.finished = true;
        if (this.socket) this.socket.close({ code: 1000 });
        this.fail(/cancel/.test(errMsg) ? 'payment cancelled' : errMsg);
      },
    });
  },

  watch(url, reopens = 0, opened = () => {}) {
    const task = wx.connectSocket({ url });
    this.socket = task;
    let final = false;
    task.onOpen(opened);
    task.onMessage(({ data }) => {
      const e = JSON.parse(data);
      this.setData({ orderStatus: e.status });
      if (e.status === 'SUCCESS') {
        final = true;
        this.finished = true;
        this.setData({ state: 'paid', transactionId: e.transaction_id });
      } else if (e.terminal) {
        final = true;
        this.finished = true;
        this.fail(`the order is ${e.status}`);
      }
    });
    task.onClose(() => {
      opened();
      if (final || this.finished) return;
      if (reopens >= MAX_REOPENS) return this.fail('lost the connection: pull down to refresh');
      // The deadline or a restart ended the watch: open it again (the snapshot
      // says where the order is). A reconnect, not a timer query.
      setTimeout(() => this.watch(url, reopens + 1), 1000 * (reopens + 1));
    });
    task.onError(({ errMsg }) => console.warn(`watch socket: ${errMsg}`));
  },

  fail(message) {
    this.setData({ state: 'failed', message });
  },
});
