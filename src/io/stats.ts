// I/O counters for a scrape (cold path: reads sysfs and allocates; never call it per packet).
//
// Two sources:
// - the native counters of a TunDevice / IpipSocket (BatchFd.stats(), see READ_STAT/WRITE_STAT in
//   native.ts): what our own read/write calls saw;
// - the kernel's counters of the TUN device, /sys/class/net/<tun>/statistics and tx_queue_len,
//   which see what never reaches us. For a TUN, "tx" is the kernel handing packets to the reader
//   (us) and "rx" is what we write into it. So:
//     txDropped  packets the kernel dropped because our read queue (tx_queue_len long) was full:
//                the reader is too slow (the "51 % of small UDP dropped" case);
//     rxDropped  packets we wrote that the kernel dropped (e.g. a bad vnet header, memory);
//     txQueueLen the length of that read queue (ip link set <tun> txqueuelen N).
//   Read them in the TUN's network namespace (sysfs shows the namespace of the reading process's
//   mount; `ip netns exec` remounts it).
//
// ioDropCounts() folds both into one record keyed by drop reason, what a
// `kubetun_io_drops_total{reason}` counter family exposes.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { PacketIoStats } from './fd';

export const SYS_CLASS_NET = '/sys/class/net';

/** Kernel-side counters of a network device (TUN), from sysfs. */
export interface TunSysStats {
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  txDropped: number;
  rxErrors: number;
  txErrors: number;
  txQueueLen: number;
}

function readNumber(file: string): number {
  return Number(fs.readFileSync(file, 'utf8').trim());
}

/**
 * The kernel's counters of device `name`, or null when the device does not exist (removed under us).
 * `root` is for tests (a fake sysfs tree); it defaults to /sys/class/net.
 */
export function tunSysStats(name: string, root: string = SYS_CLASS_NET): TunSysStats | null {
  if (name === '' || name.includes('/') || name === '.' || name === '..') return null;
  const dir = path.join(root, name);
  try {
    const st = path.join(dir, 'statistics');
    return {
      rxPackets: readNumber(path.join(st, 'rx_packets')),
      txPackets: readNumber(path.join(st, 'tx_packets')),
      rxDropped: readNumber(path.join(st, 'rx_dropped')),
      txDropped: readNumber(path.join(st, 'tx_dropped')),
      rxErrors: readNumber(path.join(st, 'rx_errors')),
      txErrors: readNumber(path.join(st, 'tx_errors')),
      txQueueLen: readNumber(path.join(dir, 'tx_queue_len')),
    };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/** Drop reasons of ioDropCounts, i.e. the label values of kubetun_io_drops_total{reason}. */
export const IO_DROP_REASONS = [
  'tun_queue_full', // kernel: our TUN read queue was full (tx_dropped)
  'tun_rx_dropped', // kernel: dropped a packet we wrote into the TUN (rx_dropped)
  'tun_read_oversize', // a packet longer than the batch slot, discarded
  'tun_read_error',
  'tun_write_backpressure', // EAGAIN/ENOBUFS stopped a write batch; the rest was not written
  'tun_write_error', // the kernel rejected a packet we wrote (see lastWriteErrno)
  'ipip_read_oversize',
  'ipip_read_error',
  'ipip_write_backpressure',
  'ipip_write_error',
] as const;
export type IoDropReason = (typeof IO_DROP_REASONS)[number];

/** Everything that was dropped at the I/O layer, by reason. Absent sources count 0. */
export function ioDropCounts(src: {
  tun?: PacketIoStats;
  ipip?: PacketIoStats;
  tunSys?: TunSysStats | null;
}): Record<IoDropReason, number> {
  const t = src.tun;
  const i = src.ipip;
  const s = src.tunSys ?? null;
  return {
    tun_queue_full: s === null ? 0 : s.txDropped,
    tun_rx_dropped: s === null ? 0 : s.rxDropped,
    tun_read_oversize: t?.readOversizeDrops ?? 0,
    tun_read_error: t?.readErrors ?? 0,
    tun_write_backpressure: t?.writeBackpressureDrops ?? 0,
    tun_write_error: t?.writeErrors ?? 0,
    ipip_read_oversize: i?.readOversizeDrops ?? 0,
    ipip_read_error: i?.readErrors ?? 0,
    ipip_write_backpressure: i?.writeBackpressureDrops ?? 0,
    ipip_write_error: i?.writeErrors ?? 0,
  };
}
