// kube-proxy's chain-name hashing (KUBE-PROXY.md §1.2, proxier.go portProtoHash /
// servicePortEndpointChainName): base32(sha256(servicePortName + protocol [+ endpoint]))[:16].
import { createHash } from 'node:crypto';

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (Go's base32.StdEncoding) of the first bytes needed for `chars` characters. */
function base32Prefix(bytes: Uint8Array, chars: number): string {
  let out = '';
  let acc = 0, bits = 0, i = 0;
  while (out.length < chars) {
    if (bits < 5) {
      acc = ((acc << 8) | (i < bytes.length ? bytes[i] : 0)) & 0xffff;
      i++;
      bits += 8;
    }
    out += B32[(acc >>> (bits - 5)) & 31];
    bits -= 5;
  }
  return out;
}

function hash16(s: string): string {
  return base32Prefix(createHash('sha256').update(s, 'utf8').digest(), 16);
}

/** `portProtoHash(servicePortName, protocol)`: 16 base32 chars. `protocol` must be lower-case ("tcp"). */
export function portProtoHash(servicePortName: string, protocol: string): string {
  return hash16(servicePortName + protocol);
}

export type ServiceChainPrefix = 'KUBE-SVC-' | 'KUBE-SVL-' | 'KUBE-EXT-' | 'KUBE-FW-' | 'KUBE-XLB-';

/** KUBE-SVC-/SVL-/EXT-/FW- + portProtoHash. */
export function servicePortChainName(servicePortName: string, protocol: string, prefix: ServiceChainPrefix = 'KUBE-SVC-'): string {
  return prefix + portProtoHash(servicePortName, protocol);
}

/** KUBE-SEP- + base32(sha256(servicePortName + protocol + "ip:port"))[:16]. */
export function endpointChainName(servicePortName: string, protocol: string, endpoint: string): string {
  return 'KUBE-SEP-' + hash16(servicePortName + protocol + endpoint);
}
