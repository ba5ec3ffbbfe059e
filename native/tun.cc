// TUN device and fd lifecycle for kube_tun_native (module overview: addon.cc).
//
// openTun(name, { vnetHdr?, offload? }) -> { fd, name, vnetHdr, offload, offloadRequested, vnetRefused? }
//   IFF_TUN | IFF_NO_PI, O_NONBLOCK. With vnetHdr: also IFF_VNET_HDR and TUNSETVNETHDRSZ = 10
//   (struct virtio_net_hdr, no num_buffers), then TUNSETOFFLOAD with the richest set the kernel
//   accepts, trying in turn CSUM|TSO4|TSO6|USO4|USO6, CSUM|TSO4|TSO6, CSUM, 0 (the driver refuses a
//   set with any bit it does not know, EINVAL). `offload: false` asks for the header without offloads.
//   `offload` in the result is the set that took effect (TUN_F_* bits), `offloadRequested` the first
//   one tried. If the kernel refuses IFF_VNET_HDR or the header size, the device is reopened plain
//   and vnetHdr is false in the result (vnetRefused: "<ioctl>: <errno text>"): refused optional
//   features never throw.
//   Without vnetHdr: TUNSETOFFLOAD(0), because a persistent device keeps the offload flags of its
//   previous owner, and with any of them set the kernel hands over CHECKSUM_PARTIAL / GSO packets a
//   reader without the vnet header cannot recognise.
//
// readBatch / writeBatch: one read()/write() per packet (a TUN fd has no recvmmsg). With a vnet
// Uint16Array argument the fd must have IFF_VNET_HDR: readv()/writev() move the 10-byte header
// to/from a stack struct and the fields to/from vnet[i*VNET_FIELDS ..] (common.h), so the IP packet
// sits at offs[i] exactly as without the header. The header is host-endian (TUN's legacy virtio
// layout; x86/arm64 are little-endian, which is also what virtio 1.0 mandates).

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

// Debian 12's linux-libc-dev predates UDP segmentation offload on TUN (kernel 6.2).
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

namespace kt {
namespace {

constexpr unsigned kOffloadTries[] = {
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
    0,
};

// struct virtio_net_hdr of <linux/virtio_net.h>, which C++ cannot include (a field named `class`).
struct virtio_net_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
static_assert(sizeof(struct virtio_net_hdr) == 10, "virtio_net_hdr without num_buffers is 10 bytes");

struct Opened {
  int fd = -1;
  std::string name;
  bool vnetHdr = false;
  unsigned offload = 0;
  const char* failedSyscall = nullptr;  // set with err when opening failed
  int err = 0;
};

// One attempt: open /dev/net/tun and attach with or without IFF_VNET_HDR. On failure of an optional
// step (vnet header size) returns fd -1 with err/failedSyscall so the caller can retry plain.
Opened TryOpen(const std::string& name, bool vnet, bool offload) {
  Opened o;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    o.err = errno;
    o.failedSyscall = "open";
    return o;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    o.err = errno;
    o.failedSyscall = "TUNSETIFF";
    close(fd);
    return o;
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  o.name = ifr.ifr_name;
  if (vnet) {
    int sz = static_cast<int>(sizeof(struct virtio_net_hdr));
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      o.err = errno;
      o.failedSyscall = "TUNSETVNETHDRSZ";
      close(fd);
      return o;
    }
  }
  unsigned flags = 0;
  if (vnet && offload) {
    for (unsigned f : kOffloadTries) {
      if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(f)) == 0) {
        flags = f;
        break;
      }
    }
    // The last try (0) cannot be refused for a missing feature; if even it failed, fall through to the
    // mandatory reset below, which reports the error.
  }
  if (flags == 0 && ioctl(fd, TUNSETOFFLOAD, 0UL) < 0) {
    o.err = errno;
    o.failedSyscall = "TUNSETOFFLOAD";
    close(fd);
    return o;
  }
  o.fd = fd;
  o.vnetHdr = vnet;
  o.offload = flags;
  return o;
}

}  // namespace

