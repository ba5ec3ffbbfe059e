// The layering rules of src/ (README "Layout"), checked by test/layers.test.ts as part of `npm test`
// (by hand: `npx depcruise src`). Paths are relative to the directory the check runs in: the
// repository root, or a fixture tree under test/fixtures/ that mimics it. Type-only imports count
// too: a layer that needs another layer's types depends on it.

/** A forbidden dependency: from modules under `from` (a path regex) to modules matching `to`. */
const forbid = (name, comment, from, to) => ({ name, comment, severity: 'error', from: { path: from }, to });

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    forbid('netstack-pure', 'src/netstack is the pure wire layer: it imports nothing else from src.',
      '^src/netstack/', { path: '^src/', pathNot: '^src/netstack/' }),
    forbid('netstack-no-node', 'src/netstack does no I/O: no node:* built-ins.',
      '^src/netstack/', { dependencyTypes: ['core'] }),
    forbid('lib-leaf', 'src/lib holds shared helpers below every layer: it imports nothing from src outside itself.',
      '^src/lib/', { path: '^src/', pathNot: '^src/lib/' }),
    forbid('lower-not-upper', 'io, conntrack and nat sit below the data path: they never import datapath, control, ops, cli or daemon.',
      '^src/(io|conntrack|nat)/', { path: '^src/((datapath|control|ops|cli)/|daemon\\.ts$)' }),
    forbid('src-not-scripts-or-test', 'Shipped code never imports the scripts or the tests.',
      '^src/', { path: '^(scripts|test)/' }),
    forbid('no-cycle', 'No import cycles inside src (a lazy import() counts: it still ties the modules together).',
      '^src/', { circular: true }),
    forbid('resolvable', 'An import the checker cannot resolve would slip past every rule above.',
      '^src/', { couldNotResolve: true }),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json', '.node'] },
  },
};
