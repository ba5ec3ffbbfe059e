import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  ConntrackTable, DIR_ORIGINAL, DIR_REPLY, CT_ACCEPT, CT_INVALID, CT_REPEAT, CT_IGNORED,
  CT_CREATE_CLASH, CT_CREATE_FULL, CT_CREATE_INVALID,
  IPS_SEEN_REPLY, IPS_ASSURED, IPS_SRC_NAT, IPS_DST_NAT, IPS_CONFIRMED, IPS_NAT_CLASH,
  TCP_NONE, TCP_SYN_SENT, TCP_SYN_RECV, TCP_ESTABLISHED, TCP_FIN_WAIT, TCP_CLOSE_WAIT, TCP_LAST_ACK,
  TCP_TIME_WAIT, TCP_CLOSE, TCP_SYN_SENT2, TCP_INVALID, TCP_IGNORE,
  tcpNextState, tcpFlagIndex, tcpFlagsValid, tcpCanCreate, TCP_SYN_SET, TCP_SYNACK_SET, TCP_FIN_SET, TCP_ACK_SET, TCP_RST_SET, TCP_NONE_SET,
  formatEntry, formatEvent, formatProcEntry, formatIp,
  chooseMasqPort, masqPortRangeMin, masqPortRangeMax, DEFAULT_TIMEOUTS, resolveTimeouts,
  ConntrackEventType, tupleHash, Tuple,
} from '../src/conntrack';
import { RandomPool, SeededRandom } from '../src/lib/random';
import { TCP_FIN as FIN, TCP_SYN as SYN, TCP_RST as RST, TCP_PSH as PSH, TCP_ACK as ACK, TCP_URG as URG } from '../src/netstack/proto';

const ip = (s: string): number => s.split('.').reduce((a, b) => a * 256 + Number(b), 0) >>> 0;
const tup = (proto: number, src: number, dst: number, sport: number, dport: number): Tuple => new Tuple(proto, src, dst, sport, dport);

const CLIENT = ip('10.1.139.84'), VIP = ip('10.99.64.233'), NODE = ip('192.168.2.2');

/** The hairpin flow of the `conntrack -L` example: client -> ClusterIP, DNAT to itself, SNAT to the node. */
function hairpin(t: ConntrackTable, now: number): number {
  return t.create(tup(6, CLIENT, VIP, 48544, 9999), tup(6, CLIENT, NODE, 80, 16495), now);
}

/** Drive a packet; asserts nothing. */
function pkt(t: ConntrackTable, slot: number, dir: number, flags: number, now: number, len = 60): boolean {
  return t.update(slot, dir, flags, Math.max(0, len - 40), len, now);
}

function handshake(t: ConntrackTable, slot: number, now: number): void {
  expect(pkt(t, slot, DIR_ORIGINAL, SYN, now)).toBe(true);
  expect(pkt(t, slot, DIR_REPLY, SYN | ACK, now + 1)).toBe(true);
  expect(pkt(t, slot, DIR_ORIGINAL, ACK, now + 2)).toBe(true);
}

describe('tcp state table', () => {
  it('matches the kernel transitions that matter', () => {
    // ORIGINAL
    expect(tcpNextState(0, TCP_SYN_SET, TCP_NONE)).toBe(TCP_SYN_SENT);
    expect(tcpNextState(0, TCP_ACK_SET, TCP_NONE)).toBe(TCP_ESTABLISHED); // loose pick-up
    expect(tcpNextState(0, TCP_SYNACK_SET, TCP_NONE)).toBe(TCP_INVALID);
    expect(tcpNextState(0, TCP_ACK_SET, TCP_SYN_SENT)).toBe(TCP_INVALID);
    expect(tcpNextState(0, TCP_ACK_SET, TCP_SYN_RECV)).toBe(TCP_ESTABLISHED);
    expect(tcpNextState(0, TCP_SYN_SET, TCP_ESTABLISHED)).toBe(TCP_IGNORE);
    expect(tcpNextState(0, TCP_SYN_SET, TCP_TIME_WAIT)).toBe(TCP_SYN_SENT);
    expect(tcpNextState(0, TCP_FIN_SET, TCP_FIN_WAIT)).toBe(TCP_LAST_ACK);
    expect(tcpNextState(0, TCP_ACK_SET, TCP_LAST_ACK)).toBe(TCP_TIME_WAIT);
    expect(tcpNextState(0, TCP_RST_SET, TCP_NONE)).toBe(TCP_INVALID);
    expect(tcpNextState(0, TCP_RST_SET, TCP_ESTABLISHED)).toBe(TCP_CLOSE);
    expect(tcpNextState(0, TCP_NONE_SET, TCP_ESTABLISHED)).toBe(TCP_INVALID);
    // REPLY
    expect(tcpNextState(1, TCP_SYNACK_SET, TCP_SYN_SENT)).toBe(TCP_SYN_RECV);
    expect(tcpNextState(1, TCP_SYN_SET, TCP_SYN_SENT)).toBe(TCP_SYN_SENT2);
    expect(tcpNextState(1, TCP_ACK_SET, TCP_SYN_SENT)).toBe(TCP_IGNORE);
    expect(tcpNextState(1, TCP_SYNACK_SET, TCP_ESTABLISHED)).toBe(TCP_IGNORE);
    expect(tcpNextState(1, TCP_SYN_SET, TCP_TIME_WAIT)).toBe(TCP_SYN_SENT);
    expect(tcpNextState(1, TCP_FIN_SET, TCP_ESTABLISHED)).toBe(TCP_FIN_WAIT);
    expect(tcpNextState(1, TCP_ACK_SET, TCP_FIN_WAIT)).toBe(TCP_CLOSE_WAIT);
    expect(tcpNextState(1, TCP_ACK_SET, TCP_SYN_SENT2)).toBe(TCP_IGNORE);
    expect(tcpNextState(1, TCP_SYNACK_SET, TCP_SYN_SENT2)).toBe(TCP_SYN_RECV);
  });

  it('classifies flags and rejects garbage combinations', () => {
    expect(tcpFlagIndex(SYN)).toBe(TCP_SYN_SET);
    expect(tcpFlagIndex(SYN | ACK)).toBe(TCP_SYNACK_SET);
    expect(tcpFlagIndex(FIN | ACK)).toBe(TCP_FIN_SET);
    expect(tcpFlagIndex(ACK | PSH)).toBe(TCP_ACK_SET);
    expect(tcpFlagIndex(RST | ACK)).toBe(TCP_RST_SET);
    expect(tcpFlagIndex(0)).toBe(TCP_NONE_SET);
    for (const ok of [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, FIN | ACK | PSH, RST, RST | ACK, SYN | URG, ACK | URG, SYN | 0x40 | 0x80]) {
      expect(tcpFlagsValid(ok), ok.toString(16)).toBe(true);
    }
    for (const bad of [0, FIN, SYN | FIN, SYN | RST, SYN | FIN | RST, FIN | RST | ACK, SYN | ACK | FIN, PSH, URG, SYN | ACK | URG]) {
      expect(tcpFlagsValid(bad), bad.toString(16)).toBe(false);
    }
    expect(tcpCanCreate(SYN)).toBe(true);
    expect(tcpCanCreate(ACK)).toBe(true);
    expect(tcpCanCreate(SYN | ACK)).toBe(false);
    expect(tcpCanCreate(RST)).toBe(false);
    expect(tcpCanCreate(FIN | ACK)).toBe(false);
  });
});

