#!/usr/bin/env node
'use strict';
// Runs the compiled CLI (npm ci / npm run build produce dist/).
const path = require('node:path');
const fs = require('node:fs');
const entry = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
if (!fs.existsSync(entry)) {
  process.stderr.write('kube-tun: not built yet; run `npm run build` (npm ci does it too)\n');
  process.exit(1);
}
require(entry).main(process.argv.slice(2)).then(
  (code) => { if (code) process.exitCode = code; },
  (e) => {
    process.stderr.write(`kube-tun: ${e && e.message ? e.message : String(e)}\n`);
    process.exitCode = e && e.constructor && e.constructor.name === 'UsageError' ? 2 : 1;
  },
);
