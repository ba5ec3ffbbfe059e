// The control socket: a Unix socket (0600) speaking one JSON request line per connection.
// The answer is text; streaming commands (conntrack -E) keep the connection open.
import * as net from 'node:net';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ControlRequest { cmd: string; args?: Record<string, unknown> }
export type ControlHandler = (req: ControlRequest, sock: net.Socket) => string | void | Promise<string | void>;

export const DEFAULT_CONTROL_DIR = '/run/kube-tun';

/** The network namespace this process runs in, as its inode number ('' when /proc does not say). */
function netnsInode(pid: number | 'self'): string {
  try {
    return /\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${pid}/ns/net`))?.[1] ?? '';
  } catch {
    return '';
  }
}

/**
 * `/run/kube-tun/<tun>.sock` in the host's network namespace; inside any other one
 * `/run/kube-tun/netns-<inode>/<tun>.sock`. /run is shared by all network namespaces, so without
 * the namespace in the path the daemons of two node namespaces (each with its own kt0) would
 * claim the same socket, and `ip netns exec NODE kube-tun conntrack -L` could not find its own.
 */
export function defaultControlSocket(tun: string): string {
  const mine = netnsInode('self'), host = netnsInode(1);
  const dir = mine === '' || mine === host ? DEFAULT_CONTROL_DIR : path.join(DEFAULT_CONTROL_DIR, `netns-${mine}`);
  return path.join(dir, `${tun}.sock`);
}

/** A default socket's per-namespace directory goes with its last socket. */
export function removeNetnsSocketDir(file: string): void {
  const dir = path.dirname(file);
  if (path.dirname(dir) !== DEFAULT_CONTROL_DIR || !path.basename(dir).startsWith('netns-')) return;
  try { fs.rmdirSync(dir); } catch { /* not empty or gone */ }
}

/**
 * Listen on `file` (mode 0600). A stale socket left by a killed daemon is replaced; one a live
 * daemon still answers on is not (two daemons on one path would steal each other's clients):
 * that rejects, naming the path. Resolves once listening.
 */
export async function serveControl(file: string, handler: ControlHandler): Promise<net.Server> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (await socketAnswers(file)) {
    throw new Error(`control socket ${file}: another kube-tun daemon answers there (give this one its own --control-socket)`);
  }
  fs.rmSync(file, { force: true });
  const server = net.createServer((sock) => {
    let buf = '';
    let done = false;
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('data', async (chunk) => {
      if (done) return; // one request per connection; later input (e.g. from a -E reader) is ignored
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > 65536) { done = true; sock.end('error: request too long\n'); }
        return;
      }
      done = true;
      const line = buf.slice(0, nl);
      buf = '';
      let req: ControlRequest;
      try {
        req = JSON.parse(line);
        if (typeof req.cmd !== 'string') throw new Error('missing "cmd"');
      } catch (e: any) {
        sock.end(`error: bad request: ${e.message}\n`);
        return;
      }
      try {
        const out = await handler(req, sock);
        if (typeof out === 'string') sock.end(out);
      } catch (e: any) {
        sock.end(`error: ${e.message}\n`);
      }
    });
  });
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => { server.removeListener('error', reject); resolve(); });
    });
  } finally {
    process.umask(oldMask);
  }
  fs.chmodSync(file, 0o600);
  return server;
}

/** Does a daemon answer on this socket path? (false for a missing file or a stale socket). */
export function socketAnswers(file: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    if (!fs.existsSync(file)) { resolve(false); return; }
    const sock = net.createConnection(file);
    const done = (v: boolean) => { clearTimeout(t); sock.destroy(); resolve(v); };
    const t = setTimeout(() => done(true), timeoutMs); // accepted but slow: someone is there
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Client side: send one request, stream the answer to `onData`, resolve when the daemon closes. */
export function controlRequest(file: string, req: ControlRequest, onData: (s: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(file);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => onData(d));
    sock.on('end', () => resolve());
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new Error(`no kube-tun daemon answers on ${file} (${e.code}); is it running? (--control-socket)`));
      } else reject(e);
    });
  });
}