describe('ConntrackTable basics', () => {
  it('finds both directions and sets NAT status from the tuples', () => {
    const t = new ConntrackTable({ max: 16, seed: 1 });
    const slot = hairpin(t, 0);
    expect(slot).toBeGreaterThanOrEqual(0);
    expect(t.size).toBe(1);
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 0)).toBe(slot << 1 | DIR_ORIGINAL);
    expect(t.lookup(tup(6, CLIENT, NODE, 80, 16495), 0)).toBe(slot << 1 | DIR_REPLY);
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9998), 0)).toBe(-1);
    expect(t.lookup(tup(17, CLIENT, VIP, 48544, 9999), 0)).toBe(-1);
    expect(t.status(slot) & (IPS_SRC_NAT | IPS_DST_NAT | IPS_CONFIRMED)).toBe(IPS_SRC_NAT | IPS_DST_NAT | IPS_CONFIRMED);
    expect([t.origSrc(slot), t.origDst(slot), t.origSport(slot), t.origDport(slot)]).toEqual([CLIENT, VIP, 48544, 9999]);
    expect([t.replySrc(slot), t.replyDst(slot), t.replySport(slot), t.replyDport(slot)]).toEqual([CLIENT, NODE, 80, 16495]);
    const k = t.lookup(tup(6, CLIENT, NODE, 80, 16495), 0);
    // Rewrite a reply from the opposite tuple.
    expect(t.keyDst(k ^ 1)).toBe(VIP);
    expect(t.tupleInUse(tup(6, CLIENT, NODE, 80, 16495), 0)).toBe(true);
    expect(t.tupleInUse(tup(6, CLIENT, NODE, 80, 16496), 0)).toBe(false);
    expect(t.checkIndex()).toBeNull();
    t.remove(slot);
    expect(t.size).toBe(0);
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 0)).toBe(-1);
    expect(t.lookup(tup(6, CLIENT, NODE, 80, 16495), 0)).toBe(-1);
    expect(t.counters.inserts).toBe(1);
    expect(t.counters.deletes).toBe(1);
  });

  it('no NAT: neither NAT bit', () => {
    const t = new ConntrackTable({ max: 4, seed: 2 });
    const a = ip('10.0.0.1'), b = ip('10.0.0.2');
    const s = t.create(tup(17, a, b, 1000, 53), tup(17, b, a, 53, 1000), 0);
    expect(t.status(s) & (IPS_SRC_NAT | IPS_DST_NAT)).toBe(0);
  });

  it('refuses a clashing tuple in either direction', () => {
    const t = new ConntrackTable({ max: 16, seed: 3 });
    hairpin(t, 0);
    // Another client flow whose reply tuple equals the first one's reply tuple.
    expect(t.create(tup(6, ip('10.1.1.1'), VIP, 1, 9999), tup(6, CLIENT, NODE, 80, 16495), 0)).toBe(CT_CREATE_CLASH);
    // Original tuple equal to the first one's reply tuple.
    expect(t.create(tup(6, CLIENT, NODE, 80, 16495), tup(6, NODE, CLIENT, 16495, 80), 0)).toBe(CT_CREATE_CLASH);
    expect(t.counters.insertFailed).toBe(2);
    expect(t.size).toBe(1);
  });

  it('ids are distinct', () => {
    const t = new ConntrackTable({ max: 8, seed: 4 });
    const a = t.create(tup(17, 1, 2, 3, 4), tup(17, 2, 1, 4, 3), 0);
    const b = t.create(tup(17, 1, 2, 3, 5), tup(17, 2, 1, 5, 3), 0);
    expect(t.id(a)).not.toBe(t.id(b));
  });

  it('rejects bad options', () => {
    expect(() => new ConntrackTable({ max: 0 })).toThrow();
    expect(() => new ConntrackTable({ max: 1.5 })).toThrow();
    expect(() => new ConntrackTable({ max: 8, timeouts: { tcpClose: -1 } })).toThrow();
    expect(resolveTimeouts({ udpReplied: 180 }).udpReplied).toBe(180);
    expect(DEFAULT_TIMEOUTS.tcpEstablished).toBe(432000);
  });
});

