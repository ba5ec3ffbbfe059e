// The daemon's own configuration file, the way KubeProxyConfiguration mirrors kube-proxy's flags:
//
//   apiVersion: kubetun.dev/v1alpha1
//   kind: KubeTunDaemonConfiguration
//   hostnameOverride: worker-1          # --hostname-override
//   tun: kt0                            # --tun
//   ctMax: 262144                       # --ct-max
//   clusterCIDR: 10.244.0.0/16          # --cluster-cidr
//   masqueradeAll: false                # --masquerade-all
//   nodeIPs: [192.168.56.11]            # --node-ip (repeatable)
//   metricsBindAddress: 127.0.0.1:10249 # --metrics-bind-address ("" disables)
//   healthzBindAddress: 127.0.0.1:10256 # --healthz-bind-address ("" disables)
//   syncPeriod: 30s                     # --sync-period (healthz goes stale after 2x this)
//   logLevel: info                      # --log-level
//   controlSocket: /run/kube-tun/kt0.sock # --control-socket
//   pcap: /tmp/kt0.pcap                 # --pcap
//   pcapMaxPackets: 10000               # --pcap-max-packets
//   config: [cluster.yaml]              # --config (repeatable): Services, EndpointSlices, Nodes
//   rules: dump.txt                     # --rules
//   watch: true                         # --no-watch is watch: false
//   keepRouting: false                  # --keep-routing
//   offload: on                         # --offload on|off (true/false accepted too)
//
// Rules: exactly one YAML document; apiVersion and kind are required; unknown keys are an error
// naming the key, the file and the line (with a suggestion); a wrong type names the key. A key
// set to null (`tun:`) counts as not set. Relative paths (config, rules, pcap, controlSocket) are
// resolved against the file's directory, like kubelet does for its config file. Flags win over
// the file: see mergeFlags.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { parseCidrStrict, parseIPv4Strict } from '../nat';
import { parseBindAddress } from '../ops/http';
import { INT_FLAG_RANGE, interfaceNameProblem } from './flags';
import type { FlagName, IntFlagName } from './flags';

export const DAEMON_CONFIG_API_VERSION = 'kubetun.dev/v1alpha1';
export const DAEMON_CONFIG_KIND = 'KubeTunDaemonConfiguration';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** What the file can set (camelCase, as written in the file; paths made absolute). */
export interface DaemonFileOptions {
  hostnameOverride?: string;
  tun?: string;
  ctMax?: number;
  clusterCIDR?: string;
  masqueradeAll?: boolean;
  nodeIPs?: string[];
  metricsBindAddress?: string;
  healthzBindAddress?: string;
  /** Go-style duration as written ("30s", "1m30s"); parseDuration() gives ms. */
  syncPeriod?: string;
  logLevel?: (typeof LOG_LEVELS)[number];
  controlSocket?: string;
  pcap?: string;
  pcapMaxPackets?: number;
  config?: string[];
  rules?: string;
  watch?: boolean;
  keepRouting?: boolean;
  offload?: 'on' | 'off';
}

export class ConfigFileError extends Error {
  constructor(message: string) { super(message); this.name = 'ConfigFileError'; }
}

type Kind = 'onOff' | 'string' | 'tun' | 'int' | 'boolean' | 'cidr' | 'ipList' | 'bindAddress' | 'duration' | 'logLevel' | 'path' | 'pathList';
/** `int` keys take their flag's INT_FLAG_RANGE. */
type KeySpec = { flag: IntFlagName; kind: 'int'; invert?: never } | { flag: FlagName; kind: Exclude<Kind, 'int'>; invert?: boolean };

