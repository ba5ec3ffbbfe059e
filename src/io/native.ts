// Loader and typings of the native addon (native/*.cc, built into build/Release/kube_tun_native.node).
//
// The addon is loaded lazily, once: importing src/io never needs it (tooling, pure tests). The
// counter and vnet-header layouts below are the contract with native/common.h; loadNative() checks
// them against the addon's `statsLayout` and refuses a stale build.
//
// Counters: every TunDevice/IpipSocket owns two Float64Arrays the native side accumulates into
// (never resets), indexed by READ_STAT / WRITE_STAT:
//   READ_STAT.PACKETS/BYTES     packets (and IP bytes, vnet header excluded) returned to JS
//   READ_STAT.OVERSIZE          packets discarded because they did not fit the batch's slot
//   READ_STAT.CALLS             read()/readv()/recvmmsg() system calls (the EAGAIN one included)
//   READ_STAT.ERRORS/LAST_ERRNO failed reads (not EAGAIN/EINTR) and the latest errno
//   WRITE_STAT.PACKETS/BYTES    packets written
//   WRITE_STAT.BACKPRESSURE     packets left unwritten because EAGAIN/ENOBUFS stopped a batch
//   WRITE_STAT.ERRORS/LAST_ERRNO packets the kernel rejected (skipped, never thrown), latest errno
//   WRITE_STAT.CALLS            write()/writev()/sendmmsg() system calls

import * as fs from 'node:fs';
import * as path from 'node:path';

/** Indices into `readStats` (must match native/common.h READ_STAT_*). */
export const READ_STAT = { PACKETS: 0, BYTES: 1, OVERSIZE: 2, CALLS: 3, ERRORS: 4, LAST_ERRNO: 5, LEN: 6 } as const;
/** Indices into `writeStats` (must match native/common.h WRITE_STAT_*). */
export const WRITE_STAT = { PACKETS: 0, BYTES: 1, BACKPRESSURE: 2, ERRORS: 3, LAST_ERRNO: 4, CALLS: 5, LEN: 6 } as const;

/**
 * Per-packet virtio_net_hdr fields in PacketBatch.vnet (stride VNET.FIELDS; must match native/common.h
 * VNET_*): packet i's flags are vnet[i * VNET.FIELDS + VNET.FLAGS], and so on.
 */
export const VNET = { FLAGS: 0, GSO_TYPE: 1, HDR_LEN: 2, GSO_SIZE: 3, CSUM_START: 4, CSUM_OFFSET: 5, FIELDS: 6 } as const;
// virtio_net_hdr flag bits and gso_type values: named once, in netstack's codec of the header.
export {
  VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_GSO_ECN,
} from '../netstack/vnet';

/** TUNSETOFFLOAD bits (linux/if_tun.h); TunDevice.offload holds the set that took effect. */
export const TUN_F = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08, UFO: 0x10, USO4: 0x20, USO6: 0x40 } as const;

/** Names of the TUN_F bits set in `flags`, e.g. ['CSUM', 'TSO4', 'TSO6'] (for logs). */
export function offloadNames(flags: number): string[] {
  const out: string[] = [];
  for (const [name, bit] of Object.entries(TUN_F)) if ((flags & bit) !== 0) out.push(name);
  return out;
}

/** Opaque uv_poll handle returned by the addon. */
export type PollHandle = object;

/** openTun's result: what took effect (a refused optional feature is reported here, never thrown). */
export interface OpenTunResult {
  fd: number;
  name: string;
  vnetHdr: boolean;
  /** TUN_F bits in effect (0 without vnet header). */
  offload: number;
  /** The first offload set tried (0 when none was asked for). */
  offloadRequested: number;
  /** Set when IFF_VNET_HDR was asked for but refused: "<ioctl>: <errno text>"; the device is plain. */
  vnetRefused?: string;
}

export interface OpenTunOptions {
  /** IFF_VNET_HDR + TUNSETVNETHDRSZ(10): every packet comes and goes with a virtio_net_hdr. */
  vnetHdr?: boolean;
  /** With vnetHdr: TUNSETOFFLOAD(CSUM|TSO4|TSO6[|USO4|USO6]) (default true). Ignored without vnetHdr. */
  offload?: boolean;
}

/** (fd, slab, offs, lens, slotSize, headroom, capacity, stats?): a batch read's arguments. */
type ReadArgs = [fd: number, slab: Buffer, offs: Uint32Array, lens: Uint32Array, slotSize: number, headroom: number, capacity: number];
/** (fd, slab, offs, lens, count, stats?): a batch write's arguments. */
type WriteArgs = [fd: number, slab: Buffer, offs: Uint32Array, lens: Uint32Array, count: number];

/** The addon's exports (native/addon.cc). */
export interface NativeAddon {
  openTun(name: string, opts?: OpenTunOptions): OpenTunResult;
  openIpipSocket(): number;
  /** read()/readv() per packet; vnet only on a TUN with IFF_VNET_HDR. */
  readBatch(...args: [...ReadArgs, stats?: Float64Array, vnet?: Uint16Array]): number;
  writeBatch(...args: [...WriteArgs, stats?: Float64Array, vnet?: Uint16Array]): number;
  /** recvmmsg(): one call per batch (sockets only). */
  recvBatch(...args: [...ReadArgs, stats?: Float64Array]): number;
  /** sendmmsg() of whole IPv4 packets to their own destination (the IP_HDRINCL raw socket). */
  sendBatch(...args: [...WriteArgs, stats?: Float64Array]): number;
  pollStart(fd: number, callback: () => void): PollHandle;
  pollStop(handle: PollHandle): void;
  closeFd(fd: number): void;
  statsLayout: Record<string, number>;
}

let addon: NativeAddon | undefined;

/** Directory holding package.json, found by walking up from this file (works from src/ and dist/src/). */
function packageRoot(): string {
  const start = typeof __dirname === 'string' ? __dirname : process.cwd();
  let dir = start;
  for (let i = 0; i < 16; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`kube-tun: no package.json above ${start}`);
}

/** The layout the addon must report, keyed as in native/common.h. */
function expectedLayout(): Record<string, number> {
  const want: Record<string, number> = {};
  for (const [k, v] of Object.entries(READ_STAT)) want[`READ_STAT_${k}`] = v;
  for (const [k, v] of Object.entries(WRITE_STAT)) want[`WRITE_STAT_${k}`] = v;
  for (const [k, v] of Object.entries(VNET)) want[`VNET_${k}`] = v;
  return want;
}

/** Loads build/Release/kube_tun_native.node once (lazily: importing this module never needs it). */
export function loadNative(): NativeAddon {
  if (addon !== undefined) return addon;
  const file = path.join(packageRoot(), 'build', 'Release', 'kube_tun_native.node');
  if (!fs.existsSync(file)) {
    throw new Error(`kube-tun native addon not built: ${file} is missing (run \`npx node-gyp rebuild\`)`);
  }
  const mod = { exports: {} as NativeAddon };
  process.dlopen(mod, file);
  const a = mod.exports;
  const l = a.statsLayout;
  for (const [k, v] of Object.entries(expectedLayout())) {
    if (l[k] !== v) throw new Error(`kube-tun native addon ${file} is stale (${k} differs): rebuild it`);
  }
  addon = a;
  return a;
}
