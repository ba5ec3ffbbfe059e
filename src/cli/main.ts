// The `kube-tun` command: run, conntrack, stats, rules, trace, cleanup.
import { parseArgs } from 'node:util';
import pino from 'pino';
import { controlRequest, defaultControlSocket } from '../daemon/control';

const USAGE = `usage: kube-tun <command> [options]

  run        --config FILE [--config FILE…] --hostname-override NODE [--tun kt0] [--ct-max N]
             [--cluster-cidr CIDR] [--masquerade-all] [--rules DUMP] [--log-level info]
             [--control-socket PATH] [--no-watch]
             attach to a TUN device and do the node's service NAT (--node is an alias of
             --hostname-override)
  conntrack  -L | -E | -D  [-p tcp|udp|icmp] [-s ADDR] [-d ADDR] [--sport N] [--dport N]
             [-r|--reply-src ADDR] [-q|--reply-dst ADDR] [--state STATE] [--status ASSURED|UNREPLIED]
             list, stream events of, or delete the running daemon's connections, in
             conntrack-tools' format
  stats      packet, drop and conntrack counters of the running daemon (JSON)
  rules      --config FILE… --hostname-override NODE [--cluster-cidr CIDR] [--masquerade-all]
             [--node-ip IP…] [--proxy-version modern|legacy]   print kube-proxy's iptables-save
             rules for these objects; --live prints what the running daemon has compiled
  trace      (--config FILE… | --rules DUMP) --src A --dst B [--proto tcp] [--dport P] [--sport S]
             [--local-addrs A,B] [--json]   explain what the rules do with one packet
  cleanup    [--tun kt0]   remove the TUN device, routes and policy rules kube-tun installed

  Daemon commands find it through --control-socket (default /run/kube-tun/<tun>.sock).
`;

const OPTIONS = {
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
  live: { type: 'boolean' },
  L: { type: 'boolean', short: 'L' },
  E: { type: 'boolean', short: 'E' },
  D: { type: 'boolean', short: 'D' },
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

export class UsageError extends Error {}

function num(v: string | undefined, name: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name}: expected an integer ${min}-${max}, got "${v}"`);
  return n;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '-h' || cmd === '--help' || cmd === 'help') { process.stdout.write(USAGE); return cmd ? 0 : 2; }
  let values: any;
  try {
    ({ values } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: false, strict: true }));
  } catch (e: any) {
    throw new UsageError(e.message);
  }
  if (values.help) { process.stdout.write(USAGE); return 0; }
  const socket = values['control-socket'] ?? defaultControlSocket(values.tun);
  const ask = async (req: { cmd: string; args?: Record<string, unknown> }) => {
    await controlRequest(socket, req, (s) => process.stdout.write(s));
  };
  switch (cmd) {
    case 'run':
      return (await import('./run')).run(values, pino({ level: values['log-level'] }, pino.destination(2)));
    case 'conntrack': {
      const args = {
        proto: values.proto, src: values.src, dst: values.dst,
        sport: num(values.sport, 'sport', 0, 65535), dport: num(values.dport, 'dport', 0, 65535),
        replySrc: values['reply-src'], replyDst: values['reply-dst'], state: values.state, status: values.status,
      };
      const n = [values.L, values.E, values.D].filter(Boolean).length;
      if (n !== 1) throw new UsageError('conntrack: give exactly one of -L, -E, -D');
      if (values.E) {
        await ask({ cmd: 'conntrack-events', args });
        return 0;
      }
      await ask({ cmd: values.L ? 'conntrack-list' : 'conntrack-delete', args });
      return 0;
    }
    case 'stats':
      await ask({ cmd: 'stats' });
      return 0;
    case 'rules':
      if (values.live) { await ask({ cmd: 'rules' }); return 0; }
      return (await import('./rules')).rules(values);
    case 'trace':
      return (await import('./rules')).trace(values);
    case 'cleanup':
      return (await import('./run')).cleanup(values);
    default:
      throw new UsageError(`unknown command "${cmd}"\n\n${USAGE}`);
  }
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