/** Key -> flag of `kube-tun run` (the value form parseArgs produces). */
export const DAEMON_CONFIG_KEYS: { readonly [K in keyof Required<DaemonFileOptions>]: KeySpec } = {
  hostnameOverride: { flag: 'hostname-override', kind: 'string' },
  tun: { flag: 'tun', kind: 'tun' },
  ctMax: { flag: 'ct-max', kind: 'int' },
  clusterCIDR: { flag: 'cluster-cidr', kind: 'cidr' },
  masqueradeAll: { flag: 'masquerade-all', kind: 'boolean' },
  nodeIPs: { flag: 'node-ip', kind: 'ipList' },
  metricsBindAddress: { flag: 'metrics-bind-address', kind: 'bindAddress' },
  healthzBindAddress: { flag: 'healthz-bind-address', kind: 'bindAddress' },
  syncPeriod: { flag: 'sync-period', kind: 'duration' },
  logLevel: { flag: 'log-level', kind: 'logLevel' },
  controlSocket: { flag: 'control-socket', kind: 'path' },
  pcap: { flag: 'pcap', kind: 'path' },
  pcapMaxPackets: { flag: 'pcap-max-packets', kind: 'int' },
  config: { flag: 'config', kind: 'pathList' },
  rules: { flag: 'rules', kind: 'path' },
  watch: { flag: 'no-watch', kind: 'boolean', invert: true },
  keepRouting: { flag: 'keep-routing', kind: 'boolean' },
  offload: { flag: 'offload', kind: 'onOff' },
};

const KEY_NAMES = Object.keys(DAEMON_CONFIG_KEYS) as (keyof DaemonFileOptions)[];

/** Go time.ParseDuration subset: "30s", "1m30s", "500ms", "1h", "1.5s". Returns ms; throws on bad text. */
export function parseDuration(s: string): number {
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;
  if (s === '0') return 0;
  let ms = 0, at = 0;
  while (at < s.length) {
    re.lastIndex = at;
    const m = re.exec(s);
    if (!m) throw new Error(`invalid duration "${s}" (e.g. 30s, 1m30s, 500ms)`);
    ms += Number(m[1]) * units[m[2]];
    at = re.lastIndex;
  }
  if (s.length === 0) throw new Error('invalid duration "" (e.g. 30s, 1m30s, 500ms)');
  return ms;
}

function levenshtein(a: string, b: string): number {
  const prev = new Array<number>(b.length + 1), cur = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    for (let j = 0; j <= b.length; j++) prev[j] = cur[j];
  }
  return prev[b.length];
}

/** The known key an unknown one was probably meant to be, if any. */
export function suggestKey(key: string): string | undefined {
  const camel = key.replace(/[-_]([a-zA-Z])/g, (_, c: string) => c.toUpperCase());
  const lower = camel.toLowerCase();
  for (const k of KEY_NAMES) if (k.toLowerCase() === lower) return k;
  // A flag name written as a key: --no-watch / --node-ip
  for (const k of KEY_NAMES) if (DAEMON_CONFIG_KEYS[k].flag === key) return k;
  let best: string | undefined, bestD = Infinity;
  for (const k of KEY_NAMES) {
    const d = levenshtein(lower, k.toLowerCase());
    if (d < bestD) { bestD = d; best = k; }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(best.length / 4)) ? best : undefined;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  return `${typeof v} ${String(v)}`;
}

