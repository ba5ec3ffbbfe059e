// src/nat: desired state -> rule IR -> (a) iptables-save text, (b) compiled Matcher, (c) trace.
export * from './ip';
export * from './model';
export * from './config';
export * from './hash';
export * from './ir';
export * from './build';
export * from './render';
export * from './random';
export * from './recent';
export * from './matcher';
export * from './import';
export * from './trace';
