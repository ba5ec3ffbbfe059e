// The pipeline's ICMP-error path (RELATED to a tracked connection) at unit level: hand-built
// packets in a PacketBatch, no TUN and no namespace.
import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { PacketBatch } from '../src/io';
import { buildPacket, parsePacket, Ipv4Repr, IPPROTO_TCP, TCP_SYN, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH } from '../src/netstack';
import { ConntrackTable, DIR_ORIGINAL, Tuple } from '../src/conntrack';
import { buildRules, compileMatcher, loadConfig, makeNodeSettings, parseIPv4 } from '../src/nat';
import { Pipeline, DROP_ICMP_NO_CONN, C_TX_LOCAL } from '../src/datapath/pipeline';

const ROOT = path.resolve(__dirname, '..');
const ip = parseIPv4;
const CLIENT = ip('10.1.139.84'), VIP = ip('10.99.64.233'), BACKEND = ip('10.1.236.141');
/** The kernel's default nf_conntrack_tcp_timeout_syn_sent: an entry after a lone SYN lives this long. */
const SYN_SENT_MS = 120_000;

function pipeline(): Pipeline {
  const state = loadConfig(path.join(ROOT, 'lab/cluster.yaml'));
  const node = makeNodeSettings(state, { hostnameOverride: 'worker-2' });
  const ct = new ConntrackTable({ max: 64, seed: 1 });
  return new Pipeline({
    nodeIP: ip('192.168.2.2'), tunnelAddress: 0, serviceNet: ip('10.96.0.0'), serviceMask: ip('255.240.0.0'),
    remoteNodes: [], tunnelMtu: 1480, fullyRandom: true, avoidReuseMs: 0,
  }, compileMatcher(buildRules(state, node), node), ct);
}

/** CLIENT:40000 -> VIP:9999 DNAT'ed to BACKEND:8080, tracked from one SYN at t = 0. */
function track(p: Pipeline): number {
  const slot = p.ct.create(new Tuple(IPPROTO_TCP, CLIENT, VIP, 40000, 9999), new Tuple(IPPROTO_TCP, BACKEND, CLIENT, 8080, 40000), 0);
  expect(p.ct.update(slot, DIR_ORIGINAL, TCP_SYN, 0, 60, 0)).toBe(true);
  return slot;
}

/** BACKEND answers the translated SYN (CLIENT:40000 -> BACKEND:8080) with port unreachable. */
function icmpErrorBatch(): PacketBatch {
  const quoted = buildPacket({ src: CLIENT, dst: BACKEND, tcp: { sport: 40000, dport: 8080, flags: TCP_SYN } });
  const b = new PacketBatch(1);
  b.push(buildPacket({ src: BACKEND, dst: CLIENT, icmp: { type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, quoted } }));
  return b;
}

/** Outer source and quoted destination of the packet the pipeline let through. */
function seen(b: PacketBatch): { outerSrc: number; quotedDst: number } {
  const out = parsePacket(b.slab, b.offs[0], b.lens[0]);
  return { outerSrc: out.ip.src, quotedDst: Ipv4Repr.parse(out.icmp!.payload!).dst };
}

describe('pipeline: ICMP errors about a tracked connection', () => {
  it('a live entry: the error is un-NATed to the service address', () => {
    const p = pipeline();
    track(p);
    const b = icmpErrorBatch();
    p.processTunBatch(b, SYN_SENT_MS - 1);
    expect(p.drops[DROP_ICMP_NO_CONN]).toBe(0);
    expect(seen(b)).toEqual({ outerSrc: VIP, quotedDst: VIP });
    expect(p.counters[C_TX_LOCAL]).toBe(1);
  });

  it('an expired entry is not matched: the error passes unchanged and the entry is reaped', () => {
    const p = pipeline();
    track(p);
    const b = icmpErrorBatch();
    p.processTunBatch(b, SYN_SENT_MS);
    expect(p.drops[DROP_ICMP_NO_CONN]).toBe(1);
    expect(seen(b)).toEqual({ outerSrc: BACKEND, quotedDst: BACKEND });
    expect(p.ct.size).toBe(0);
    expect(p.ct.counters.expirations).toBe(1);
  });
});