/** Validates one value; returns the normalized value or throws a message (without file/key prefix). */
function checkValue(spec: KeySpec, v: unknown, baseDir: string): unknown {
  const expect = (what: string) => new Error(`expected ${what}, got ${typeName(v)}`);
  switch (spec.kind) {
    case 'string':
      if (typeof v !== 'string' || v === '') throw expect('a non-empty string');
      return v;
    case 'tun': {
      if (typeof v !== 'string') throw expect('an interface name');
      const problem = interfaceNameProblem(v);
      if (problem) throw new Error(problem);
      return v;
    }
    case 'int': {
      if (typeof v !== 'number' || !Number.isInteger(v)) throw expect('an integer');
      const [min, max] = INT_FLAG_RANGE[spec.flag];
      if (v < min || v > max) throw new Error(`expected an integer ${min}-${max}, got ${v}`);
      return v;
    }
    case 'boolean':
      if (typeof v !== 'boolean') throw expect('true or false');
      return v;
    case 'onOff':
      if (v === true || v === 'on') return 'on';
      if (v === false || v === 'off') return 'off';
      throw expect('on or off');
    case 'cidr': {
      if (typeof v !== 'string') throw expect('a CIDR such as 10.244.0.0/16');
      for (const part of v.split(',')) {
        if (parseCidrStrict(part.trim()) === null) throw new Error(`"${part.trim()}" is not an IPv4 CIDR such as 10.244.0.0/16`);
      }
      return v;
    }
    case 'ipList': {
      const list = typeof v === 'string' ? [v] : v;
      if (!Array.isArray(list) || list.some((x) => typeof x !== 'string')) throw expect('a list of IP addresses');
      for (const ip of list as string[]) if (parseIPv4Strict(ip) === null) throw new Error(`"${ip}" is not an IPv4 address (four decimal parts)`);
      return list;
    }
    case 'bindAddress':
      if (typeof v !== 'string') throw expect('HOST:PORT (e.g. 127.0.0.1:10249; "" disables)');
      if (v !== '') parseBindAddress(v, 0);
      return v;
    case 'duration':
      if (typeof v !== 'string') throw expect('a duration such as 30s');
      parseDuration(v);
      return v;
    case 'logLevel':
      if (typeof v !== 'string' || !(LOG_LEVELS as readonly string[]).includes(v)) throw expect(`one of ${LOG_LEVELS.join(', ')}`);
      return v;
    case 'path':
      if (typeof v !== 'string' || v === '') throw expect('a file path');
      return path.resolve(baseDir, v);
    case 'pathList': {
      const list = typeof v === 'string' ? [v] : v;
      if (!Array.isArray(list) || list.length === 0 || list.some((x) => typeof x !== 'string' || x === '')) throw expect('a list of file paths');
      return (list as string[]).map((p) => path.resolve(baseDir, p));
    }
  }
}

/** Parses and validates the text of a daemon config file; `file` is used in messages and for relative paths. */
export function parseDaemonConfig(text: string, file: string): DaemonFileOptions {
  const lc = new YAML.LineCounter();
  const at = (node: { range?: [number, number, number] | null } | null | undefined) =>
    node?.range ? `${file}:${lc.linePos(node.range[0]).line}` : file;
  const docs = YAML.parseAllDocuments(text, { lineCounter: lc, uniqueKeys: true });
  if (!Array.isArray(docs)) throw new ConfigFileError(`${file}: not YAML`);
  const real = docs.filter((d) => d.contents !== null || d.errors.length > 0);
  for (const d of real) {
    if (d.errors.length) {
      const e = d.errors[0];
      const line = e.linePos?.[0]?.line;
      throw new ConfigFileError(`${file}${line ? `:${line}` : ''}: ${e.message.split('\n')[0]}`);
    }
  }
  if (real.length === 0) throw new ConfigFileError(`${file}: empty; expected a ${DAEMON_CONFIG_KIND} document`);
  if (real.length > 1) throw new ConfigFileError(`${at(real[1].contents as any)}: expected one ${DAEMON_CONFIG_KIND} document, found ${real.length}`);
  const root = real[0].contents;
  if (!YAML.isMap(root)) throw new ConfigFileError(`${at(root as any)}: expected a mapping (apiVersion, kind, ...)`);

  // apiVersion and kind first: a cluster manifest passed by mistake should say so, not list its keys.
  let apiVersion: unknown, kind: unknown;
  for (const pair of root.items) {
    const k = YAML.isScalar(pair.key) ? pair.key.value : undefined;
    const v = YAML.isNode(pair.value) ? pair.value.toJSON() : pair.value ?? null;
    if (k === 'apiVersion') apiVersion = v;
    else if (k === 'kind') kind = v;
  }
  if (kind !== DAEMON_CONFIG_KIND) {
    const hint = kind === 'KubeTunConfiguration' || kind === 'Service' || kind === 'EndpointSlice' || kind === 'Node' || kind === 'List'
      ? ' (that is a cluster document: pass it with --config)' : '';
    throw new ConfigFileError(`${file}: kind must be "${DAEMON_CONFIG_KIND}", got ${kind === undefined ? 'none' : JSON.stringify(kind)}${hint}`);
  }
  if (apiVersion !== DAEMON_CONFIG_API_VERSION) {
    throw new ConfigFileError(`${file}: apiVersion must be "${DAEMON_CONFIG_API_VERSION}", got ${apiVersion === undefined ? 'none' : JSON.stringify(apiVersion)}`);
  }

  const out: Record<string, unknown> = {};
  const baseDir = path.dirname(path.resolve(file));
  for (const pair of root.items) {
    const keyNode = pair.key as YAML.Scalar | null;
    const key = YAML.isScalar(keyNode) ? String(keyNode.value) : undefined;
    const where = at(keyNode as any);
    if (key === undefined) throw new ConfigFileError(`${where}: keys must be plain strings`);
    const value = YAML.isNode(pair.value) ? pair.value.toJSON() : pair.value ?? null;
    if (key === 'apiVersion' || key === 'kind') continue;
    if (!Object.prototype.hasOwnProperty.call(DAEMON_CONFIG_KEYS, key)) {
      const hint = suggestKey(key);
      throw new ConfigFileError(`${where}: unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}`);
    }
    if (value === null) continue;
    try {
      out[key] = checkValue(DAEMON_CONFIG_KEYS[key as keyof DaemonFileOptions], value, baseDir);
    } catch (e: any) {
      throw new ConfigFileError(`${where}: ${key}: ${e.message}`);
    }
  }
  return out as DaemonFileOptions;
}

