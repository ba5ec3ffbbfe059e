// The command line's facts, named once: every flag parseArgs accepts (the daemon config file's
// keys map onto these names), the integer flags' ranges, the interface-name rule, and the usage
// error the entry point turns into exit code 2. Imports nothing else from the CLI, so main, run,
// rules and config-file can all depend on it without a cycle.

/** parseArgs' option table for every `kube-tun` command. */
export const OPTIONS = {
  config: { type: 'string', multiple: true },
  rules: { type: 'string' },
  'hostname-override': { type: 'string' },
  node: { type: 'string' },
  tun: { type: 'string', default: 'kt0' },
  'ct-max': { type: 'string' },
  'cluster-cidr': { type: 'string' },
  'masquerade-all': { type: 'boolean' },
  'node-ip': { type: 'string', multiple: true },
  'proxy-version': { type: 'string' },
  'probability-format': { type: 'string' },
  'log-level': { type: 'string', default: 'info' },
  'control-socket': { type: 'string' },
  'no-watch': { type: 'boolean' },
  'keep-routing': { type: 'boolean' },
  offload: { type: 'string' },
  'metrics-bind-address': { type: 'string' },
  'healthz-bind-address': { type: 'string' },
  'sync-period': { type: 'string' },
  'min-sync-period': { type: 'string' },
  kubeconfig: { type: 'string' },
  'ready-fd': { type: 'string' },
  pcap: { type: 'string' },
  'pcap-max-packets': { type: 'string' },
  'daemon-config': { type: 'string' },
  'max-packets': { type: 'string' },
  'event-mask': { type: 'string', short: 'e' },
  force: { type: 'boolean' },
  live: { type: 'boolean' },
  L: { type: 'boolean', short: 'L' },
  E: { type: 'boolean', short: 'E' },
  D: { type: 'boolean', short: 'D' },
  C: { type: 'boolean', short: 'C' },
  S: { type: 'boolean', short: 'S' },
  output: { type: 'string', short: 'o' },
  proto: { type: 'string', short: 'p' },
  src: { type: 'string', short: 's' },
  dst: { type: 'string', short: 'd' },
  sport: { type: 'string' },
  dport: { type: 'string' },
  'reply-src': { type: 'string', short: 'r' },
  'reply-dst': { type: 'string', short: 'q' },
  state: { type: 'string' },
  status: { type: 'string' },
  'local-addrs': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** A flag of `kube-tun` (long name, as parseArgs reports it). */
export type FlagName = keyof typeof OPTIONS;

/** Bad command-line input: the entry point prints the message and exits with code 2. */
export class UsageError extends Error {}

/** Inclusive ranges of the integer flags (also what the daemon config file accepts for them). */
export const INT_FLAG_RANGE = {
  'ct-max': [16, 1 << 24],
  'ready-fd': [0, 1 << 20],
  'pcap-max-packets': [0, Number.MAX_SAFE_INTEGER],
  'max-packets': [0, Number.MAX_SAFE_INTEGER],
  sport: [0, 65535],
  dport: [0, 65535],
} as const satisfies Partial<Record<FlagName, readonly [number, number]>>;
export type IntFlagName = keyof typeof INT_FLAG_RANGE;

/** An integer flag value in its INT_FLAG_RANGE, or undefined when the flag was not given. */
export function intFlag(v: unknown, flag: IntFlagName): number | undefined {
  if (v === undefined) return undefined;
  const [min, max] = INT_FLAG_RANGE[flag];
  const n = Number(v);
  if (v === '' || !Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${flag}: expected an integer ${min}-${max}, got "${v}"`);
  return n;
}

/** Linux interface names: 1 to IFNAMSIZ - 1 = 15 bytes; kube-tun allows the portable characters. */
const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/** Why `name` cannot be a TUN device name, or undefined when it can. */
export function interfaceNameProblem(name: string): string | undefined {
  return INTERFACE_NAME.test(name) ? undefined : `"${name}" is not a valid interface name (1-15 of A-Za-z0-9_.-)`;
}

/** The --tun value, checked. */
export function tunFlag(v: unknown): string {
  const problem = interfaceNameProblem(String(v));
  if (problem) throw new UsageError(`--tun: ${problem}`);
  return String(v);
}

/** The --offload value (on|off, default on) as a boolean. */
export function offloadFlag(v: unknown): boolean {
  if (v === undefined || v === 'on') return true;
  if (v === 'off') return false;
  throw new UsageError(`--offload: expected on or off, got "${String(v)}"`);
}
