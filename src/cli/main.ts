// The `kube-tun` command: run, conntrack, stats, rules, trace, pcap, cleanup.
import { parseArgs } from 'node:util';
import * as path from 'node:path';
import pino from 'pino';
import { controlRequest, defaultControlSocket, DEFAULT_CONTROL_DIR } from '../control/control-socket';
import { DEFAULT_HEALTHZ_BIND_ADDRESS, DEFAULT_METRICS_BIND_ADDRESS } from '../ops/http';
import { loadDaemonConfigFile, mergeFlags, explicitFlags, ConfigFileError } from './config-file';
import { OPTIONS, UsageError, intFlag } from './flags';
import { CONNTRACK_TOOL, protoNumber } from '../ops/conntrack-filter';
import { TCP_STATE_NAMES } from '../conntrack';

const USAGE = `usage: kube-tun <command> [options]

  run        --config FILE [--config FILE…] --hostname-override NODE [--tun kt0] [--ct-max N]
             [--cluster-cidr CIDR] [--masquerade-all] [--rules DUMP] [--log-level info]
             [--control-socket PATH] [--no-watch] [--keep-routing] [--offload on|off]
             [--metrics-bind-address ${DEFAULT_METRICS_BIND_ADDRESS}] [--healthz-bind-address ${DEFAULT_HEALTHZ_BIND_ADDRESS}]
             [--sync-period 30s] [--min-sync-period 1s] [--ready-fd N] [--pcap FILE [--pcap-max-packets N]]
             [--daemon-config FILE] [--kubeconfig FILE]
             attach to a TUN device and do the node's service NAT (--node is an alias of
             --hostname-override; "" as a bind address disables that server; flags win over
             the KubeTunDaemonConfiguration in --daemon-config). Where Services, EndpointSlices
             and Nodes come from: with --kubeconfig FILE, that API server (watch mode); else,
             when KUBERNETES_SERVICE_HOST is set, --rules is not given and the --config files
             (if any) hold no Node, Service or EndpointSlice, the in-cluster API server
             (service account token and CA); else the --config files. In watch mode --config
             files give only the KubeTunConfiguration
  conntrack  -L | -E | -D | -C | -S  [-p tcp|udp|icmp] [-s ADDR] [-d ADDR] [--sport N] [--dport N]
             [-r|--reply-src ADDR] [-q|--reply-dst ADDR] [--state STATE] [--status ASSURED|UNREPLIED]
             [-e|--event-mask NEW,UPDATE,DESTROY] [-o extended]   list, stream events of (-E),
             delete, count (-C) or show statistics (-S) of the running daemon's connections, in
             conntrack-tools' format (entries on stdout, the summary on stderr; -D exits 1 when
             nothing matched)
  stats      packet, drop and conntrack counters of the running daemon (JSON)
  reload     re-read the config files now (as SIGHUP and a file change do)
  pcap       start FILE [--max-packets N] | stop | status   capture what enters and leaves the
             TUN (pcap, for tshark -r / wireshark), toggled in the running daemon
  rules      --config FILE… --hostname-override NODE [--cluster-cidr CIDR] [--masquerade-all]
             [--node-ip IP…] [--proxy-version modern|legacy]   print kube-proxy's iptables-save
             rules for these objects; --live prints what the running daemon has compiled
  trace      (--config FILE… | --rules DUMP) --src A --dst B [--proto tcp] [--dport P] [--sport S]
             [--local-addrs A,B] [--json]   explain what the rules do with one packet
  cleanup    [--tun kt0] [--force]   remove the TUN device, routes and policy rules kube-tun
             installed and restore the local table rule (idempotent)

  Daemon commands find it through --control-socket (default ${DEFAULT_CONTROL_DIR}/<tun>.sock in the host's
  network namespace, ${DEFAULT_CONTROL_DIR}/netns-<inode>/<tun>.sock in any other: one daemon per namespace).
`;

