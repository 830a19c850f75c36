// Loads the pinned npm packages (package.json / package-lock.json here) from
// the directory scripts/console-node.sh installed them into, given in
// TWINCERT_TEST_CONSOLE_NODE (the directory holding node_modules), so the
// repository itself stays free of node_modules. Without the variable, a
// node_modules beside this file (`npm ci` here) is used.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export async function load(name) {
  const root = process.env.TWINCERT_TEST_CONSOLE_NODE || dirname(fileURLToPath(import.meta.url));
  const require = createRequire(join(root, 'package.json'));
  let path;
  try {
    path = require.resolve(name);
  } catch (e) {
    throw new Error(
      `npm package ${name} not found under ${root}/node_modules: run scripts/console-node.sh ` +
        `and set TWINCERT_TEST_CONSOLE_NODE to the directory it prints (${e.message})`,
    );
  }
  return import(pathToFileURL(path).href);
}
