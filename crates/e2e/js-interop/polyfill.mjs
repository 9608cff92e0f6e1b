// Node.js 20 lacks Promise.withResolvers (added in Node 22), which js-libp2p 3.x and its
// dependencies (@libp2p/utils, yamux, ping, it-queue) call. Import this module before any of
// them: ES modules are evaluated in the order of their imports.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve, reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}