/** Commands that take positional arguments (the rest reject them). */
const POSITIONAL_COMMANDS = new Set(['pcap']);

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '-h' || cmd === '--help' || cmd === 'help') { process.stdout.write(USAGE); return cmd ? 0 : 2; }
  let values: any, positionals: string[], tokens: ReturnType<typeof parseArgs>['tokens'];
  try {
    ({ values, positionals, tokens } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true, tokens: true }));
  } catch (e: any) {
    throw new UsageError(e.message);
  }
  if (values.help) { process.stdout.write(USAGE); return 0; }
  if (positionals.length > 0 && !POSITIONAL_COMMANDS.has(cmd)) throw new UsageError(`${cmd}: unexpected argument "${positionals[0]}"`);
  if (values['daemon-config']) {
    try {
      values = mergeFlags(loadDaemonConfigFile(values['daemon-config']), values, explicitFlags(tokens));
    } catch (e) {
      if (e instanceof ConfigFileError) throw new UsageError(`--daemon-config: ${e.message}`);
      throw e;
    }
  }
  const socket = values['control-socket'] ?? defaultControlSocket(values.tun);
  const ask = (req: { cmd: string; args?: Record<string, unknown> }) => askDaemon(socket, req);
  switch (cmd) {
    case 'run':
      return (await import('./run')).run(values, pino({ level: values['log-level'] }, pino.destination({ dest: 2, sync: true })));
    case 'conntrack': {
      const args = await conntrackFilter(values);
      const n = [values.L, values.E, values.D, values.C, values.S].filter(Boolean).length;
      if (n !== 1) throw new UsageError('conntrack: give exactly one of -L, -E, -D, -C, -S');
      if (values['event-mask'] && !values.E) throw new UsageError('conntrack: -e/--event-mask goes with -E');
      if (values.output !== undefined && values.output !== 'extended') throw new UsageError(`conntrack: -o "${values.output}": only -o extended is supported`);
      if (values.output !== undefined && !values.L && !values.D) throw new UsageError('conntrack: -o extended goes with -L or -D');
      if (values.E) return streamEvents(socket, args);
      if (values.C) return ask({ cmd: 'conntrack-count' });
      if (values.S) return ask({ cmd: 'conntrack-stats' });
      return askConntrack(socket, { cmd: values.L ? 'conntrack-list' : 'conntrack-delete', args: { ...args, extended: values.output === 'extended' } });
    }
    case 'stats':
      return ask({ cmd: 'stats' });
    case 'reload':
      return ask({ cmd: 'reload' });
    case 'rules':
      if (values.live) return ask({ cmd: 'rules' });
      return (await import('./rules')).rules(values);
    case 'trace':
      return (await import('./rules')).trace(values);
    case 'pcap': {
      const [action = 'status', file, ...more] = positionals;
      if (more.length) throw new UsageError(`pcap: unexpected argument "${more[0]}"`);
      if (action === 'start') {
        if (!file) throw new UsageError('pcap start FILE [--max-packets N]: give the file to write');
        const maxPackets = intFlag(values['max-packets'] ?? values['pcap-max-packets'], 'max-packets');
        return ask({ cmd: 'pcap', args: { action, file: path.resolve(file), maxPackets } });
      }
      if (action !== 'stop' && action !== 'status') throw new UsageError(`pcap: unknown action "${action}" (start FILE, stop, status)`);
      if (file) throw new UsageError(`pcap ${action}: unexpected argument "${file}"`);
      return ask({ cmd: 'pcap', args: { action } });
    }
    case 'cleanup':
      return (await import('./run')).cleanup(values);
    default:
      throw new UsageError(`unknown command "${cmd}"\n\n${USAGE}`);
  }
}

/**
 * One request to the daemon; its answer goes to stdout, or to stderr with exit code 1 when the
 * daemon says "error: ...".
 */
async function askDaemon(socket: string, req: { cmd: string; args?: Record<string, unknown> }): Promise<number> {
  let head = '', decided: 'out' | 'err' | undefined;
  await controlRequest(socket, req, (s) => {
    if (decided === undefined) {
      head += s;
      if (head.length < 7 && !head.includes('\n')) return;
      decided = head.startsWith('error: ') ? 'err' : 'out';
      s = head;
    }
    (decided === 'err' ? process.stderr : process.stdout).write(decided === 'err' ? s.replace(/^error: /, 'kube-tun: ') : s);
  });
  if (decided === undefined && head) process.stdout.write(head);
  return decided === 'err' ? 1 : 0;
}

