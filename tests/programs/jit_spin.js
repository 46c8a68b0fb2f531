// A Node target for tests/test_jit.py (run with --perf-basic-prof): the main thread and two
// workers call JavaScript functions in a loop that V8 compiles, blocking in Atomics.wait.
// Prints "READY <pid>" once both workers run.
const { Worker, isMainThread, parentPort } = require('worker_threads');
const cell = new Int32Array(new SharedArrayBuffer(4));
function inner(n) { let s = 0; for (let i = 0; i < n; i++) s += i ^ (s >>> 3); return s; }
function waitALittle() { Atomics.wait(cell, 0, 0, 2); }
function jsLoop() { for (;;) { inner(20000); waitALittle(); } }
for (let k = 0; k < 300; k++) { inner(20000); waitALittle(); }
if (isMainThread) {
  let up = 0;
  for (let i = 0; i < 2; i++) {
    new Worker(__filename).on('message', () => {
      if (++up === 2) { console.log('READY ' + process.pid); setTimeout(jsLoop, 10); }
    });
  }
} else {
  parentPort.postMessage('up');
  jsLoop();
}
