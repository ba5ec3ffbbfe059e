// Issue 13 item 8 on a real node: 64-byte UDP through a ClusterIP faster than kube-tun reads it.
// The loss happens in the TUN device's queue (the kernel's tx_dropped on kt0), below anything the
// pipeline counts: `kube-tun stats` (io section) and /metrics must show it, and agree with
// `ip -s link show kt0`.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Lab, sleep } from '../scripts/lab';
import { startKubeTun, RunningDaemon } from './support/daemon';
import { IO_DROP_REASONS } from '../src/io/stats';

const DNS_VIP = '10.96.0.10'; // kube-dns, UDP 53, dnsmasq on worker-1
/** Bounds of the flood: this long, at most this many datagrams. */
const FLOOD_MS = 2000, FLOOD_MAX = 300_000;

let lab: Lab;
let kt: RunningDaemon;

beforeAll(async () => {
  lab = await new Lab({ nodes: ['worker-1'], outside: false }).build();
  kt = await startKubeTun(lab, 'worker-1');
});

afterAll(async () => {
  await kt?.stop();
  await lab?.destroy();
});

/** 64-byte IP packets (36 bytes of UDP payload) from a pod, as fast as node sends them, bounded. */
function flood(ns: string): number {
  const out = lab.exec(ns, [process.execPath, '-e', `
    const s = require('dgram').createSocket('udp4'); const buf = Buffer.alloc(36, 120);
    const end = Date.now() + ${FLOOD_MS}; let sent = 0;
    s.on('error', () => {});
    const burst = () => {
      for (let i = 0; i < 256 && sent < ${FLOOD_MAX}; i++, sent++) s.send(buf, 53, '${DNS_VIP}');
      if (Date.now() < end && sent < ${FLOOD_MAX}) setImmediate(burst); else setTimeout(() => { console.log(sent); s.close(); }, 200);
    };
    burst();`]);
  return Number(out.trim());
}

/** kt0's kernel counters as `ip -s` reports them. */
function ipLinkStats(ns: string): { txPackets: number; txDropped: number; rxDropped: number; txQueueLen: number } {
  const [link] = JSON.parse(lab.exec(ns, ['ip', '-s', '-j', 'link', 'show', 'kt0']));
  return { txPackets: link.stats64.tx.packets, txDropped: link.stats64.tx.dropped, rxDropped: link.stats64.rx.dropped, txQueueLen: link.txqlen };
}

describe('UDP overload: TUN queue drops are visible', () => {
  it('kube-tun stats and /metrics show the TUN device\'s drops, equal to ip -s link', async () => {
    const ns = lab.nodeNs('worker-1');
    const stats = () => JSON.parse(kt.cli(['stats']));
    const before = stats();
    expect(Object.keys(before.io.drops).sort()).toEqual([...IO_DROP_REASONS].sort());
    expect(before.io.tunDevice.txQueueLen).toBeGreaterThan(0);
    expect(before.drops).not.toHaveProperty('none');

    const sent = flood(lab.podNs('client1'));
    expect(sent).toBeGreaterThan(1000);
    // Wait until kube-tun has read what the kernel queued (rxTun stops moving).
    let last = -1, s = stats();
    for (let i = 0; i < 50 && s.packets.rxTun !== last; i++) { last = s.packets.rxTun; await sleep(100); s = stats(); }

    const ip = ipLinkStats(ns);
    const dropped = s.io.tunDevice.txDropped;
    console.log(`io-drops-lab: sent ${sent} datagrams of 64 bytes in <= ${FLOOD_MS} ms; kube-tun read ${s.packets.rxTun - before.packets.rxTun}; ` +
      `kt0 tx_dropped ${dropped} (ip -s: ${ip.txDropped}), tx_queue_len ${ip.txQueueLen}; io drops ${JSON.stringify(s.io.drops)}`);
    // stats agrees with the kernel's own tools, and io.drops names the same number.
    expect(dropped).toBe(ip.txDropped);
    expect(s.io.drops.tun_queue_full).toBe(ip.txDropped);
    expect(s.io.tunDevice.txQueueLen).toBe(ip.txQueueLen);
    expect(s.io.tunDevice.rxDropped).toBe(ip.rxDropped);
    // Every datagram sent was either read by kube-tun or dropped in kt0's queue (nothing else
    // sends into kt0 here; the pod's own socket may also have refused some: <=).
    expect(s.packets.rxTun - before.packets.rxTun + dropped - before.io.tunDevice.txDropped).toBeLessThanOrEqual(sent + 10);
    // The overload did overflow the queue on this box (the 51 % loss case).
    expect(dropped - before.io.tunDevice.txDropped).toBeGreaterThan(0);

    const metrics = lab.exec(ns, ['curl', '-s', '--max-time', '5', 'http://127.0.0.1:10249/metrics']);
    const m = new RegExp(`^kubetun_io_drops_total\\{reason="tun_queue_full"\\} (\\d+)$`, 'm').exec(metrics);
    expect(Number(m?.[1])).toBe(ipLinkStats(ns).txDropped);
    expect(metrics).toMatch(new RegExp(`^kubetun_tun_queue_length ${ip.txQueueLen}$`, 'm'));
    expect(metrics).not.toMatch(/reason="none"/);
  });
});