describe('TCP tracking', () => {
  it('SYN -> SYN_SENT [UNREPLIED] 120, SYN/ACK -> SYN_RECV 60, ACK -> ESTABLISHED [ASSURED] 5 days', () => {
    const t = new ConntrackTable({ max: 16, seed: 5 });
    const s = hairpin(t, 1000);
    expect(pkt(t, s, DIR_ORIGINAL, SYN, 1000)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_SYN_SENT);
    expect(t.tcpStateName(s)).toBe('SYN_SENT');
    expect(t.timeoutLeftSec(s, 1000)).toBe(120);
    expect(t.seenReply(s)).toBe(false);
    expect(t.isAssured(s)).toBe(false);

    expect(pkt(t, s, DIR_REPLY, SYN | ACK, 1010)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_SYN_RECV);
    expect(t.timeoutLeftSec(s, 1010)).toBe(60);
    expect(t.seenReply(s)).toBe(true);
    expect(t.isAssured(s)).toBe(false);

    expect(pkt(t, s, DIR_ORIGINAL, ACK, 1020)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_ESTABLISHED);
    expect(t.isAssured(s)).toBe(true);
    expect(t.timeoutLeftSec(s, 1020)).toBe(432000);
    expect(t.packets(s, DIR_ORIGINAL)).toBe(2);
    expect(t.packets(s, DIR_REPLY)).toBe(1);
    expect(t.bytes(s, DIR_ORIGINAL)).toBe(120);
  });

  it('FIN/ACK/FIN/ACK -> TIME_WAIT 120 s, then expires', () => {
    const t = new ConntrackTable({ max: 16, seed: 6 });
    const s = hairpin(t, 0);
    handshake(t, s, 0);
    expect(pkt(t, s, DIR_ORIGINAL, FIN | ACK, 100)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_FIN_WAIT);
    expect(t.timeoutLeftSec(s, 100)).toBe(120);
    expect(pkt(t, s, DIR_REPLY, ACK, 110)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_CLOSE_WAIT);
    expect(t.timeoutLeftSec(s, 110)).toBe(60);
    expect(pkt(t, s, DIR_REPLY, FIN | ACK, 120)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_LAST_ACK);
    expect(t.timeoutLeftSec(s, 120)).toBe(30);
    expect(pkt(t, s, DIR_ORIGINAL, ACK, 130)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_TIME_WAIT);
    expect(t.timeoutLeftSec(s, 130)).toBe(120);
    expect(t.timeoutLeftSec(s, 130 + 119_999)).toBe(0);
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 130 + 119_999)).toBe(s << 1);
    // Lazy expiry: the lookup at the expiry instant removes it.
    expect(t.timeoutLeftSec(s, 130 + 120_000)).toBe(-1);
    expect(t.lookup(tup(6, CLIENT, NODE, 80, 16495), 130 + 120_000)).toBe(-1);
    expect(t.size).toBe(0);
    expect(t.counters.expirations).toBe(1);
  });

  it('FIN passing FIN (simultaneous close) also ends in TIME_WAIT', () => {
    const t = new ConntrackTable({ max: 16, seed: 7 });
    const s = hairpin(t, 0);
    handshake(t, s, 0);
    pkt(t, s, DIR_ORIGINAL, FIN | ACK, 10);
    pkt(t, s, DIR_REPLY, FIN | ACK, 11);
    expect(t.tcpState(s)).toBe(TCP_LAST_ACK);
    pkt(t, s, DIR_ORIGINAL, ACK, 12);
    expect(t.tcpState(s)).toBe(TCP_TIME_WAIT);
  });

  it('RST -> CLOSE with 10 s', () => {
    const t = new ConntrackTable({ max: 16, seed: 8 });
    const s = hairpin(t, 0);
    handshake(t, s, 0);
    expect(pkt(t, s, DIR_REPLY, RST | ACK, 500)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_CLOSE);
    expect(t.timeoutLeftSec(s, 500)).toBe(10);
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 10_499)).toBe(s << 1);
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 10_500)).toBe(-1);
  });

  it('a RST as the only answer kills the entry (connection refused)', () => {
    const t = new ConntrackTable({ max: 16, seed: 9 });
    const s = hairpin(t, 0);
    pkt(t, s, DIR_ORIGINAL, SYN, 0);
    expect(pkt(t, s, DIR_REPLY, RST | ACK, 5)).toBe(true);
    // Still readable for this packet's rewrite...
    expect(t.replyDport(s)).toBe(16495);
    expect(t.isLive(s)).toBe(true);
    // ...but gone for the next one.
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 5)).toBe(-1);
    expect(t.size).toBe(0);
  });

  it('a retransmitted SYN does not extend the SYN_SENT timeout', () => {
    const t = new ConntrackTable({ max: 16, seed: 10 });
    const s = hairpin(t, 0);
    pkt(t, s, DIR_ORIGINAL, SYN, 0);
    expect(pkt(t, s, DIR_ORIGINAL, SYN, 3000)).toBe(true);
    expect(t.timeoutLeftSec(s, 3000)).toBe(117);
  });

  it('marks clearly invalid packets INVALID and changes nothing', () => {
    const t = new ConntrackTable({ max: 16, seed: 11 });
    const s = hairpin(t, 0);
    pkt(t, s, DIR_ORIGINAL, SYN, 0);
    expect(pkt(t, s, DIR_ORIGINAL, SYN | FIN | RST, 1)).toBe(false);
    expect(t.lastVerdict).toBe(CT_INVALID);
    expect(pkt(t, s, DIR_ORIGINAL, FIN | ACK, 1)).toBe(false); // FIN before any SYN/ACK
    expect(pkt(t, s, DIR_ORIGINAL, SYN | ACK, 1)).toBe(false); // client can't send SYN/ACK after SYN
    expect(t.tcpState(s)).toBe(TCP_SYN_SENT);
    expect(t.packets(s, DIR_ORIGINAL)).toBe(1);
    expect(t.counters.invalid).toBe(3);
    expect(t.size).toBe(1);
  });

  it('an ignored packet (ACK in reply dir in SYN_SENT) changes no state but marks SEEN_REPLY', () => {
    const t = new ConntrackTable({ max: 16, seed: 12 });
    const s = hairpin(t, 0);
    pkt(t, s, DIR_ORIGINAL, SYN, 0);
    expect(pkt(t, s, DIR_REPLY, ACK, 1)).toBe(true);
    expect(t.lastVerdict).toBe(CT_IGNORED);
    expect(t.tcpState(s)).toBe(TCP_SYN_SENT);
    expect(t.seenReply(s)).toBe(true);
    expect(t.packets(s, DIR_REPLY)).toBe(0);
  });

  it('a first packet that cannot open a connection removes the fresh entry without events', () => {
    const t = new ConntrackTable({ max: 16, seed: 13 });
    const events: string[] = [];
    t.onEvent = (type) => events.push(type);
    for (const flags of [RST, RST | ACK, FIN | ACK, SYN | ACK, 0, SYN | FIN]) {
      const s = hairpin(t, 0);
      expect(s).toBeGreaterThanOrEqual(0);
      expect(pkt(t, s, DIR_ORIGINAL, flags, 0)).toBe(false);
      expect(t.size).toBe(0);
      expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 0)).toBe(-1);
    }
    expect(events).toEqual([]);
    expect(t.checkIndex()).toBeNull();
  });

  it('picks up a connection mid-stream (loose): ESTABLISHED, capped at 300 s until a reply', () => {
    const t = new ConntrackTable({ max: 16, seed: 14 });
    const s = hairpin(t, 0);
    expect(pkt(t, s, DIR_ORIGINAL, ACK | PSH, 0)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_ESTABLISHED);
    expect(t.timeoutLeftSec(s, 0)).toBe(300);
    expect(t.isAssured(s)).toBe(false);
    expect(pkt(t, s, DIR_REPLY, ACK, 10)).toBe(true);
    expect(t.seenReply(s)).toBe(true);
    // The kernel grants ASSURED on the next ESTABLISHED packet once a reply was seen.
    expect(pkt(t, s, DIR_ORIGINAL, ACK, 20)).toBe(true);
    expect(t.isAssured(s)).toBe(true);
    expect(t.timeoutLeftSec(s, 20)).toBe(432000);
  });

  it('a SYN on a TIME_WAIT entry reopens: update() reports CT_REPEAT, lookup(…, flags) misses', () => {
    const t = new ConntrackTable({ max: 16, seed: 15 });
    const close = (s: number) => {
      handshake(t, s, 0);
      pkt(t, s, DIR_ORIGINAL, FIN | ACK, 10); pkt(t, s, DIR_REPLY, FIN | ACK, 11); pkt(t, s, DIR_ORIGINAL, ACK, 12);
      expect(t.tcpState(s)).toBe(TCP_TIME_WAIT);
    };
    let s = hairpin(t, 0);
    close(s);
    expect(pkt(t, s, DIR_ORIGINAL, SYN, 20)).toBe(false);
    expect(t.lastVerdict).toBe(CT_REPEAT);
    expect(t.size).toBe(0);

    s = hairpin(t, 0);
    close(s);
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 20, ACK)).toBe(s << 1); // not a SYN: normal hit
    expect(t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 20, SYN)).toBe(-1);
    expect(t.size).toBe(0);
    expect(t.counters.reopens).toBe(2);
  });

  it('a SYN on an ESTABLISHED entry is ignored, and an answering SYN/ACK resyncs', () => {
    const t = new ConntrackTable({ max: 16, seed: 16 });
    const s = hairpin(t, 0);
    handshake(t, s, 0);
    expect(pkt(t, s, DIR_ORIGINAL, SYN, 10)).toBe(true);
    expect(t.lastVerdict).toBe(CT_IGNORED);
    expect(t.tcpState(s)).toBe(TCP_ESTABLISHED);
    expect(pkt(t, s, DIR_REPLY, SYN | ACK, 11)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_SYN_RECV);
    expect(pkt(t, s, DIR_ORIGINAL, ACK, 12)).toBe(true);
    expect(t.tcpState(s)).toBe(TCP_ESTABLISHED);
  });

  it('simultaneous open reaches ESTABLISHED', () => {
    const t = new ConntrackTable({ max: 16, seed: 17 });
    const s = hairpin(t, 0);
    pkt(t, s, DIR_ORIGINAL, SYN, 0);
    pkt(t, s, DIR_REPLY, SYN, 1);
    expect(t.tcpState(s)).toBe(TCP_SYN_SENT2);
    pkt(t, s, DIR_ORIGINAL, SYN | ACK, 2);
    expect(t.tcpState(s)).toBe(TCP_SYN_RECV);
    pkt(t, s, DIR_REPLY, ACK, 3);
    expect(t.tcpState(s)).toBe(TCP_ESTABLISHED);
  });

  it('custom timeouts apply', () => {
    const t = new ConntrackTable({ max: 4, seed: 18, timeouts: { tcpEstablished: 86400, tcpTimeWait: 60 } });
    const s = hairpin(t, 0);
    handshake(t, s, 0);
    expect(t.timeoutLeftSec(s, 2)).toBe(86400);
  });
});

