// The TCP connection-tracking state machine, modelled on net/netfilter/nf_conntrack_proto_tcp.c.
//
// The tracker guesses, as a man in the middle, the state of the connection from the flags of
// the packets it sees in each direction. A transition is looked up by (direction, flag class,
// current state); the result is a state, "invalid" (the packet is marked INVALID and changes
// nothing) or "ignore" (the packet may be valid for the endpoints but we are out of sync: let it
// through, change nothing). Window/sequence tracking is not modelled: we behave like the kernel
// with nf_conntrack_tcp_be_liberal=1 and nf_conntrack_tcp_loose=1 (mid-stream pick-up).
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG } from '../netstack/proto';

// enum tcp_conntrack (include/uapi/linux/netfilter/nf_conntrack_tcp.h); SYN_SENT2 reuses LISTEN's value.
export const TCP_NONE = 0;
export const TCP_SYN_SENT = 1;
export const TCP_SYN_RECV = 2;
export const TCP_ESTABLISHED = 3;
export const TCP_FIN_WAIT = 4;
export const TCP_CLOSE_WAIT = 5;
export const TCP_LAST_ACK = 6;
export const TCP_TIME_WAIT = 7;
export const TCP_CLOSE = 8;
export const TCP_SYN_SENT2 = 9;
/** Number of real states (TCP_CONNTRACK_MAX); also the "invalid" marker (sIV) in the table. */
export const TCP_STATE_COUNT = 10;
export const TCP_INVALID = 10;
/** sIG: ignore the packet (TCP_CONNTRACK_IGNORE). */
export const TCP_IGNORE = 11;

/** tcp_conntrack_names[] */
export const TCP_STATE_NAMES: readonly string[] = Object.freeze([
  'NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2',
]);

// enum tcp_bit_set: the flag class of a segment.
export const TCP_SYN_SET = 0;
export const TCP_SYNACK_SET = 1;
export const TCP_FIN_SET = 2;
export const TCP_ACK_SET = 3;
export const TCP_RST_SET = 4;
export const TCP_NONE_SET = 5;
export const TCP_FLAG_CLASSES = 6;
export const TCP_FLAG_CLASS_NAMES: readonly string[] = Object.freeze(['syn', 'synack', 'fin', 'ack', 'rst', 'none']);

/** Flag class of a segment: RST wins, then SYN (with or without ACK), then FIN, then ACK. */
export function tcpFlagIndex(flags: number): number {
  if (flags & TCP_RST) return TCP_RST_SET;
  if (flags & TCP_SYN) return flags & TCP_ACK ? TCP_SYNACK_SET : TCP_SYN_SET;
  if (flags & TCP_FIN) return TCP_FIN_SET;
  if (flags & TCP_ACK) return TCP_ACK_SET;
  return TCP_NONE_SET;
}

// Valid flag combinations (tcp_error's table): PSH, ECE and CWR are always allowed; of
// FIN/SYN/RST/ACK/URG only these combinations are. Everything else (SYN+FIN, SYN+RST, FIN without
// ACK, no flags at all, ...) is INVALID before any state is looked at.
const VALID_FLAGS = new Uint8Array(64);
for (const f of [
  TCP_SYN, TCP_SYN | TCP_URG, TCP_SYN | TCP_ACK,
  TCP_RST, TCP_RST | TCP_ACK,
  TCP_FIN | TCP_ACK, TCP_FIN | TCP_ACK | TCP_URG,
  TCP_ACK, TCP_ACK | TCP_URG,
]) VALID_FLAGS[f] = 1;
const VALID_MASK = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG;

export function tcpFlagsValid(flags: number): boolean {
  return VALID_FLAGS[flags & VALID_MASK] === 1;
}

