// Raw-socket batch I/O for kube_tun_native (module overview: addon.cc): recvmmsg()/sendmmsg(), so
// a batch of IPIP packets costs one system call instead of one per packet (+1 for the EAGAIN).
//
// recvBatch(fd, slab, offs, lens, slotSize, headroom, capacity, stats?) -> count
//   One recvmmsg(MSG_DONTWAIT) into slots 0..capacity-1 (at i*slotSize + headroom). A datagram the
//   kernel truncated (MSG_TRUNC, or one that filled the room exactly) is discarded and counted as
//   oversize; the good ones are returned in order, so offs[] may skip the slot a dropped one used.
//   EAGAIN -> 0. Other errors throw (recvmmsg reports an error only when nothing was received).
// sendBatch(fd, slab, offs, lens, count, stats?) -> written
//   sendmmsg() of packets i < count with lens[i] > 0, each a whole IPv4 packet (the socket has
//   IP_HDRINCL); the destination is the packet's own IPv4 destination address. Error handling as
//   writeBatch: EAGAIN/ENOBUFS stop the batch (backpressure), EBADF throws, anything else (or a
//   packet outside the slab or shorter than an IPv4 header) skips that packet and counts it.
//
// The mmsghdr/iovec/sockaddr arrays are thread_local and only grow (the addon runs on the main
// thread and in worker threads alike); no allocation per packet or per call once warm.

#include "common.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <vector>

namespace kt {
namespace {

constexpr uint32_t kMaxVlen = 1024;  // UIO_MAXIOV: the kernel caps vlen there anyway
constexpr size_t kIpv4DstOffset = 16;
constexpr size_t kIpv4MinHeader = 20;

struct MsgArrays {
  std::vector<struct mmsghdr> msgs;
  std::vector<struct iovec> iovs;
  std::vector<struct sockaddr_in> addrs;
  std::vector<uint32_t> index;  // sendBatch: batch index of msgs[k]

  void Reserve(uint32_t n) {
    if (msgs.size() >= n) return;
    msgs.resize(n);
    iovs.resize(n);
    addrs.resize(n);
    index.resize(n);
  }
};

thread_local MsgArrays tls;

}  // namespace

Napi::Value RecvBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static const char* usage =
      "recvBatch(fd, slab: Buffer, offs: Uint32Array, lens: Uint32Array, slotSize, headroom, capacity, "
      "stats?: Float64Array)";
  ReadArgs a;
  if (!ParseReadArgs(info, usage, &a)) return env.Undefined();
  double* stats;
  if (!OptionalStats(info, 7, READ_STAT_LEN, &stats)) {
    ThrowType(env, usage);
    return env.Undefined();
  }
  const uint32_t vlen = a.capacity < kMaxVlen ? a.capacity : kMaxVlen;
  if (vlen == 0) return Napi::Number::New(env, 0);
  tls.Reserve(vlen);
  const size_t room = a.slotSize - a.headroom;
  struct mmsghdr* msgs = tls.msgs.data();
  struct iovec* iovs = tls.iovs.data();
  for (uint32_t i = 0; i < vlen; i++) {
    iovs[i].iov_base = a.slab + static_cast<size_t>(i) * a.slotSize + a.headroom;
    iovs[i].iov_len = room;
    memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_len = 0;
  }
  int r;
  ReadTally t;
  do {
    t.calls += 1;
    r = recvmmsg(a.fd, msgs, vlen, MSG_DONTWAIT, nullptr);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    const int e = errno;
    const bool drained = e == EAGAIN || e == EWOULDBLOCK;
    if (!drained) t.Error(e);
    t.Flush(stats);
    if (drained) return Napi::Number::New(env, 0);
    ThrowErrno(env, "recvmmsg", "fd " + std::to_string(a.fd), e);
    return env.Undefined();
  }
  uint32_t n = 0;
  for (int k = 0; k < r; k++) {
    const size_t len = msgs[k].msg_len;
    if ((msgs[k].msg_hdr.msg_flags & MSG_TRUNC) != 0 || len >= room) {
      t.oversize += 1;
      continue;
    }
    a.offs[n] = static_cast<uint32_t>(static_cast<size_t>(k) * a.slotSize + a.headroom);
    a.lens[n] = static_cast<uint32_t>(len);
    t.bytes += static_cast<double>(len);
    n++;
  }
  t.packets = n;
  t.Flush(stats);
  return Napi::Number::New(env, n);
}

Napi::Value SendBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static const char* usage =
      "sendBatch(fd, slab: Buffer, offs: Uint32Array, lens: Uint32Array, count, stats?: Float64Array)";
  WriteArgs a;
  if (!ParseWriteArgs(info, usage, &a)) return env.Undefined();
  double* stats;
  if (!OptionalStats(info, 5, WRITE_STAT_LEN, &stats)) {
    ThrowType(env, usage);
    return env.Undefined();
  }
  WriteTally t;
  int fatal = 0;
  uint32_t i = 0;  // next batch index to consider

  while (i < a.count && fatal == 0) {
    // Gather up to kMaxVlen sendable packets starting at i.
    tls.Reserve(kMaxVlen < a.count - i ? kMaxVlen : a.count - i);
    uint32_t m = 0;
    const uint32_t room = static_cast<uint32_t>(tls.msgs.size());
    for (; i < a.count && m < room; i++) {
      const uint32_t len = a.lens[i];
      if (len == 0) continue;
      const uint32_t off = a.offs[i];
      if (static_cast<size_t>(off) + len > a.slabLen || len < kIpv4MinHeader) {
        t.Skip(EINVAL);
        continue;
      }
      struct sockaddr_in& sa = tls.addrs[m];
      memset(&sa, 0, sizeof(sa));
      sa.sin_family = AF_INET;
      memcpy(&sa.sin_addr.s_addr, a.slab + off + kIpv4DstOffset, 4);  // already network order
      tls.iovs[m].iov_base = const_cast<uint8_t*>(a.slab + off);
      tls.iovs[m].iov_len = len;
      struct msghdr& h = tls.msgs[m].msg_hdr;
      memset(&h, 0, sizeof(h));
      h.msg_name = &sa;
      h.msg_namelen = sizeof(sa);
      h.msg_iov = &tls.iovs[m];
      h.msg_iovlen = 1;
      tls.index[m] = i;
      m++;
    }
    uint32_t k = 0;
    while (k < m) {
      t.calls += 1;
      int r = sendmmsg(a.fd, tls.msgs.data() + k, m - k, MSG_DONTWAIT);
      if (r > 0) {
        for (int j = 0; j < r; j++) t.bytes += static_cast<double>(tls.iovs[k + j].iov_len);
        t.packets += r;
        k += static_cast<uint32_t>(r);
        continue;
      }
      const int e = r == 0 ? EAGAIN : errno;
      if (e == EINTR) continue;
      const WriteFailure f = ClassifyWriteErrno(e);
      if (f == WriteFailure::Backpressure) {
        // Everything from msgs[k] on, and the batch's later packets, stay unwritten.
        t.Backpressure(a.lens, tls.index[k], a.count);
        i = a.count;
        break;
      }
      if (f == WriteFailure::Fatal) {
        fatal = e;
        break;
      }
      t.Skip(e);  // sendmmsg reports an error only for the first message: skip it and go on
      k++;
    }
  }

  t.Flush(stats);
  if (fatal != 0) {
    ThrowErrno(env, "sendmmsg", "fd " + std::to_string(a.fd), fatal);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<uint32_t>(t.packets));
}

}  // namespace kt
