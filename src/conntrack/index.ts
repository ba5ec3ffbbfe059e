// Connection tracking: tuples, the table, protocol state machines, timeouts, listings, and the
// MASQUERADE port choice. Stores NAT bindings (as reply tuples); src/nat decides them.
export * from './tuple';
export * from './types';
export * from './table';
export * from './tcp-state';
export * from './timeouts';
export * from './format';
export * from './masquerade';
export { ReleasedTuples } from './released';
export { tupleHash, tupleHashFast } from './hash';
