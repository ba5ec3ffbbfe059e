// Load generators and their parsers: ab, iperf3, nstat and the probe (scripts/bench/probe.ts).
import { runIn, mustRun } from './exec';
import { PROBE } from './env';
import { nsText } from './exec';

export interface AbResult { complete: number; failed: number; non2xx: number; rps: number; seconds: number; p50Ms: number; p99Ms: number; meanMs: number }

export function parseAb(out: string): AbResult {
  const num = (re: RegExp) => { const m = re.exec(out); return m ? Number(m[1]) : NaN; };
  const pct = (p: number) => num(new RegExp(`^\\s*${p}%\\s+(\\d+)`, 'm'));
  const r: AbResult = {
    complete: num(/^Complete requests:\s+(\d+)/m),
    failed: num(/^Failed requests:\s+(\d+)/m),
    non2xx: num(/^Non-2xx responses:\s+(\d+)/m),
    rps: num(/^Requests per second:\s+([\d.]+)/m),
    seconds: num(/^Time taken for tests:\s+([\d.]+)/m),
    p50Ms: pct(50), p99Ms: pct(99),
    meanMs: num(/^Time per request:\s+([\d.]+) \[ms\] \(mean\)/m),
  };
  if (!Number.isFinite(r.non2xx)) r.non2xx = 0;
  if (!Number.isFinite(r.complete) || !Number.isFinite(r.rps)) throw new Error(`ab: cannot parse its output:\n${out.slice(0, 1500)}`);
  return r;
}

/** Short connections, HTTP/1.0 without keep-alive: ab -c 50 -t T. */
export async function ab(ns: string, url: string, seconds: number, concurrency = 50): Promise<AbResult & { cmd: string }> {
  const cmd = ['ab', '-q', '-r', '-s', '5', '-c', String(concurrency), '-t', String(seconds), '-n', '50000000', url];
  const r = await runIn(ns, cmd, (seconds + 30) * 1000);
  if (r.timedOut) throw new Error(`ab in ${ns} did not finish within ${seconds + 30} s`);
  return { ...parseAb(r.stdout + '\n' + r.stderr), cmd: cmd.join(' ') };
}

/** Absolute SNMP/netstat counters of a namespace (nstat -a: ignore and keep no history). */
export function nstat(ns: string): Record<string, number> {
  const out = nsText(ns, ['nstat', '-asz']);
  const res: Record<string, number> = {};
  for (const line of out.split('\n')) {
    const m = /^(\w+)\s+(\d+)/.exec(line);
    if (m) res[m[1]] = Number(m[2]);
  }
  return res;
}

export function delta(a: Record<string, number>, b: Record<string, number>, keys: string[]): Record<string, number> {
  const r: Record<string, number> = {};
  for (const k of keys) r[k] = (b[k] ?? 0) - (a[k] ?? 0);
  return r;
}

export interface IperfResult { gbps: number; bytes: number; retransmits: number; pps?: number; lossPct?: number; sentPps?: number; packets?: number; lost?: number; seconds: number; raw?: any }

/** iperf3 client, JSON output. `busy` servers (a previous test still closing) are retried. */
export async function iperf3(ns: string, host: string, port: number, seconds: number, opts: { streams?: number; udp?: boolean; len?: number } = {}): Promise<IperfResult & { cmd: string }> {
  const cmd = ['iperf3', '-c', host, '-p', String(port), '-t', String(seconds), '-J', '--connect-timeout', '3000'];
  if (opts.streams && opts.streams > 1) cmd.push('-P', String(opts.streams));
  if (opts.udp) cmd.push('-u', '-b', '0', '-l', String(opts.len ?? 64));
  let last = '';
  for (let attempt = 0; attempt < 4; attempt++) {
    const r = await runIn(ns, cmd, (seconds + 25) * 1000);
    let j: any;
    try { j = JSON.parse(r.stdout); } catch { j = undefined; }
    if (j && !j.error && j.end) return { ...parseIperf(j, !!opts.udp), cmd: cmd.join(' ') };
    last = j?.error ?? (r.stderr || r.stdout).slice(0, 500);
    if (!/busy|Connection refused|unable to/i.test(last)) break;
    await new Promise((res) => setTimeout(res, 1000));
  }
  throw new Error(`iperf3 ${host}:${port} from ${ns}: ${last}`);
}

export function parseIperf(j: any, udp: boolean): IperfResult {
  const e = j.end;
  if (!udp) {
    const recv = e.sum_received ?? e.sum;
    const sent = e.sum_sent ?? e.sum;
    return { gbps: recv.bits_per_second / 1e9, bytes: sent.bytes, retransmits: sent.retransmits ?? 0, seconds: recv.seconds };
  }
  // UDP: the client's end.sum carries what the server reported back (packets, lost_packets).
  const s = e.sum_received ?? e.sum;
  const sent = e.sum_sent ?? e.sum;
  const packets = s.packets ?? sent.packets;
  const lost = s.lost_packets ?? 0;
  const seconds = s.seconds ?? sent.seconds;
  const received = Math.max(0, packets - lost);
  return {
    gbps: (s.bits_per_second ?? 0) / 1e9, bytes: sent.bytes, retransmits: 0, seconds,
    packets, lost, pps: received / seconds, sentPps: packets / seconds, lossPct: packets ? (lost / packets) * 100 : 0,
  };
}

/** One connection, `count` request/response round trips of `size` bytes (µs percentiles). */
export async function rr(ns: string, host: string, port: number, count: number, size = 64): Promise<Record<string, number> & { cmd: string }> {
  const cmd = [process.execPath, PROBE, 'rr', host, String(port), String(count), String(size), String(Math.max(10_000, count * 20))];
  const r = await mustRun(ns, cmd, Math.max(15_000, count * 25));
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
  if (j.error) throw new Error(`probe rr ${host}:${port}: ${j.error}`);
  return { ...j, cmd: `node probe.js rr ${host} ${port} ${count} ${size}` };
}

/** `count` sequential new connections: connect() latency, i.e. the first packet's round trip (µs). */
export async function connectLatency(ns: string, host: string, port: number, count: number): Promise<Record<string, number> & { cmd: string }> {
  const cmd = [process.execPath, PROBE, 'connect', host, String(port), String(count), String(Math.max(10_000, count * 20))];
  const r = await mustRun(ns, cmd, Math.max(20_000, count * 30));
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
  return { ...j, cmd: `node probe.js connect ${host} ${port} ${count}` };
}

/** TCP SYNs from distinct (src, sport) pairs, written into a TUN device in `ns`. */
export async function flood(ns: string, dst: string, dport: number, start: number, count: number, rate: number): Promise<Record<string, number>> {
  const timeoutMs = Math.ceil((count / rate) * 1000 * 3) + 10_000;
  // Sources 10.1.139.100-126: in worker-1's pod CIDR (so the node routes them like pod traffic), no pod's address.
  const cmd = [process.execPath, PROBE, 'flood', 'gen0', dst, String(dport), '10.1.139.100', '27', String(start), String(count), String(rate), String(timeoutMs)];
  const r = await mustRun(ns, cmd, timeoutMs + 10_000);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
  if (j.error) throw new Error(`probe flood: ${j.error}`);
  return j;
}
