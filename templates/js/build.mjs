// Builds this plugin into a WebAssembly component with ComponentizeJS:
//
//   node build.mjs WORLD OUT.wasm [--default-features]
//
// (`npm run build` runs it with this project's world and name.) It uses
// ComponentizeJS's API, not `jco componentize`: jco 1.35's command line
// cannot read a WIT directory on some machines ("os error 44").
//
// Built without AOT (weval downloads a binary at build time) and without
// the `http` and `fetch-event` features: by default StarlingMonkey imports
// `wasi:http/types` for `fetch()`, which an enrichd host without the `http`
// capability refuses to load. `--default-features` keeps them (the tests
// use it to check that refusal).
import { writeFile } from 'node:fs/promises';
import { componentize } from '@bytecodealliance/componentize-js';

const [world, out, flag] = process.argv.slice(2);
if (!world || !out || (flag && flag !== '--default-features')) {
  console.error('usage: node build.mjs WORLD OUT.wasm [--default-features]');
  process.exit(2);
}
const started = Date.now();
const { component } = await componentize({
  sourcePath: 'app.js',
  witPath: 'wit',
  worldName: world,
  enableAot: false,
  disableFeatures: flag ? [] : ['http', 'fetch-event'],
});
await writeFile(out, component);
console.error(`built ${out} (${component.length} bytes) in ${Date.now() - started} ms`);