describe('expiry and sweep', () => {
  it('sweep removes expired entries within its budget, incrementally', () => {
    const t = new ConntrackTable({ max: 1000, seed: 20 });
    for (let i = 0; i < 100; i++) {
      const s = t.create(tup(17, ip('10.0.0.1'), ip('10.0.0.2'), 1000 + i, 53), tup(17, ip('10.0.0.2'), ip('10.0.0.1'), 53, 1000 + i), 0);
      t.update(s, DIR_ORIGINAL, 0, 10, 38, 0);
    }
    for (let i = 0; i < 50; i++) {
      const s = t.create(tup(6, ip('10.0.0.1'), ip('10.0.0.3'), 2000 + i, 80), tup(6, ip('10.0.0.3'), ip('10.0.0.1'), 80, 2000 + i), 0);
      handshake(t, s, 0);
    }
    expect(t.size).toBe(150);
    expect(t.sweep(29_999, 1000)).toBe(0);
    let removed = 0;
    for (let k = 0; k < 15; k++) {
      const r = t.sweep(30_000, 10);
      expect(r).toBeLessThanOrEqual(10);
      removed += r;
    }
    expect(removed).toBe(100);
    expect(t.size).toBe(50);
    expect(t.counters.expirations).toBe(100);
    expect(t.checkIndex()).toBeNull();
    // forEach with a time skips nothing live.
    let n = 0;
    t.forEach(() => n++, 30_000);
    expect(n).toBe(50);
  });

  it('forEach(nowMs) skips expired entries not reaped yet', () => {
    const t = new ConntrackTable({ max: 8, seed: 21 });
    const s = t.create(tup(17, 1, 2, 3, 4), tup(17, 2, 1, 4, 3), 0);
    t.update(s, DIR_ORIGINAL, 0, 0, 28, 0);
    const seen: number[] = [];
    t.forEach((x) => seen.push(x), 30_000);
    expect(seen).toEqual([]);
    t.forEach((x) => seen.push(x));
    expect(seen).toEqual([s]);
  });
});

describe('UDP', () => {
  const C = ip('10.1.236.141'), DNS = ip('10.96.0.10'), EP = ip('10.1.139.90');
  it('30 s unreplied, 30 s after a reply, 120 s and ASSURED once still active past stream_ts (2 s)', () => {
    const t = new ConntrackTable({ max: 8, seed: 30 });
    const s = t.create(tup(17, C, DNS, 40000, 53), tup(17, EP, C, 53, 40000), 10_000);
    t.update(s, DIR_ORIGINAL, 0, 30, 58, 10_000);
    expect(t.timeoutLeftSec(s, 10_000)).toBe(30);
    expect(t.seenReply(s)).toBe(false);
    t.update(s, DIR_REPLY, 0, 60, 88, 10_500);
    expect(t.seenReply(s)).toBe(true);
    expect(t.timeoutLeftSec(s, 10_500)).toBe(30);
    t.update(s, DIR_ORIGINAL, 0, 30, 58, 11_900);
    expect(t.isAssured(s)).toBe(false);
    expect(t.timeoutLeftSec(s, 11_900)).toBe(30);
    t.update(s, DIR_REPLY, 0, 30, 58, 12_001);
    expect(t.isAssured(s)).toBe(true);
    expect(t.timeoutLeftSec(s, 12_001)).toBe(120);
  });

  it('a request/answer pair within 2 s stays at 30 s and not ASSURED (DNS)', () => {
    const t = new ConntrackTable({ max: 8, seed: 31 });
    const s = t.create(tup(17, C, DNS, 40001, 53), tup(17, EP, C, 53, 40001), 0);
    t.update(s, DIR_ORIGINAL, 0, 30, 58, 0);
    t.update(s, DIR_REPLY, 0, 30, 58, 3);
    expect(t.isAssured(s)).toBe(false);
    expect(t.lookup(tup(17, C, DNS, 40001, 53), 30_003)).toBe(-1);
  });

  it('IPS_NAT_CLASH entries never become ASSURED', () => {
    const t = new ConntrackTable({ max: 8, seed: 32 });
    const s = t.create(tup(17, C, DNS, 40002, 53), tup(17, EP, C, 53, 40002), 0);
    t.update(s, DIR_ORIGINAL, 0, 30, 58, 0);
    t.setStatusBits(s, IPS_NAT_CLASH);
    t.update(s, DIR_REPLY, 0, 30, 58, 1);
    t.update(s, DIR_ORIGINAL, 0, 30, 58, 5000);
    expect(t.isAssured(s)).toBe(false);
    expect(t.timeoutLeftSec(s, 5000)).toBe(120);
  });
});

describe('ICMP', () => {
  const C = ip('10.1.236.141'), S = ip('10.99.64.233');
  it('echo: (1, src, dst, id, 0) both ways, 30 s', () => {
    const t = new ConntrackTable({ max: 8, seed: 40 });
    const s = t.create(tup(1, C, S, 1234, 0), tup(1, S, C, 1234, 0), 0, 8, 0);
    expect(s).toBeGreaterThanOrEqual(0);
    expect(t.update(s, DIR_ORIGINAL, 0, 56, 84, 0)).toBe(true);
    const k = t.lookup(tup(1, S, C, 1234, 0), 100);
    expect(k).toBe(s << 1 | DIR_REPLY);
    t.update(s, DIR_REPLY, 0, 56, 84, 100);
    expect(t.timeoutLeftSec(s, 100)).toBe(30);
    expect(t.isAssured(s)).toBe(false);
    expect(t.replyIcmpType(s)).toBe(0);
    expect(t.lookup(tup(1, C, S, 1235, 0), 100)).toBe(-1);
  });

  it('only queries create entries', () => {
    const t = new ConntrackTable({ max: 8, seed: 41 });
    expect(t.create(tup(1, C, S, 1, 0), tup(1, S, C, 1, 0), 0, 0, 0)).toBe(CT_CREATE_INVALID);
    expect(t.create(tup(1, C, S, 1, 0), tup(1, S, C, 1, 0), 0, 3, 1)).toBe(CT_CREATE_INVALID);
    expect(t.create(tup(1, C, S, 1, 0), tup(1, S, C, 1, 0), 0, 13, 0)).toBeGreaterThanOrEqual(0);
  });

  it('generic protocols: 600 s', () => {
    const t = new ConntrackTable({ max: 8, seed: 42 });
    const s = t.create(tup(47, C, S, 0, 0), tup(47, S, C, 0, 0), 0);
    t.update(s, DIR_ORIGINAL, 0, 0, 100, 0);
    expect(t.timeoutLeftSec(s, 0)).toBe(600);
  });
});

