// src/nat: desired state -> rule IR -> (a) iptables-save text, (b) compiled Matcher, (c) trace.
export * from './ip';
export * from './model/state';
export { ConfigError } from './model/doc';
export * from './model/load';
export * from './model/node-settings';
export * from './model/topology';
export * from './model/yaml-fast';
export * from './rules/chain-names';
export * from './rules/ir';
export * from './rules/build';
export * from './rules/render';
export * from './eval/recent';
export * from './eval/matcher';
export { MatcherError, withDefaultJumps } from './eval/compile';
export type { CompileOptions } from './eval/compile';
export type { RuleCounter, RuleDescription } from './eval/introspect';
export * from './rules/import';
export * from './eval/trace';