Napi::Value OpenTun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString() ||
      (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsObject())) {
    ThrowType(env, "openTun(name: string, opts?: { vnetHdr?: boolean, offload?: boolean })");
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.size() >= IFNAMSIZ || name.find('/') != std::string::npos) {
    ThrowErrno(env, "TUNSETIFF", name, EINVAL);
    return env.Undefined();
  }
  bool vnet = false;
  bool offload = true;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object opts = info[1].As<Napi::Object>();
    vnet = opts.Get("vnetHdr").ToBoolean().Value();
    Napi::Value off = opts.Get("offload");
    if (!off.IsUndefined()) offload = off.ToBoolean().Value();
  }

  Opened o = TryOpen(name, vnet, offload);
  std::string refused;
  if (o.fd < 0 && vnet && o.failedSyscall != nullptr &&
      (strcmp(o.failedSyscall, "TUNSETVNETHDRSZ") == 0 ||
       (strcmp(o.failedSyscall, "TUNSETIFF") == 0 && o.err == EINVAL))) {
    // The kernel refuses the vnet header (or its size): today's plain device instead.
    refused = std::string(o.failedSyscall) + ": " + strerror(o.err);
    o = TryOpen(name, false, false);
  }
  if (o.fd < 0) {
    ThrowErrno(env, o.failedSyscall, strcmp(o.failedSyscall, "open") == 0 ? "/dev/net/tun" : name, o.err);
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, o.fd));
  out.Set("name", Napi::String::New(env, o.name));
  out.Set("vnetHdr", Napi::Boolean::New(env, o.vnetHdr));
  out.Set("offload", Napi::Number::New(env, o.offload));
  out.Set("offloadRequested", Napi::Number::New(env, vnet && offload ? kOffloadTries[0] : 0));
  if (!refused.empty()) out.Set("vnetRefused", Napi::String::New(env, refused));
  return out;
}

// openIpipSocket() -> fd. Receives every IPv4 packet with protocol 4 delivered to this host, outer
// header included; while it is open the kernel does not answer IPIP with protocol-unreachable.
// IP_HDRINCL: sendBatch hands over whole outer packets (our own header, id and DF bit); it changes
// nothing for receiving.
Napi::Value OpenIpipSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_IPIP);
  if (fd < 0) {
    ThrowErrno(env, "socket", "AF_INET/SOCK_RAW/IPPROTO_IPIP", errno);
    return env.Undefined();
  }
  int one = 1;
  if (setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof(one)) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "setsockopt", "IP_HDRINCL", err);
    return env.Undefined();
  }
  // A peer's software-GSO batches arrive in bursts of hundreds of 1500-byte packets, which overflow
  // the default receive buffer (~208 KB: every overflow is a TCP retransmission). Ask for 8 MiB
  // (FORCE: root may exceed rmem_max); best effort, the default still works.
  int rcvbuf = 8 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }
  return Napi::Number::New(env, fd);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!FdArg(info, 0, &fd)) {
    ThrowType(env, "closeFd(fd: number)");
    return env.Undefined();
  }
  // Linux releases the fd even when close() reports EINTR: never retry.
  if (close(fd) < 0 && errno != EINTR) {
    ThrowErrno(env, "close", std::to_string(fd), errno);
  }
  return env.Undefined();
}

// readBatch(fd, slab, offs, lens, slotSize, headroom, capacity, stats?, vnet?) -> count
// read() (readv() with vnet) into slot i (at i*slotSize + headroom, at most slotSize - headroom
// bytes) until EAGAIN or `capacity` packets. EINTR is retried. A packet that does not fit (the TUN
// reports its full length, a datagram socket truncates it to exactly the room we gave) is discarded
// and counted as oversize. Any other error throws if nothing was read yet; otherwise the packets
// read so far are returned and the (persistent) error surfaces on the next call.
Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static const char* usage =
      "readBatch(fd, slab: Buffer, offs: Uint32Array, lens: Uint32Array, slotSize, headroom, capacity, "
      "stats?: Float64Array, vnet?: Uint16Array)";
  ReadArgs a;
  if (!ParseReadArgs(info, usage, &a)) return env.Undefined();
  double* stats;
  uint16_t* vnet;
  if (!OptionalStats(info, 7, READ_STAT_LEN, &stats) ||
      !OptionalU16(info, 8, static_cast<size_t>(a.capacity) * VNET_FIELDS, &vnet)) {
    ThrowType(env, usage);
    return env.Undefined();
  }

  const size_t room = a.slotSize - a.headroom;
  const size_t hdrLen = vnet != nullptr ? sizeof(struct virtio_net_hdr) : 0;
  struct virtio_net_hdr hdr;
  struct iovec iov[2];
  iov[0].iov_base = &hdr;
  iov[0].iov_len = sizeof(hdr);
  uint32_t n = 0;
  ReadTally t;
  int err = 0;

  while (n < a.capacity) {
    const size_t off = static_cast<size_t>(n) * a.slotSize + a.headroom;
    ssize_t r;
    t.calls += 1;
    if (vnet != nullptr) {
      iov[1].iov_base = a.slab + off;
      iov[1].iov_len = room;
      r = readv(a.fd, iov, 2);
    } else {
      r = read(a.fd, a.slab + off, room);
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
      break;
    }
    if (r == 0) break;  // neither a TUN nor a raw socket returns 0; do not spin on it
    if (static_cast<size_t>(r) < hdrLen) {
      t.Error(EPROTO);
      continue;
    }
    const size_t len = static_cast<size_t>(r) - hdrLen;
    if (len >= room) {
      t.oversize += 1;
      continue;
    }
    a.offs[n] = static_cast<uint32_t>(off);
    a.lens[n] = static_cast<uint32_t>(len);
    if (vnet != nullptr) {
      uint16_t* v = vnet + static_cast<size_t>(n) * VNET_FIELDS;
      v[VNET_FLAGS] = hdr.flags;
      v[VNET_GSO_TYPE] = hdr.gso_type;
      v[VNET_HDR_LEN] = hdr.hdr_len;
      v[VNET_GSO_SIZE] = hdr.gso_size;
      v[VNET_CSUM_START] = hdr.csum_start;
      v[VNET_CSUM_OFFSET] = hdr.csum_offset;
    }
    t.bytes += static_cast<double>(len);
    n++;
  }

  t.packets = n;
  if (err != 0) t.Error(err);
  t.Flush(stats);
  if (err != 0 && n == 0) {
    ThrowErrno(env, vnet != nullptr ? "readv" : "read", "fd " + std::to_string(a.fd), err);
    return env.Undefined();
  }
  return Napi::Number::New(env, n);
}

