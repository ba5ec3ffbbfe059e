// `conntrack -E`: conntrack events fanned out to the control-socket connections that asked for
// them, each with its own filter and event mask, in conntrack-tools' event format.
import type * as net from 'node:net';
import type { Logger } from 'pino';
import { formatEvent } from '../conntrack';
import type { ConntrackTable, ConntrackEventType } from '../conntrack';
import { compileFilter, CONNTRACK_TOOL } from './conntrack-filter';
import type { ListFilter } from './conntrack-filter';

/** A `conntrack -E` reader this far behind loses events (the kernel's ENOBUFS). */
const WATCHER_MAX_BUFFERED = 4 << 20;
const EVENT_TYPES: readonly ConntrackEventType[] = ['NEW', 'UPDATE', 'DESTROY'];

interface Watcher { match: (slot: number) => boolean; mask: Set<ConntrackEventType>; lost: number }

export class ConntrackEvents {
  private readonly watchers = new Map<net.Socket, Watcher>();
  /** Set (to the time) while `conntrack -D` removes entries: their DESTROY events show the time left. */
  private deletingNow = 0;

  constructor(private readonly ct: ConntrackTable, private readonly log: Logger) {}

  /** Connections listening for events. */
  get listeners(): number { return this.watchers.size; }

  /** The table's onEvent: one line per interested listener, formatted at most once. */
  onEvent(type: ConntrackEventType, slot: number): void {
    if (this.watchers.size === 0) return;
    let line: string | undefined;
    for (const [sock, w] of this.watchers) {
      if (!w.mask.has(type) || !w.match(slot)) continue;
      if (sock.writableLength > WATCHER_MAX_BUFFERED) { w.lost++; continue; }
      if (w.lost > 0) {
        sock.write(`${CONNTRACK_TOOL}: WARNING: We have hit ENOBUFS! We are losing events (${w.lost} lost).\n`);
        w.lost = 0;
      }
      line ??= this.eventLine(type, slot);
      sock.write(line);
    }
  }

  private eventLine(type: ConntrackEventType, slot: number): string {
    if (type === 'DESTROY' && this.deletingNow !== 0) {
      // A delete from `conntrack -D`: the kernel's event then still carries the time left (an
      // expiry's does not), e.g. "[DESTROY] tcp      6 119 TIME_WAIT src=…".
      return '[DESTROY]' + formatEvent('UPDATE', this.ct, slot, this.deletingNow).slice(9) + '\n';
    }
    // Timeouts as of the packet that caused the event, like the kernel's event at that moment
    // ("120 SYN_SENT").
    return formatEvent(type, this.ct, slot, type === 'DESTROY' ? undefined : this.ct.lastSeen(slot)) + '\n';
  }

  /** `conntrack -E [-e MASK] [filters]` on `sock` until it closes. Throws on a bad mask or filter. */
  add(sock: net.Socket, a: Record<string, any>): void {
    const mask = new Set<ConntrackEventType>();
    for (const t of String(a.eventMask ?? 'ALL').toUpperCase().split(',').map((x) => x.trim())) {
      if (t === 'ALL') EVENT_TYPES.forEach((e) => mask.add(e));
      else if ((EVENT_TYPES as readonly string[]).includes(t)) mask.add(t as ConntrackEventType);
      else throw new Error(`conntrack -e: unknown event "${t}" (NEW, UPDATE, DESTROY, ALL)`);
    }
    const w: Watcher = { match: compileFilter(this.ct, a as ListFilter), mask, lost: 0 };
    this.watchers.set(sock, w);
    sock.on('close', () => this.watchers.delete(sock));
    this.log.debug({ watchers: this.watchers.size }, 'conntrack event listener attached');
  }

  /** `conntrack -D`: removes the entries at `slots`; their DESTROY events carry the time left at `now`. */
  remove(slots: readonly number[], now: number): void {
    this.deletingNow = now;
    try {
      for (const s of slots) this.ct.remove(s);
    } finally {
      this.deletingNow = 0;
    }
  }

  /** Ends every listener's connection (daemon stop). */
  closeAll(): void {
    for (const sock of this.watchers.keys()) sock.destroy();
  }
}
