// The HTTP side the metrics and health servers share: kube-proxy style bind addresses, listening
// and closing, and the plain-text error answers both give.
import type * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

/** kube-proxy's ports: --healthz-bind-address and --metrics-bind-address. */
export const HEALTHZ_PORT = 10256;
export const METRICS_PORT = 10249;
export const DEFAULT_HEALTHZ_BIND_ADDRESS = `127.0.0.1:${HEALTHZ_PORT}`;
export const DEFAULT_METRICS_BIND_ADDRESS = `127.0.0.1:${METRICS_PORT}`;

export interface BindAddress { host: string; port: number }

/**
 * Parses kube-proxy style bind addresses: "127.0.0.1:10249", "0.0.0.0:10249", ":10249" (all
 * IPv4+IPv6 interfaces), "[::1]:10249", "[::]:10249", or a bare address ("0.0.0.0") which gets
 * `defaultPort`. Port 0 lets the OS choose (tests). Throws with the offending text.
 */
export function parseBindAddress(s: string, defaultPort?: number): BindAddress {
  const bad = (why: string) => new Error(`bind address "${s}": ${why} (expected HOST:PORT, e.g. 127.0.0.1:10249 or [::]:10249)`);
  let host: string, portText: string | undefined;
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d*))?$/.exec(s);
  if (v6) {
    host = v6[1]; portText = v6[2];
  } else {
    const colon = s.lastIndexOf(':');
    if (colon >= 0 && s.indexOf(':') !== colon) throw bad('an IPv6 address needs brackets');
    if (colon < 0) { host = s; portText = undefined; } else { host = s.slice(0, colon); portText = s.slice(colon + 1); }
  }
  if (host !== '' && !/^[0-9a-fA-F:.]+$/.test(host) && !/^[A-Za-z0-9.-]+$/.test(host)) throw bad('bad host');
  let port: number;
  if (portText === undefined || portText === '') {
    if (defaultPort === undefined) throw bad('missing port');
    port = defaultPort;
  } else {
    port = Number(portText);
    if (!/^\d+$/.test(portText) || port > 65535) throw bad('port must be 0-65535');
  }
  return { host, port };
}

/**
 * Starts listening; resolves with the bound address (port 0 -> the OS's choice), rejects on
 * EADDRINUSE etc. With `announce`, logs either way ("<what> server listening" / "… failed to start",
 * naming `bindAddress` as given).
 */
export function listenOn(server: http.Server, addr: BindAddress, announce?: { log?: Logger; what: string; bindAddress?: string }): Promise<AddressInfo> {
  const listening = new Promise<AddressInfo>((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    // host '' = all interfaces (node binds :: with IPv4-mapped, or 0.0.0.0 without IPv6)
    server.listen({ host: addr.host === '' ? undefined : addr.host, port: addr.port }, () => {
      server.removeListener('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
  if (announce) {
    const { log, what, bindAddress } = announce;
    listening.then(
      (a) => log?.info({ address: `${a.address}:${a.port}` }, `${what} server listening`),
      (e: Error) => log?.error({ err: e.message, bindAddress }, `${what} server failed to start`),
    );
  }
  return listening;
}

/** Close the server now, dropping keep-alive connections (scrapers keep them open). */
export function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) { resolve(); return; }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

const TEXT = 'text/plain; charset=utf-8';

/** Answers 405 to anything but GET and HEAD; true when it did (the request is then done). */
export function refuseMethod(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  if (req.method === 'GET' || req.method === 'HEAD') return false;
  res.writeHead(405, { 'Content-Type': TEXT, Allow: 'GET, HEAD' });
  res.end('method not allowed\n');
  return true;
}

/** Go's net/http 404 text, as kube-proxy answers an unknown path. */
export function notFound(res: http.ServerResponse): void {
  res.writeHead(404, { 'Content-Type': TEXT });
  res.end('404 page not found\n');
}