describe('table full', () => {
  const mk = (t: ConntrackTable, i: number, now: number) =>
    t.create(tup(6, ip('10.0.0.1'), ip('10.96.0.1'), 10000 + i, 80), tup(6, ip('10.2.0.1'), ip('10.0.0.1'), 8080, 10000 + i), now);

  it('early-drops one non-ASSURED entry to make room', () => {
    const t = new ConntrackTable({ max: 4, seed: 50 });
    const events: string[] = [];
    t.onEvent = (type) => events.push(type);
    for (let i = 0; i < 4; i++) pkt(t, mk(t, i, 0), DIR_ORIGINAL, SYN, 0);
    expect(t.size).toBe(4);
    const s = mk(t, 4, 1);
    expect(s).toBeGreaterThanOrEqual(0);
    expect(t.size).toBe(4);
    expect(t.counters.earlyDrops).toBe(1);
    expect(events.filter((e) => e === 'DESTROY').length).toBe(1);
    expect(t.checkIndex()).toBeNull();
  });

  it('fails (and counts drop) when every entry is ASSURED and ESTABLISHED', () => {
    const t = new ConntrackTable({ max: 4, seed: 51 });
    for (let i = 0; i < 4; i++) handshake(t, mk(t, i, 0), 0);
    expect(mk(t, 4, 10)).toBe(CT_CREATE_FULL);
    expect(t.counters.drop).toBe(1);
    expect(t.counters.earlyDrops).toBe(0);
    expect(t.size).toBe(4);
  });

  it('reaps an expired entry instead of dropping a live one', () => {
    const t = new ConntrackTable({ max: 4, seed: 52 });
    for (let i = 0; i < 4; i++) handshake(t, mk(t, i, 0), 0);
    const victim = t.lookup(tup(6, ip('10.0.0.1'), ip('10.96.0.1'), 10002, 80), 0) >> 1;
    t.setTimeout(victim, 1, 0);
    expect(mk(t, 4, 5000)).toBeGreaterThanOrEqual(0);
    expect(t.counters.expirations).toBe(1);
    expect(t.counters.earlyDrops).toBe(0);
  });

  it('may drop an ASSURED entry in TIME_WAIT under pressure', () => {
    const t = new ConntrackTable({ max: 2, seed: 53 });
    const a = mk(t, 0, 0);
    handshake(t, a, 0);
    pkt(t, a, DIR_ORIGINAL, FIN | ACK, 1); pkt(t, a, DIR_REPLY, FIN | ACK, 2); pkt(t, a, DIR_ORIGINAL, ACK, 3);
    handshake(t, mk(t, 1, 0), 0);
    expect(mk(t, 2, 10)).toBeGreaterThanOrEqual(0);
    expect(t.counters.earlyDrops).toBe(1);
    expect(t.lookup(tup(6, ip('10.0.0.1'), ip('10.96.0.1'), 10000, 80), 10)).toBe(-1);
  });
});

describe('hash index under churn', () => {
  type Tup = [number, number, number, number, number];
  const tupArb = fc.tuple(
    fc.constantFrom(6, 17),
    fc.constantFrom(ip('10.0.0.1'), ip('10.0.0.2'), ip('10.0.0.3')),
    fc.constantFrom(ip('10.96.0.1'), ip('10.2.0.7'), 0xffffffff),
    fc.integer({ min: 0, max: 3 }),
    fc.integer({ min: 0, max: 3 }),
  );
  const opArb = fc.oneof(
    fc.record({ op: fc.constant('create' as const), o: tupArb, r: tupArb }),
    fc.record({ op: fc.constant('remove' as const), pick: fc.nat() }),
    fc.record({ op: fc.constant('lookup' as const), o: tupArb }),
  );

  it('agrees with a Map model for random create/remove/lookup sequences', () => {
    fc.assert(fc.property(fc.array(opArb, { maxLength: 300 }), fc.integer(), (ops, seed) => {
      const MAX = 24;
      const t = new ConntrackTable({ max: MAX, seed });
      const model = new Map<string, number>(); // tuple -> key
      const slots = new Map<number, [string, string]>();
      const k = (p: number, x: Tup) => `${p}/${x[1]}/${x[2]}/${x[3]}/${x[4]}`;
      for (const o of ops) {
        if (o.op === 'create') {
          const p = o.o[0];
          const ko = k(p, o.o), kr = k(p, o.r);
          const expectClash = ko === kr || model.has(ko) || model.has(kr);
          if (!expectClash && slots.size >= MAX) continue; // early drop would pick an arbitrary victim
          const s = t.create(tup(p, o.o[1], o.o[2], o.o[3], o.o[4]), tup(p, o.r[1], o.r[2], o.r[3], o.r[4]), 0);
          if (expectClash) {
            expect(s).toBe(CT_CREATE_CLASH);
          } else {
            expect(s).toBeGreaterThanOrEqual(0);
            expect(slots.has(s)).toBe(false);
            model.set(ko, s << 1);
            model.set(kr, (s << 1) | 1);
            slots.set(s, [ko, kr]);
          }
        } else if (o.op === 'remove') {
          if (slots.size === 0) continue;
          const all = [...slots.keys()];
          const s = all[o.pick % all.length];
          t.remove(s);
          const [ko, kr] = slots.get(s)!;
          model.delete(ko); model.delete(kr); slots.delete(s);
        } else {
          const want = model.get(k(o.o[0], o.o)) ?? -1;
          expect(t.lookup(tup(o.o[0], o.o[1], o.o[2], o.o[3], o.o[4]), 0)).toBe(want);
        }
        expect(t.size).toBe(slots.size);
      }
      // Every tuple of the model is found, and the index invariant holds.
      for (const [key, want] of model) {
        const [p, a, b, sp, dp] = key.split('/').map(Number);
        expect(t.lookup(tup(p, a, b, sp, dp), 0)).toBe(want);
      }
      expect(t.checkIndex()).toBeNull();
    }), { numRuns: 300 });
  });

  it.each(['siphash', 'murmur'] as const)('survives many insert/remove cycles near full load (%s)', (hash) => {
    const MAX = 2048;
    const t = new ConntrackTable({ max: MAX, seed: 60, hash });
    const rng = new SeededRandom(7);
    const live = new Map<number, [number, number, number]>(); // slot -> (src, sport, dport)
    for (let step = 0; step < 100_000; step++) {
      if (live.size < MAX - 8 && (live.size < MAX / 2 || rng.nextU32() % 2 === 0)) {
        const src = rng.nextU32(), sport = rng.nextU32() & 0xffff, dport = rng.nextU32() & 0xffff;
        const s = t.create(tup(6, src, 0x0a600001, sport, dport), tup(6, 0x0a020003, src, 8080, sport), 0);
        if (s >= 0) live.set(s, [src, sport, dport]);
      } else {
        const arr = [...live.keys()];
        const s = arr[rng.nextU32() % arr.length];
        t.remove(s);
        live.delete(s);
      }
    }
    expect(t.size).toBe(live.size);
    for (const [s, [src, sport, dport]] of live) {
      expect(t.lookup(tup(6, src, 0x0a600001, sport, dport), 0)).toBe(s << 1);
      expect(t.lookup(tup(6, 0x0a020003, src, 8080, sport), 0)).toBe((s << 1) | 1);
    }
    expect(t.checkIndex()).toBeNull();
    expect(t.counters.searched / Math.max(1, t.counters.found + t.counters.notFound)).toBeLessThan(3);
  });

  it('keys the hash: the same tuple hashes differently under different keys', () => {
    const a = tupleHash(1, 2, 6, CLIENT, VIP, 0x12345678);
    const b = tupleHash(3, 4, 6, CLIENT, VIP, 0x12345678);
    expect(a).not.toBe(b);
    expect(tupleHash(1, 2, 6, CLIENT, VIP, 0x12345678)).toBe(a);
  });
});

