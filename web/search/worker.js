// The search worker's entry, loaded by a tab as a module worker from `search/worker.js`: it
// loads the wasm module of `crates/search-worker` (whose start function takes the messages
// from then on) and tells the tab whether it is ready. See that crate for the messages.
import init from './tabmesh_search_worker.js'

init({ module_or_path: new URL('./tabmesh_search_worker_bg.wasm', import.meta.url) })
  .then(() => postMessage('ready'))
  .catch(e => postMessage('failed: ' + e))