/**
 * conntrack-tools' selection options, checked here so that a typo is a usage error (exit 2) that
 * names the value, not an empty listing.
 */
async function conntrackFilter(values: Record<string, any>): Promise<Record<string, unknown>> {
  const { parseIPv4Strict } = await import('../nat'); // loaded for conntrack only: the CLI starts fast
  const f = {
    proto: values.proto, src: values.src, dst: values.dst,
    sport: intFlag(values.sport, 'sport'), dport: intFlag(values.dport, 'dport'),
    replySrc: values['reply-src'], replyDst: values['reply-dst'], state: values.state, status: values.status,
    eventMask: values['event-mask'],
  };
  if (f.proto !== undefined) {
    try { protoNumber(f.proto); } catch { throw new UsageError(`conntrack: -p "${f.proto}": unknown protocol (tcp, udp, icmp, … or a number 0-255)`); }
  }
  if (f.state !== undefined && !TCP_STATE_NAMES.includes(String(f.state).toUpperCase())) {
    throw new UsageError(`conntrack: --state "${f.state}": not a TCP state (${TCP_STATE_NAMES.join(', ')})`);
  }
  if (f.status !== undefined && !['ASSURED', 'UNREPLIED'].includes(String(f.status).toUpperCase())) {
    throw new UsageError(`conntrack: --status "${f.status}": not a status kube-tun filters on (ASSURED, UNREPLIED)`);
  }
  for (const [flag, v] of [['-s', f.src], ['-d', f.dst], ['-r', f.replySrc], ['-q', f.replyDst]] as const) {
    if (v !== undefined && parseIPv4Strict(String(v)) === null) throw new UsageError(`conntrack: ${flag} "${v}": not an IPv4 address`);
  }
  return f;
}

/**
 * `conntrack -L` / `-D` as conntrack-tools answers: the entries on stdout (the daemon formats
 * them, `-o extended` included), the "N flow entries have been shown/deleted." summary on stderr;
 * `-D` exits 1 when nothing matched.
 */
async function askConntrack(socket: string, req: { cmd: string; args?: Record<string, unknown> }): Promise<number> {
  let partial = '', failed = false, deleted = -1;
  const line = (l: string) => {
    if (l.startsWith('error: ')) { failed = true; process.stderr.write(`kube-tun: ${l.slice(7)}\n`); return; }
    if (l.startsWith(`${CONNTRACK_TOOL}:`)) {
      process.stderr.write(`${l}\n`);
      const m = / (\d+) flow entries have been deleted\./.exec(l);
      if (m) deleted = Number(m[1]);
      return;
    }
    process.stdout.write(`${l}\n`);
  };
  await controlRequest(socket, req, (s) => {
    partial += s;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const l of lines) line(l);
  });
  if (partial) line(partial);
  return failed || deleted === 0 ? 1 : 0;
}

/** `conntrack -E`: stream until interrupted, then print the count to stderr in conntrack-tools' format. */
async function streamEvents(socket: string, args: Record<string, unknown>): Promise<number> {
  let events = 0, partial = '';
  const summary = () => process.stderr.write(`${CONNTRACK_TOOL}: ${events} flow events have been shown.\n`);
  const onSignal = () => { summary(); process.exit(0); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let failed = false;
  await controlRequest(socket, { cmd: 'conntrack-events', args }, (s) => {
    if (events === 0 && partial === '' && s.startsWith('error: ')) failed = true;
    if (failed) { process.stderr.write(s.replace(/^error: /, 'kube-tun: ')); return; }
    process.stdout.write(s);
    partial += s;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    events += lines.filter((l) => l.startsWith(' ') || l.startsWith('[')).length;
  });
  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  if (failed) return 1;
  summary();
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => { if (code !== 0) process.exitCode = code; },
    (e) => {
      process.stderr.write(`kube-tun: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = e instanceof UsageError ? 2 : 1;
    },
  );
}