describe('chooseMasqPort', () => {
  const C = ip('10.1.236.141'), BE = ip('10.1.139.90');
  const masqEntry = (t: ConntrackTable, cport: number, port: number, now = 0) =>
    t.create(tup(6, C, VIP, cport, 80), tup(6, BE, NODE, 8080, port), now);
  /** The reply tuple of a connection masqueraded to NODE towards BE:8080 (the port is chosen). */
  const TO_BE = tup(6, BE, NODE, 8080, 0);

  it('default ranges follow the original port', () => {
    expect([masqPortRangeMin(6, 80), masqPortRangeMax(6, 80)]).toEqual([1, 511]);
    expect([masqPortRangeMin(6, 700), masqPortRangeMax(6, 700)]).toEqual([600, 1023]);
    expect([masqPortRangeMin(17, 40000), masqPortRangeMax(17, 40000)]).toEqual([1024, 65535]);
    expect([masqPortRangeMin(1, 5), masqPortRangeMax(1, 5)]).toEqual([0, 65535]);
  });

  it('keeps the original port when free (not fully random)', () => {
    const t = new ConntrackTable({ max: 64, seed: 70 });
    expect(chooseMasqPort(t, TO_BE, 40000, 0, { rng: new SeededRandom(1) })).toBe(40000);
  });

  it('moves away from a taken original port, within its range', () => {
    const t = new ConntrackTable({ max: 64, seed: 71 });
    masqEntry(t, 1, 40000);
    const p = chooseMasqPort(t, TO_BE, 40000, 0, { rng: new SeededRandom(2) });
    expect(p).not.toBe(40000);
    expect(p).toBeGreaterThanOrEqual(1024);
    masqEntry(t, 2, 700);
    const q = chooseMasqPort(t, TO_BE, 700, 0, { rng: new SeededRandom(3) });
    expect(q).toBeGreaterThanOrEqual(600);
    expect(q).toBeLessThanOrEqual(1023);
    expect(q).not.toBe(700);
    const r = chooseMasqPort(t, TO_BE, 80, 0, { rng: new SeededRandom(4), fullyRandom: true });
    expect(r).toBeGreaterThanOrEqual(1);
    expect(r).toBeLessThanOrEqual(511);
  });

  it('never returns a port whose reply tuple is in use; -1 once the range is exhausted', () => {
    const t = new ConntrackTable({ max: 64, seed: 72 });
    for (let p = 5000; p <= 5009; p++) if (p !== 5006) masqEntry(t, p, p);
    for (let seed = 0; seed < 20; seed++) {
      expect(chooseMasqPort(t, TO_BE, 5000, 0, { rng: new SeededRandom(seed), fullyRandom: true, rangeMin: 5000, rangeMax: 5009 })).toBe(5006);
    }
    masqEntry(t, 5006, 5006);
    expect(chooseMasqPort(t, TO_BE, 5000, 0, { rng: new SeededRandom(1), rangeMin: 5000, rangeMax: 5009 })).toBe(-1);
    // Another backend port or address is a different reply tuple: free again.
    expect(chooseMasqPort(t, tup(6, BE, NODE, 8081, 0), 5000, 0, { rng: new SeededRandom(1), rangeMin: 5000, rangeMax: 5009 })).toBe(5000);
  });

  it('gives up after 128+64+32+16+8 probes in a large, nearly full range', () => {
    const t = new ConntrackTable({ max: 4096, seed: 73 });
    for (let p = 20000; p < 24000; p++) masqEntry(t, p, p);
    let draws = 0;
    const rng = { nextU32: () => { draws++; return 0; } }; // offset 0 every round: always the taken start
    expect(chooseMasqPort(t, TO_BE, 30000, 0, { rng, fullyRandom: true, rangeMin: 20000, rangeMax: 24000 - 1 + 0 })).toBe(-1);
    expect(draws).toBe(5);
  });

  it('property: the chosen port is in range and its reply tuple unused', () => {
    fc.assert(fc.property(
      fc.array(fc.integer({ min: 6000, max: 6063 }), { maxLength: 64 }),
      fc.integer({ min: 6000, max: 6063 }), fc.boolean(), fc.integer(),
      (taken, orig, fully, seed) => {
        const t = new ConntrackTable({ max: 128, seed });
        const used = new Set<number>();
        for (const p of taken) if (!used.has(p) && masqEntry(t, p, p) >= 0) used.add(p);
        const port = chooseMasqPort(t, TO_BE, orig, 0, { rng: new SeededRandom(seed), fullyRandom: fully, rangeMin: 6000, rangeMax: 6063 });
        if (used.size === 64) {
          expect(port).toBe(-1);
        } else {
          expect(port).toBeGreaterThanOrEqual(6000);
          expect(port).toBeLessThanOrEqual(6063);
          expect(used.has(port)).toBe(false);
          expect(t.tupleInUse(tup(6, BE, NODE, 8080, port), 0)).toBe(false);
          if (!fully && !used.has(orig)) expect(port).toBe(orig);
        }
      }), { numRuns: 200 });
  });

  it('ICMP: chooses an echo id for (1, peer, nat, id, 0)', () => {
    const t = new ConntrackTable({ max: 8, seed: 74 });
    t.create(tup(1, C, BE, 77, 0), tup(1, BE, NODE, 77, 0), 0);
    expect(chooseMasqPort(t, tup(1, BE, NODE, 0, 0), 78, 0, { rng: new SeededRandom(1) })).toBe(78);
    const id = chooseMasqPort(t, tup(1, BE, NODE, 0, 0), 77, 0, { rng: new SeededRandom(1) });
    expect(id).not.toBe(77);
    expect(id).toBeGreaterThanOrEqual(0);
    expect(id).toBeLessThanOrEqual(65535);
  });

  it('avoidReuseMs: a released (masq, port, backend) is not handed out again for that long', () => {
    const t = new ConntrackTable({ max: 64, seed: 75 });
    const s = masqEntry(t, 1, 7000, 0);
    handshake(t, s, 0);
    t.update(s, DIR_REPLY, RST | ACK, 0, 40, 1000); // aborted: CLOSE, removed soon after
    t.remove(s);
    expect(t.releasedAt(tup(6, BE, NODE, 8080, 7000))).toBe(1000);
    expect(t.recentlyReleased(tup(6, BE, NODE, 8080, 7000), 2000, 60_000)).toBe(true);
    expect(chooseMasqPort(t, TO_BE, 7000, 2000, { rng: new SeededRandom(1), avoidReuseMs: 60_000, rangeMin: 7000, rangeMax: 7001 })).toBe(7001);
    masqEntry(t, 2, 7001, 2000);
    expect(chooseMasqPort(t, TO_BE, 7000, 2000, { rng: new SeededRandom(1), avoidReuseMs: 60_000, rangeMin: 7000, rangeMax: 7001 })).toBe(-1);
    // Without the check, or after the hold, the port is fine.
    expect(chooseMasqPort(t, TO_BE, 7000, 2000, { rng: new SeededRandom(1), rangeMin: 7000, rangeMax: 7001 })).toBe(7000);
    expect(chooseMasqPort(t, TO_BE, 7000, 61_000, { rng: new SeededRandom(1), avoidReuseMs: 60_000, rangeMin: 7000, rangeMax: 7001 })).toBe(7000);
  });

  it('the released memory is bounded', () => {
    const t = new ConntrackTable({ max: 64, seed: 76, releaseCapacity: 8 });
    for (let i = 0; i < 40; i++) {
      const s = masqEntry(t, i, 9000 + i, i);
      t.update(s, DIR_ORIGINAL, SYN, 0, 60, i);
      t.remove(s);
    }
    let remembered = 0;
    for (let i = 0; i < 40; i++) if (t.releasedAt(tup(6, BE, NODE, 8080, 9000 + i)) >= 0) remembered++;
    expect(remembered).toBe(8);
    expect(t.releasedAt(tup(6, BE, NODE, 8080, 9039))).toBe(39);
  });

  it('evictClosing reclaims a long-idle TIME_WAIT port for a new SYN', () => {
    const t = new ConntrackTable({ max: 64, seed: 77 });
    const s = masqEntry(t, 1, 7100, 0);
    handshake(t, s, 0);
    pkt(t, s, DIR_ORIGINAL, FIN | ACK, 10); pkt(t, s, DIR_REPLY, FIN | ACK, 11); pkt(t, s, DIR_ORIGINAL, ACK, 12);
    expect(t.tcpState(s)).toBe(TCP_TIME_WAIT);
    const opts = { rng: new SeededRandom(1), fullyRandom: true, avoidReuseMs: 60_000, rangeMin: 7100, rangeMax: 7100, evictClosing: true };
    // Idle 30 s: still within the 60 s hold.
    expect(chooseMasqPort(t, TO_BE, 7100, 30_012, opts)).toBe(-1);
    // Idle 61 s: evicted.
    expect(chooseMasqPort(t, TO_BE, 7100, 61_012, opts)).toBe(7100);
    expect(t.counters.natEvictions).toBe(1);
    expect(t.isLive(s)).toBe(false);
    // Without evictClosing the kernel-classic behaviour: taken.
    const u = masqEntry(t, 2, 7101, 0);
    handshake(t, u, 0);
    pkt(t, u, DIR_ORIGINAL, FIN | ACK, 10); pkt(t, u, DIR_REPLY, FIN | ACK, 11); pkt(t, u, DIR_ORIGINAL, ACK, 12);
    expect(chooseMasqPort(t, TO_BE, 7101, 61_012, { ...opts, rangeMin: 7101, rangeMax: 7101, evictClosing: false })).toBe(-1);
  });
});

