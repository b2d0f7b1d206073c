// Generates the TypeScript declarations of wit/plugin.wit for JS plugin
// authors (templates/js/types/), with jco's type generator:
//
//   node plugins/js/wit-types.mjs TOOLCHAIN WIT_FILE OUT_DIR
//
// TOOLCHAIN is the directory whose node_modules holds jco (scripts/toolchains
// installs it into target/toolchains/js). jco 1.35's `guest-types` command
// cannot read a WIT path on some machines ("os error 44": its WASI shim sees
// no files), so the WIT is read here and passed to the generator as source.
// The tests run this and fail when the committed files differ.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const WORLDS = ['delivery-plugin', 'event-plugin', 'enrichd-plugin'];

const [toolchain, witFile, outDir] = process.argv.slice(2);
if (!toolchain || !witFile || !outDir) {
  console.error('usage: node wit-types.mjs TOOLCHAIN WIT_FILE OUT_DIR');
  process.exit(2);
}
// jco's generator component; not in the package's exports, hence the path.
const bindgen = join(
  toolchain,
  'node_modules/@bytecodealliance/jco-transpile/vendor/js-component-bindgen-component.js',
);
const { $init, generateTypes } = await import(pathToFileURL(bindgen));
await $init;
const source = await readFile(witFile, 'utf8');
const files = new Map();
for (const world of WORLDS) {
  const generated = generateTypes(world, {
    wit: { tag: 'source', val: source },
    world,
    guest: true,
    features: { tag: 'list', val: [] },
  });
  for (const [name, bytes] of generated) files.set(name, bytes);
}
for (const [name, bytes] of [...files].sort()) {
  const path = join(outDir, name);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
}
console.error(`wrote ${files.size} files to ${outDir}`);