// The transition table, written as one row per (direction, flag class); columns are the current
// state in enum order NO SS SR ES FW CW LA TW CL S2. IV = invalid, IG = ignore.
const ROWS: readonly string[] = [
  // ORIGINAL direction
  /* syn    */ 'SS SS IG IG IG IG IG SS SS S2', // new / retransmitted SYN; TW, CL: reopen (RFC 1122)
  /* synack */ 'IV IV SR IV IV IV IV IV IV SR', // only meaningful in simultaneous open
  /* fin    */ 'IV IV FW FW LA LA LA TW CL IV', // close starts; FIN seen both ways -> LAST_ACK
  /* ack    */ 'ES IV ES ES CW CW TW TW CL IV', // NO->ES: mid-stream pick-up; SR->ES: handshake done
  /* rst    */ 'IV CL CL CL CL CL CL CL CL CL',
  /* none   */ 'IV IV IV IV IV IV IV IV IV IV',
  // REPLY direction
  /* syn    */ 'IV S2 IV IV IV IV IV SS IV S2', // SS->S2: simultaneous open; TW->SS: reopen with roles switched
  /* synack */ 'IV SR IG IG IG IG IG IG IG SR', // SS->SR: the normal answer; later ones are ignored
  /* fin    */ 'IV IV FW FW LA LA LA TW CL IV',
  /* ack    */ 'IV IG SR ES CW CW TW TW CL IG', // SS->IG: maybe a half-open connection (challenge ACK)
  /* rst    */ 'IV CL CL CL CL CL CL CL CL CL',
  /* none   */ 'IV IV IV IV IV IV IV IV IV IV',
];
const CODES: Record<string, number> = {
  NO: TCP_NONE, SS: TCP_SYN_SENT, SR: TCP_SYN_RECV, ES: TCP_ESTABLISHED, FW: TCP_FIN_WAIT, CW: TCP_CLOSE_WAIT,
  LA: TCP_LAST_ACK, TW: TCP_TIME_WAIT, CL: TCP_CLOSE, S2: TCP_SYN_SENT2, IV: TCP_INVALID, IG: TCP_IGNORE,
};

/** TRANSITIONS[(dir * 6 + flagClass) * 10 + state] = next state, TCP_INVALID or TCP_IGNORE. */
export const TCP_TRANSITIONS: Readonly<Uint8Array> = (() => {
  const t = new Uint8Array(2 * TCP_FLAG_CLASSES * TCP_STATE_COUNT);
  ROWS.forEach((row, r) => {
    const cells = row.split(' ');
    if (cells.length !== TCP_STATE_COUNT) throw new Error('tcp transition row ' + r);
    cells.forEach((c, s) => {
      const v = CODES[c];
      if (v === undefined) throw new Error('tcp transition cell ' + c);
      t[r * TCP_STATE_COUNT + s] = v;
    });
  });
  return t;
})();

/** Next state for a segment of `flagClass` in direction `dir` (0 original, 1 reply) in `state`. */
export function tcpNextState(dir: number, flagClass: number, state: number): number {
  return TCP_TRANSITIONS[(dir * TCP_FLAG_CLASSES + flagClass) * TCP_STATE_COUNT + state];
}

/**
 * May a segment with these flags create a connection (tcp_new)? Only a valid combination whose
 * transition from NONE in the original direction is a state: a SYN (-> SYN_SENT) or, because
 * nf_conntrack_tcp_loose=1 picks up connections mid-stream, an ACK (-> ESTABLISHED). A SYN/ACK,
 * FIN, RST or a flagless segment cannot.
 */
export function tcpCanCreate(flags: number): boolean {
  if (!tcpFlagsValid(flags)) return false;
  return tcpNextState(0, tcpFlagIndex(flags), TCP_NONE) < TCP_STATE_COUNT;
}

/** States a table under pressure may drop even when ASSURED (tcp_can_early_drop). */
export function tcpCanEarlyDrop(state: number): boolean {
  return state === TCP_FIN_WAIT || state === TCP_LAST_ACK || state === TCP_TIME_WAIT ||
    state === TCP_CLOSE || state === TCP_CLOSE_WAIT;
}