describe('formatting', () => {
  it('conntrack -L lines match byte for byte', () => {
    const t = new ConntrackTable({ max: 16, seed: 80 });
    const s = hairpin(t, 0);
    handshake(t, s, 0);
    pkt(t, s, DIR_ORIGINAL, FIN | ACK, 10); pkt(t, s, DIR_REPLY, ACK, 11); pkt(t, s, DIR_REPLY, FIN | ACK, 12); pkt(t, s, DIR_ORIGINAL, ACK, 13);
    expect(formatEntry(t, s, 13 + 3000)).toBe(
      'tcp      6 117 TIME_WAIT src=10.1.139.84 dst=10.99.64.233 sport=48544 dport=9999 src=10.1.139.84 dst=192.168.2.2 sport=80 dport=16495 [ASSURED] mark=0 use=1');
    expect(formatProcEntry(t, s, 13 + 3000)).toBe(
      'ipv4     2 tcp      6 117 TIME_WAIT src=10.1.139.84 dst=10.99.64.233 sport=48544 dport=9999 src=10.1.139.84 dst=192.168.2.2 sport=80 dport=16495 [ASSURED] mark=0 use=1');
    expect(formatEntry(t, s, 13 + 3000, { counters: true, id: true })).toBe(
      'tcp      6 117 TIME_WAIT src=10.1.139.84 dst=10.99.64.233 sport=48544 dport=9999 packets=4 bytes=240 ' +
      'src=10.1.139.84 dst=192.168.2.2 sport=80 dport=16495 packets=3 bytes=180 [ASSURED] mark=0 use=1 id=' + t.id(s));

    const u = t.create(tup(17, ip('10.1.236.141'), ip('10.96.0.10'), 40000, 53), tup(17, ip('10.1.139.90'), ip('10.1.236.141'), 53, 40000), 5000);
    t.update(u, DIR_ORIGINAL, 0, 30, 58, 5000);
    expect(formatEntry(t, u, 6500)).toBe(
      'udp      17 28 src=10.1.236.141 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] src=10.1.139.90 dst=10.1.236.141 sport=53 dport=40000 mark=0 use=1');

    const C = ip('10.1.236.141'), S = ip('10.99.64.233');
    const i = t.create(tup(1, C, S, 1234, 0), tup(1, S, C, 1234, 0), 7000, 8, 0);
    t.update(i, DIR_ORIGINAL, 0, 56, 84, 7000);
    t.update(i, DIR_REPLY, 0, 56, 84, 7001);
    expect(formatEntry(t, i, 7501)).toBe(
      'icmp     1 29 src=10.1.236.141 dst=10.99.64.233 type=8 code=0 id=1234 src=10.99.64.233 dst=10.1.236.141 type=0 code=0 id=1234 mark=0 use=1');

    const g = t.create(tup(47, C, S, 0, 0), tup(47, S, C, 0, 0), 0);
    t.update(g, DIR_ORIGINAL, 0, 0, 100, 0);
    expect(formatEntry(t, g, 0)).toBe(
      'gre      47 600 src=10.1.236.141 dst=10.99.64.233 srckey=0x0 dstkey=0x0 [UNREPLIED] src=10.99.64.233 dst=10.1.236.141 srckey=0x0 dstkey=0x0 mark=0 use=1');
    const x = t.create(tup(4, C, S, 0, 0), tup(4, S, C, 0, 0), 0);
    t.update(x, DIR_ORIGINAL, 0, 0, 100, 0);
    expect(formatEntry(t, x, 0, { proc: true })).toBe(
      'ipv4     2 unknown  4 600 src=10.1.236.141 dst=10.99.64.233 [UNREPLIED] src=10.99.64.233 dst=10.1.236.141 mark=0 use=1');
    t.setMark(x, 0x4000);
    expect(formatEntry(t, x, 0)).toContain(' mark=16384 use=1');
    expect(formatIp(0xffffffff)).toBe('255.255.255.255');
  });

  it('conntrack -E event lines', () => {
    const t = new ConntrackTable({ max: 16, seed: 81 });
    const lines: string[] = [];
    let destroyWithCounters = '';
    t.onEvent = (type: ConntrackEventType, slot: number) => {
      lines.push(formatEvent(type, t, slot));
      if (type === 'DESTROY') destroyWithCounters = formatEvent(type, t, slot, undefined, { counters: true, id: true });
    };
    const s = hairpin(t, 0);
    const id = t.id(s);
    expect(lines).toEqual([]); // NEW comes with the first packet
    handshake(t, s, 0);
    pkt(t, s, DIR_ORIGINAL, ACK | PSH, 100); // no change: no event
    pkt(t, s, DIR_ORIGINAL, FIN | ACK, 200);
    pkt(t, s, DIR_REPLY, FIN | ACK, 201);
    pkt(t, s, DIR_ORIGINAL, ACK, 202);
    t.lookup(tup(6, CLIENT, VIP, 48544, 9999), 202 + 120_000);
    const O = 'src=10.1.139.84 dst=10.99.64.233 sport=48544 dport=9999';
    const R = 'src=10.1.139.84 dst=192.168.2.2 sport=80 dport=16495';
    expect(lines).toEqual([
      `    [NEW] tcp      6 120 SYN_SENT ${O} [UNREPLIED] ${R}`,
      ` [UPDATE] tcp      6 60 SYN_RECV ${O} ${R}`,
      ` [UPDATE] tcp      6 432000 ESTABLISHED ${O} ${R} [ASSURED]`,
      ` [UPDATE] tcp      6 120 FIN_WAIT ${O} ${R} [ASSURED]`,
      ` [UPDATE] tcp      6 30 LAST_ACK ${O} ${R} [ASSURED]`,
      ` [UPDATE] tcp      6 120 TIME_WAIT ${O} ${R} [ASSURED]`,
      `[DESTROY] tcp      6 TIME_WAIT ${O} ${R} [ASSURED]`,
    ]);
    expect(destroyWithCounters).toBe(
      `[DESTROY] tcp      6 TIME_WAIT ${O} packets=5 bytes=300 ${R} packets=2 bytes=120 [ASSURED] id=${id}`);
  });

  it('UDP events: NEW, UPDATE on reply and on ASSURED', () => {
    const t = new ConntrackTable({ max: 16, seed: 82 });
    const lines: string[] = [];
    t.onEvent = (type, slot) => lines.push(formatEvent(type, t, slot));
    const C = ip('10.1.236.141'), D = ip('10.96.0.10'), E = ip('10.1.139.90');
    const u = t.create(tup(17, C, D, 40000, 53), tup(17, E, C, 53, 40000), 0);
    t.update(u, DIR_ORIGINAL, 0, 30, 58, 0);
    t.update(u, DIR_REPLY, 0, 30, 58, 10);
    t.update(u, DIR_ORIGINAL, 0, 30, 58, 3000);
    expect(lines).toEqual([
      '    [NEW] udp      17 30 src=10.1.236.141 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] src=10.1.139.90 dst=10.1.236.141 sport=53 dport=40000',
      ' [UPDATE] udp      17 30 src=10.1.236.141 dst=10.96.0.10 sport=40000 dport=53 src=10.1.139.90 dst=10.1.236.141 sport=53 dport=40000',
      ' [UPDATE] udp      17 120 src=10.1.236.141 dst=10.96.0.10 sport=40000 dport=53 src=10.1.139.90 dst=10.1.236.141 sport=53 dport=40000 [ASSURED]',
    ]);
  });
});