// writeBatch(fd, slab, offs, lens, count, stats?, vnet?) -> written
// write() (writev() with the packet's vnet header when vnet is given) each packet i < count with
// lens[i] > 0. EINTR is retried. EAGAIN/EWOULDBLOCK/ENOBUFS stop the batch: this packet and every
// later one are counted as backpressure drops. EBADF (the fd is gone) throws. Any other error
// (EINVAL for a packet that is not IP or a vnet header that does not match it, EIO, EMSGSIZE, ...)
// skips that packet and counts it; a malformed packet never throws. A packet whose offs/lens point
// outside the slab is skipped and counted the same way (errno EINVAL), never read.
Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static const char* usage =
      "writeBatch(fd, slab: Buffer, offs: Uint32Array, lens: Uint32Array, count, stats?: Float64Array, "
      "vnet?: Uint16Array)";
  WriteArgs a;
  if (!ParseWriteArgs(info, usage, &a)) return env.Undefined();
  double* stats;
  uint16_t* vnet;
  if (!OptionalStats(info, 5, WRITE_STAT_LEN, &stats) ||
      !OptionalU16(info, 6, static_cast<size_t>(a.count) * VNET_FIELDS, &vnet)) {
    ThrowType(env, usage);
    return env.Undefined();
  }

  struct virtio_net_hdr hdr;
  struct iovec iov[2];
  iov[0].iov_base = &hdr;
  iov[0].iov_len = sizeof(hdr);
  WriteTally t;
  int fatal = 0;

  for (uint32_t i = 0; i < a.count; i++) {
    const uint32_t len = a.lens[i];
    if (len == 0) continue;
    const uint32_t off = a.offs[i];
    if (static_cast<size_t>(off) + len > a.slabLen) {
      t.Skip(EINVAL);
      continue;
    }
    if (vnet != nullptr) {
      const uint16_t* v = vnet + static_cast<size_t>(i) * VNET_FIELDS;
      hdr.flags = static_cast<uint8_t>(v[VNET_FLAGS]);
      hdr.gso_type = static_cast<uint8_t>(v[VNET_GSO_TYPE]);
      hdr.hdr_len = v[VNET_HDR_LEN];
      hdr.gso_size = v[VNET_GSO_SIZE];
      hdr.csum_start = v[VNET_CSUM_START];
      hdr.csum_offset = v[VNET_CSUM_OFFSET];
      iov[1].iov_base = const_cast<uint8_t*>(a.slab + off);
      iov[1].iov_len = len;
    }
    ssize_t r;
    do {
      t.calls += 1;
      r = vnet != nullptr ? writev(a.fd, iov, 2) : write(a.fd, a.slab + off, len);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      t.packets += 1;
      t.bytes += static_cast<double>(len);
      continue;
    }
    const int e = errno;
    const WriteFailure f = ClassifyWriteErrno(e);
    if (f == WriteFailure::Backpressure) {
      t.Backpressure(a.lens, i, a.count);
      break;
    }
    if (f == WriteFailure::Fatal) {
      fatal = e;
      break;
    }
    t.Skip(e);
  }

  t.Flush(stats);
  if (fatal != 0) {
    ThrowErrno(env, vnet != nullptr ? "writev" : "write", "fd " + std::to_string(a.fd), fatal);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<uint32_t>(t.packets));
}

}  // namespace kt
