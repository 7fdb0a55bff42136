// The backend's public origin (a request domain registered in the console).
// The developer tools accept http:// and ws:// with domain checks turned off
// (project.config.json: urlCheck false); a published mini program needs https://
// and wss:// on registered domains.
App({
  globalData: {
    backend: 'https://api.example.com',
  },
});