describe('RandomPool', () => {
  it('hands out words from bulk fills', () => {
    let fills = 0;
    const p = new RandomPool(4, (b) => { fills++; for (let i = 0; i < b.length; i++) b[i] = fills * 10 + i; });
    expect([p.nextU32(), p.nextU32(), p.nextU32(), p.nextU32(), p.nextU32()]).toEqual([10, 11, 12, 13, 20]);
    expect(fills).toBe(2);
  });

  it('crypto-backed draws are in range', () => {
    const p = new RandomPool();
    for (let i = 0; i < 1000; i++) {
      const x = p.nextU32();
      expect(Number.isInteger(x) && x >= 0 && x <= 0xffffffff).toBe(true);
      const y = p.nextBelow(7);
      expect(y >= 0 && y < 7).toBe(true);
      const d = p.nextDouble();
      expect(d >= 0 && d < 1).toBe(true);
      expect(p.nextU16()).toBeLessThan(65536);
    }
  });

  it('update() on a free slot is refused', () => {
    const t = new ConntrackTable({ max: 4, seed: 91 });
    const s = hairpin(t, 0);
    t.remove(s);
    expect(t.update(s, DIR_ORIGINAL, SYN, 0, 60, 0)).toBe(false);
    expect(t.isLive(s)).toBe(false);
    expect(() => new ConntrackTable({ max: 4, hash: 'md5' as any })).toThrow();
  });

  it('event hooks stay optional', () => {
    const t = new ConntrackTable({ max: 4, seed: 90 });
    const s = hairpin(t, 0);
    expect(t.update(s, DIR_ORIGINAL, SYN, 0, 60, 0)).toBe(true);
    expect(t.lastVerdict).toBe(CT_ACCEPT);
    t.remove(s);
    expect(t.size).toBe(0);
  });
});

describe('Tuple', () => {
  it('keeps addresses unsigned and ports in 16 bits; invertOf swaps, ICMP keeps (id, 0)', () => {
    const t = new Tuple(6, ip('255.1.2.3'), ip('10.0.0.1'), 65535, 80);
    expect([t.proto, t.src, t.dst, t.sport, t.dport]).toEqual([6, ip('255.1.2.3'), ip('10.0.0.1'), 65535, 80]);
    const r = new Tuple().invertOf(t);
    expect([r.proto, r.src, r.dst, r.sport, r.dport]).toEqual([6, ip('10.0.0.1'), ip('255.1.2.3'), 80, 65535]);
    expect(new Tuple().invertOf(r).equals(t)).toBe(true);
    r.dport = 1234; r.sport = 4321;
    expect([r.sport, r.dport]).toEqual([4321, 1234]);
    const e = new Tuple(1, ip('10.0.0.1'), ip('10.0.0.2'), 0xbeef, 0);
    expect(e.invertOf(e).equals(new Tuple(1, ip('10.0.0.2'), ip('10.0.0.1'), 0xbeef, 0))).toBe(true);
  });
});
