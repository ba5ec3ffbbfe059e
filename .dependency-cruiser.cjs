// The layering rules of src/ (README "Layout"), checked by test/layers.test.ts as part of `npm test`.
// Paths are relative to the directory the check runs in: the repository root, or a fixture tree
// under test/fixtures/ that mimics it. Type-only imports count too: a layer that needs another
// layer's types depends on it.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'netstack-pure',
      comment: 'src/netstack is the pure wire layer: it imports nothing else from src.',
      severity: 'error',
      from: { path: '^src/netstack/' },
      to: { path: '^src/', pathNot: '^src/netstack/' },
    },
    {
      name: 'netstack-no-node',
      comment: 'src/netstack does no I/O: no node:* built-ins.',
      severity: 'error',
      from: { path: '^src/netstack/' },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'lib-leaf',
      comment: 'src/lib holds shared helpers below every layer: it imports nothing from src outside itself.',
      severity: 'error',
      from: { path: '^src/lib/' },
      to: { path: '^src/', pathNot: '^src/lib/' },
    },
    {
      name: 'lower-not-upper',
      comment: 'io, conntrack and nat sit below the data path: they never import datapath, control, ops, cli or daemon.',
      severity: 'error',
      from: { path: '^src/(io|conntrack|nat)/' },
      to: { path: '^src/((datapath|control|ops|cli)/|daemon\\.ts$)' },
    },
    {
      name: 'src-not-scripts-or-test',
      comment: 'Shipped code never imports the scripts or the tests.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(scripts|test)/' },
    },
    {
      name: 'no-cycle',
      comment: 'No import cycles inside src (a lazy import() counts: it still ties the modules together).',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'resolvable',
      comment: 'An import the checker cannot resolve would slip past every rule above.',
      severity: 'error',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json', '.node'] },
  },
};
