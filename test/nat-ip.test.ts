import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { tryParseIp, tryParseIpRange } from '../src/netstack/addr';
import {
  ConfigError, formatCidr, formatIPv4, makeNodeSettings, parseCidr, parseCidrStrict, parseConfig, parseIPv4Strict,
} from '../src/nat';

// One IPv4 grammar, two implementations: ipaddr.js in its strict four-part-decimal form (configs
// and flags) and netstack's allocation-free scanner (importer, hot paths). They must agree on what
// they accept and on the value.
const SEED = 20261202;
const octet = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: 0, max: 255 }).map(String) },
  { weight: 1, arbitrary: fc.constantFrom('00', '01', '010', '256', '999', '0x0a', '1e2', '', ' 1', '+1', '-1', '\u0663') },
);
/** Dotted text near the grammar: mostly four parts, sometimes 1 to 5; odd octets, separators and suffixes now and then. */
const nearQuad = fc.tuple(
  fc.oneof({ weight: 4, arbitrary: fc.array(octet, { minLength: 4, maxLength: 4 }) }, { weight: 1, arbitrary: fc.array(octet, { minLength: 1, maxLength: 5 }) }),
  fc.constantFrom('.', '.', '.', '.', '.', '.', ':', '..'),
  fc.constantFrom('', '', '', '', '', '/24', ' ', '\n', ':80', '.'),
).map(([parts, sep, tail]) => parts.join(sep) + tail);
const anyText = fc.string({ unit: fc.constantFrom(...'0123456789.:/ xa-'.split('')), maxLength: 18 });

function scanner(s: string): number | null {
  const a = tryParseIp(s);
  return a < 0 ? null : a;
}

describe('IPv4: ipaddr.js (strict) and the dotted-quad scanner agree', () => {
  it('on random valid addresses', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => {
      const s = formatIPv4(n);
      expect(parseIPv4Strict(s)).toBe(n);
      expect(scanner(s)).toBe(n);
    }), { seed: SEED, numRuns: 2000 });
  });

  it('on random strings, near the grammar and not', () => {
    let accepted = 0;
    fc.assert(fc.property(fc.oneof(nearQuad, anyText), (s) => {
      const strict = parseIPv4Strict(s);
      expect(scanner(s), JSON.stringify(s)).toBe(strict);
      if (strict !== null) accepted++;
    }), { seed: SEED, numRuns: 5000 });
    expect(accepted).toBeGreaterThan(100); // both branches were exercised (fixed seed: the same count every run)
  });

  it('the range entry reads an address inside a larger text as the whole-string one reads it alone', () => {
    fc.assert(fc.property(fc.oneof(nearQuad, anyText), fc.string({ maxLength: 4 }), fc.string({ maxLength: 4 }), (s, pre, post) => {
      expect(tryParseIpRange(pre + s + post, pre.length, pre.length + s.length)).toBe(tryParseIp(s));
    }), { seed: SEED, numRuns: 2000 });
  });

  it('CIDRs: the strict and the scanner form agree', () => {
    const len = fc.oneof(fc.integer({ min: 0, max: 40 }).map(String), fc.constantFrom('', '08', '032', 'x'));
    fc.assert(fc.property(fc.oneof(nearQuad, fc.integer({ min: 0, max: 0xffffffff }).map(formatIPv4)), len, (a, l) => {
      const s = `${a}/${l}`;
      const strict = parseCidrStrict(s), scanned = parseCidr(s);
      expect(strict && formatCidr(strict), s).toBe(scanned && formatCidr(scanned));
    }), { seed: SEED, numRuns: 2000 });
  });

  it('refuses what ipaddr.js alone would take: shorthand, hex, octal, IPv6', () => {
    for (const s of ['10.1', '10.1.2', '167772161', '0x0a.0.0.1', '012.0.0.1', '::1', '::ffff:10.0.0.1', ' 10.0.0.1', '10.0.0.1 ']) {
      expect(parseIPv4Strict(s), s).toBeNull();
      expect(scanner(s), s).toBeNull();
    }
  });
});

describe('IPv4 in configs and flags: the error names the field', () => {
  const config = (nodeIPs: string) => parseConfig([{ file: 'c.yaml', text: `apiVersion: kubetun.dev/v1alpha1\nkind: KubeTunConfiguration\nhostnameOverride: n1\nnodeIPs: [${nodeIPs}]\n` }]);

  it('KubeTunConfiguration nodeIPs', () => {
    expect(() => config('"10.1"')).toThrow(ConfigError);
    expect(() => config('"10.1"')).toThrow(/c\.yaml: document 1 \(KubeTunConfiguration\): nodeIPs\[0\]: must be an IPv4 address, got "10\.1"/);
    expect(() => config('"0x0a.0.0.1"')).toThrow(/nodeIPs\[0\]: must be an IPv4 address/);
    expect(config('"10.0.0.1"').config.nodeIPs).toEqual([0x0a000001]);
  });

  it('Service and EndpointSlice addresses (read by the scanner)', () => {
    const svc = (clusterIP: string) => parseConfig([{ file: 's.yaml', text: `apiVersion: v1\nkind: Service\nmetadata: { name: a, namespace: b }\nspec: { clusterIP: "${clusterIP}", ports: [ { port: 80 } ] }\n` }]);
    expect(() => svc('10.1')).toThrow(/s\.yaml: document 1 \(Service b\/a\): spec\.clusterIP: must be an IPv4 address, got "10\.1"/);
    expect(() => svc('0x0a.0.0.1')).toThrow(/spec\.clusterIP: must be an IPv4 address/);
    expect(svc('10.96.0.1').servicePorts[0].clusterIP).toBe(0x0a600001);
  });

  it('--node-ip and --cluster-cidr', () => {
    const state = config('');
    expect(() => makeNodeSettings(state, { nodeIPs: ['10.1'] })).toThrow(/^--node-ip: must be an IPv4 address, got "10\.1"$/);
    expect(() => makeNodeSettings(state, { clusterCIDR: '10.1/16' })).toThrow(/^--cluster-cidr: must be an IPv4 CIDR/);
    expect(makeNodeSettings(state, { nodeIPs: ['10.0.0.2', '::1'], clusterCIDR: '10.0.0.0/8' }).nodeIPs).toEqual([0x0a000002]);
  });
});
