// src/nat: desired state -> rule IR -> (a) iptables-save text, (b) compiled Matcher, (c) trace.
export * from './ip';
export * from './model/state';
export * from './model/config';
export * from './rules/chain-names';
export * from './rules/ir';
export * from './rules/build';
export * from './rules/render';
export * from './eval/recent';
export * from './eval/matcher';
export * from './rules/import';
export * from './eval/trace';
