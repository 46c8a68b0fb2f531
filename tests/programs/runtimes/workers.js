// A Node target for the runtime tests: worker_threads, one busy, one blocked in
// Atomics.wait. Prints "READY <pid>" once both run, then for each line read on stdin
// prints "TICK <busy iterations> <SIGUSR2 received>".
'use strict';
const { Worker, isMainThread, workerData, parentPort } = require('worker_threads');

if (isMainThread) {
  const shared = new Int32Array(new SharedArrayBuffer(8));
  let up = 0;
  let usr2 = 0;
  process.on('SIGUSR2', () => { usr2++; });
  for (const role of ['busy', 'blocked']) {
    const w = new Worker(__filename, { workerData: { role, shared } });
    w.on('message', () => {
      if (++up === 2) {
        process.stdout.write(`READY ${process.pid}\n`);
        const rl = require('readline').createInterface({ input: process.stdin });
        rl.on('line', () => process.stdout.write(`TICK ${Atomics.load(shared, 0)} ${usr2}\n`));
        rl.on('close', () => process.exit(0));
      }
    });
  }
} else if (workerData.role === 'busy') {
  parentPort.postMessage('up');
  let x = 1;
  for (;;) {
    for (let i = 0; i < 1000000; i++) x = (x * 1103515245 + 12345) | 0;
    Atomics.add(workerData.shared, 0, 1 + (x & 0));
  }
} else {
  parentPort.postMessage('up');
  for (;;) Atomics.wait(workerData.shared, 1, 0);
}