/** Reads `file` and validates it (see parseDaemonConfig). Throws ConfigFileError naming the file. */
export function loadDaemonConfigFile(file: string): DaemonFileOptions {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e: any) {
    throw new ConfigFileError(`${file}: cannot read: ${e.code ?? e.message}`);
  }
  return parseDaemonConfig(text, file);
}

/**
 * parseArgs tokens -> the long names of the options given on the command line. Pass the result
 * to mergeFlags when OPTIONS have defaults (tun: 'kt0', log-level: 'info'), because then `values`
 * cannot tell "given" from "defaulted": parseArgs({ ..., tokens: true }).tokens.
 */
export function explicitFlags(tokens: ReadonlyArray<{ kind: string; name?: string }> | undefined): Set<string> {
  const s = new Set<string>();
  for (const t of tokens ?? []) if (t.kind === 'option' && t.name) s.add(t.name);
  return s;
}

/**
 * Flags win over the file. Returns a new parseArgs-style `values` record (kebab-case flag names,
 * strings where parseArgs gives strings, e.g. 'ct-max': '262144') in which every flag that was NOT
 * given on the command line takes the file's value; feed it to daemonOptions() unchanged.
 * A flag counts as given if it is in `explicit` (see explicitFlags) or, without `explicit`, if its
 * value is not undefined. `--node` (alias of --hostname-override) counts for hostnameOverride.
 * List flags (--config, --node-ip) replace the file's list; they are not appended.
 */
export function mergeFlags(fileOpts: DaemonFileOptions, flagValues: Readonly<Record<string, unknown>>, explicit?: ReadonlySet<string>): Record<string, unknown> {
  const given = (flag: string) => (explicit ? explicit.has(flag) : flagValues[flag] !== undefined);
  const out: Record<string, unknown> = { ...flagValues };
  for (const key of KEY_NAMES) {
    const v = fileOpts[key];
    if (v === undefined) continue;
    const spec = DAEMON_CONFIG_KEYS[key];
    if (given(spec.flag)) continue;
    if (key === 'hostnameOverride' && given('node')) continue;
    if (spec.kind === 'int') out[spec.flag] = String(v);
    else if (spec.invert) out[spec.flag] = !(v as boolean);
    else if (Array.isArray(v)) out[spec.flag] = [...v];
    else out[spec.flag] = v;
  }
  return out;
}
