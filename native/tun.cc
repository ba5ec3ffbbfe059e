// kube_tun_native: the only native code of kube-tun.
//
// Batched packet I/O on a TUN device (IFF_TUN | IFF_NO_PI) and on a raw IPPROTO_IPIP socket,
// over one slab shared with JavaScript (the udx-native model): packet i of a batch lives at
// slab[offs[i] .. offs[i] + lens[i]); reads put it at i * slotSize + headroom. One JS -> native call
// per batch, nothing allocated per packet on either side. Readiness comes from a libuv uv_poll_t
// on the fd, so the daemon's batch loop runs on the Node event loop.
//
// Exports (all synchronous; fds are plain numbers; errors are JS Errors with .code/.errno/.syscall):
//   openTun(name) -> { fd, name }
//   openIpipSocket() -> fd
//   readBatch(fd, slab, offs, lens, slotSize, headroom, capacity, stats?) -> count
//   writeBatch(fd, slab, offs, lens, count, stats?) -> written
//   pollStart(fd, callback) -> handle;  pollStop(handle)
//   closeFd(fd)
// Counter layouts of the optional `stats` Float64Arrays are documented at READ_STAT_* / WRITE_STAT_*.

#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace {

// ---- readBatch stats (Float64Array, accumulated, never reset by native code) ----
constexpr size_t READ_STAT_PACKETS = 0;   // packets returned to JS
constexpr size_t READ_STAT_BYTES = 1;     // bytes returned to JS
constexpr size_t READ_STAT_OVERSIZE = 2;  // packets discarded: did not fit in slotSize - headroom
constexpr size_t READ_STAT_LEN = 3;

// ---- writeBatch stats (Float64Array, accumulated) ----
constexpr size_t WRITE_STAT_PACKETS = 0;     // packets written
constexpr size_t WRITE_STAT_BYTES = 1;       // bytes written
constexpr size_t WRITE_STAT_BACKPRESSURE = 2;  // packets not written: EAGAIN/ENOBUFS stopped the batch
constexpr size_t WRITE_STAT_ERRORS = 3;      // packets skipped: the kernel rejected them (EINVAL, EIO, ...)
                                             // or offs/lens pointed outside the slab
constexpr size_t WRITE_STAT_LAST_ERRNO = 4;  // errno of the most recent skipped packet
constexpr size_t WRITE_STAT_LEN = 5;

// ---------------------------------------------------------------- errors

void ThrowErrno(Napi::Env env, const char* syscall, const std::string& subject, int err) {
  std::string msg(syscall);
  if (!subject.empty()) {
    msg += ' ';
    msg += subject;
  }
  msg += ": ";
  msg += strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
}

void ThrowType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
}

bool IsUint32Array(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint32_array;
}

// Optional trailing Float64Array of at least `need` elements; nullptr when absent/undefined.
bool OptionalStats(const Napi::CallbackInfo& info, size_t idx, size_t need, double** out) {
  *out = nullptr;
  if (info.Length() <= idx || info[idx].IsUndefined() || info[idx].IsNull()) return true;
  if (!info[idx].IsTypedArray()) return false;
  Napi::TypedArray ta = info[idx].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_float64_array || ta.ElementLength() < need) return false;
  *out = info[idx].As<Napi::Float64Array>().Data();
  return true;
}

bool FdArg(const Napi::CallbackInfo& info, size_t idx, int* fd) {
  if (info.Length() <= idx || !info[idx].IsNumber()) return false;
  *fd = info[idx].As<Napi::Number>().Int32Value();
  return *fd >= 0;
}

// ---------------------------------------------------------------- open / close

// openTun(name) -> { fd, name }. An empty name lets the kernel choose (tun%d).
Napi::Value OpenTun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    ThrowType(env, "openTun(name: string)");
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.size() >= IFNAMSIZ || name.find('/') != std::string::npos) {
    ThrowErrno(env, "TUNSETIFF", name, EINVAL);
    return env.Undefined();
  }

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, "open", "/dev/net/tun", errno);
    return env.Undefined();
  }

  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;  // no IFF_VNET_HDR: every read is one plain IP packet
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "TUNSETIFF", name, err);
    return env.Undefined();
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  std::string actual(ifr.ifr_name);

  // A persistent device keeps the offload flags of its previous owner; with any of them set the
  // kernel may hand us GSO super-packets or CHECKSUM_PARTIAL packets. We want plain packets.
  if (ioctl(fd, TUNSETOFFLOAD, 0UL) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "TUNSETOFFLOAD", actual, err);
    return env.Undefined();
  }

  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, actual));
  return out;
}

// openIpipSocket() -> fd. Receives every IPv4 packet with protocol 4 delivered to this host,
// outer header included; while it is open the kernel does not answer IPIP with protocol-unreachable.
Napi::Value OpenIpipSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_IPIP);
  if (fd < 0) {
    ThrowErrno(env, "socket", "AF_INET/SOCK_RAW/IPPROTO_IPIP", errno);
    return env.Undefined();
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

// ---------------------------------------------------------------- batch I/O

// readBatch(fd, slab, offs, lens, slotSize, headroom, capacity, stats?) -> count
// read() into slot i (at i*slotSize + headroom, at most slotSize - headroom bytes) until EAGAIN or
// `capacity` packets. EINTR is retried. A packet that does not fit (the TUN reports its full length,
// a datagram socket truncates it to exactly the room we gave) is discarded and counted as oversize.
// Any other error throws if nothing was read yet; otherwise the packets read so far are returned
// and the (persistent) error surfaces on the next call.
Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  double* stats;
  if (info.Length() < 7 || !FdArg(info, 0, &fd) || !info[1].IsBuffer() || !IsUint32Array(info[2]) ||
      !IsUint32Array(info[3]) || !info[4].IsNumber() || !info[5].IsNumber() || !info[6].IsNumber() ||
      !OptionalStats(info, 7, READ_STAT_LEN, &stats)) {
    ThrowType(env,
              "readBatch(fd, slab: Buffer, offs: Uint32Array, lens: Uint32Array, slotSize, headroom, "
              "capacity, stats?: Float64Array)");
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> slabBuf = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Uint32Array offsArr = info[2].As<Napi::Uint32Array>();
  Napi::Uint32Array lensArr = info[3].As<Napi::Uint32Array>();
  int64_t slotSize = info[4].As<Napi::Number>().Int64Value();
  int64_t headroom = info[5].As<Napi::Number>().Int64Value();
  int64_t capacity = info[6].As<Napi::Number>().Int64Value();
  if (slotSize <= 0 || headroom < 0 || headroom >= slotSize || capacity < 0 ||
      static_cast<uint64_t>(capacity) > offsArr.ElementLength() ||
      static_cast<uint64_t>(capacity) > lensArr.ElementLength() ||
      static_cast<uint64_t>(capacity) * static_cast<uint64_t>(slotSize) > slabBuf.Length() ||
      static_cast<uint64_t>(capacity) * static_cast<uint64_t>(slotSize) > UINT32_MAX) {
    Napi::RangeError::New(env, "readBatch: slotSize/headroom/capacity do not fit the slab and arrays")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }

  uint8_t* slab = slabBuf.Data();
  uint32_t* offs = offsArr.Data();
  uint32_t* lens = lensArr.Data();
  const size_t room = static_cast<size_t>(slotSize - headroom);
  const uint32_t cap = static_cast<uint32_t>(capacity);
  uint32_t n = 0;
  double bytes = 0;
  double oversize = 0;
  int err = 0;

  while (n < cap) {
    const size_t off = static_cast<size_t>(n) * static_cast<size_t>(slotSize) + static_cast<size_t>(headroom);
    ssize_t r = read(fd, slab + off, room);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
      break;
    }
    if (r == 0) break;  // neither a TUN nor a raw socket returns 0; do not spin on it
    if (static_cast<size_t>(r) >= room) {
      oversize += 1;
      continue;
    }
    offs[n] = static_cast<uint32_t>(off);
    lens[n] = static_cast<uint32_t>(r);
    bytes += static_cast<double>(r);
    n++;
  }

  if (stats != nullptr) {
    stats[READ_STAT_PACKETS] += n;
    stats[READ_STAT_BYTES] += bytes;
    stats[READ_STAT_OVERSIZE] += oversize;
  }
  if (err != 0 && n == 0) {
    ThrowErrno(env, "read", "fd " + std::to_string(fd), err);
    return env.Undefined();
  }
  return Napi::Number::New(env, n);
}

// writeBatch(fd, slab, offs, lens, count, stats?) -> written
// write() each packet i < count with lens[i] > 0. EINTR is retried. EAGAIN/EWOULDBLOCK/ENOBUFS stop
// the batch: this packet and every later one are counted as backpressure drops. EBADF (the fd is
// gone) throws. Any other error (EINVAL for a packet that is not IP, EIO, EMSGSIZE, ...) skips that
// packet and counts it; a malformed packet never throws. A packet whose offs/lens point outside the
// slab is skipped and counted the same way (errno EINVAL), never read.
Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  double* stats;
  if (info.Length() < 5 || !FdArg(info, 0, &fd) || !info[1].IsBuffer() || !IsUint32Array(info[2]) ||
      !IsUint32Array(info[3]) || !info[4].IsNumber() || !OptionalStats(info, 5, WRITE_STAT_LEN, &stats)) {
    ThrowType(env,
              "writeBatch(fd, slab: Buffer, offs: Uint32Array, lens: Uint32Array, count, stats?: Float64Array)");
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> slabBuf = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Uint32Array offsArr = info[2].As<Napi::Uint32Array>();
  Napi::Uint32Array lensArr = info[3].As<Napi::Uint32Array>();
  int64_t count = info[4].As<Napi::Number>().Int64Value();
  if (count < 0) count = 0;
  if (static_cast<uint64_t>(count) > offsArr.ElementLength()) count = static_cast<int64_t>(offsArr.ElementLength());
  if (static_cast<uint64_t>(count) > lensArr.ElementLength()) count = static_cast<int64_t>(lensArr.ElementLength());

  const uint8_t* slab = slabBuf.Data();
  const size_t slabLen = slabBuf.Length();
  const uint32_t* offs = offsArr.Data();
  const uint32_t* lens = lensArr.Data();
  const uint32_t n = static_cast<uint32_t>(count);
  uint32_t written = 0;
  double bytes = 0;
  double backpressure = 0;
  double errors = 0;
  int lastErrno = 0;

  for (uint32_t i = 0; i < n; i++) {
    const uint32_t len = lens[i];
    if (len == 0) continue;
    const uint32_t off = offs[i];
    if (static_cast<size_t>(off) + len > slabLen) {
      errors += 1;
      lastErrno = EINVAL;
      continue;
    }
    ssize_t r;
    do {
      r = write(fd, slab + off, len);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      written++;
      bytes += static_cast<double>(r);
      continue;
    }
    const int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
      for (uint32_t j = i; j < n; j++) {
        if (lens[j] != 0) backpressure += 1;
      }
      break;
    }
    if (e == EBADF) {
      if (stats != nullptr) {
        stats[WRITE_STAT_PACKETS] += written;
        stats[WRITE_STAT_BYTES] += bytes;
      }
      ThrowErrno(env, "write", "fd " + std::to_string(fd), e);
      return env.Undefined();
    }
    errors += 1;
    lastErrno = e;
  }

  if (stats != nullptr) {
    stats[WRITE_STAT_PACKETS] += written;
    stats[WRITE_STAT_BYTES] += bytes;
    stats[WRITE_STAT_BACKPRESSURE] += backpressure;
    stats[WRITE_STAT_ERRORS] += errors;
    if (lastErrno != 0) stats[WRITE_STAT_LAST_ERRNO] = lastErrno;
  }
  return Napi::Number::New(env, written);
}

// ---------------------------------------------------------------- readiness (uv_poll_t)
//
// pollStart(fd, callback) -> handle (an External). The callback runs on the event loop, with no
// arguments, whenever the fd is readable. On a poll error (status < 0) libuv has already stopped the
// watcher; the callback is still called once, so that the caller's read() surfaces the real error.
// pollStop(handle) stops the watcher synchronously (safe to close the fd right after) and closes the
// uv handle; it is idempotent. A stopped poller does not keep the process alive. If the environment
// is torn down (process exit, worker termination) while a poller is active, an async cleanup hook
// stops and closes it.

struct Poller {
  uv_poll_t handle;
  napi_env env = nullptr;
  napi_ref callback = nullptr;        // strong reference while active
  napi_async_context async = nullptr;
  napi_async_cleanup_hook_handle hook = nullptr;
  bool stopping = false;   // uv_close called
  bool uvClosed = false;   // close callback ran
  bool jsGone = false;     // the External that names us was finalized
};

void OnPollClosed(uv_handle_t* h) {
  Poller* p = static_cast<Poller*>(h->data);
  p->uvClosed = true;
  if (p->hook != nullptr) {
    napi_remove_async_cleanup_hook(p->hook);  // also tells Node an env-teardown cleanup is done
    p->hook = nullptr;
  }
  if (p->jsGone) delete p;
}

void StopPoller(Poller* p) {
  if (p->stopping) return;
  p->stopping = true;
  uv_poll_stop(&p->handle);
  if (p->callback != nullptr) {
    napi_delete_reference(p->env, p->callback);
    p->callback = nullptr;
  }
  if (p->async != nullptr) {
    napi_async_destroy(p->env, p->async);
    p->async = nullptr;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), OnPollClosed);
}

void OnEnvCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
  StopPoller(static_cast<Poller*>(arg));
}

void OnPollerFinalize(napi_env env, void* data, void* hint) {
  Poller* p = static_cast<Poller*>(data);
  p->jsGone = true;
  if (p->uvClosed) delete p;
  // Still active: the uv handle keeps polling and is freed by its close callback after pollStop or
  // environment teardown.
}

void OnPollReady(uv_poll_t* h, int status, int events) {
  Poller* p = static_cast<Poller*>(h->data);
  if (p->stopping || p->callback == nullptr) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, result;
  if (napi_get_reference_value(env, p->callback, &fn) == napi_ok && fn != nullptr &&
      napi_get_global(env, &recv) == napi_ok) {
    napi_status s = napi_make_callback(env, p->async, recv, fn, 0, nullptr, &result);
    bool pending = false;
    if (s != napi_ok && napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) {
        napi_fatal_exception(env, exc);  // -> process 'uncaughtException', like any event callback
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

Napi::Value PollStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (info.Length() < 2 || !FdArg(info, 0, &fd) || !info[1].IsFunction()) {
    ThrowType(env, "pollStart(fd: number, callback: () => void)");
    return env.Undefined();
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    Napi::Error::New(env, "pollStart: no libuv loop").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Poller* p = new Poller();
  p->env = env;
  int rc = uv_poll_init(loop, &p->handle, fd);
  if (rc < 0) {
    delete p;  // uv_poll_init failed before registering the handle with the loop
    ThrowErrno(env, "uv_poll_init", "fd " + std::to_string(fd), -rc);
    return env.Undefined();
  }
  p->handle.data = p;
  napi_value resource = Napi::Object::New(env);
  napi_value resourceName = Napi::String::New(env, "kube_tun.poll");
  if (napi_create_reference(env, info[1], 1, &p->callback) != napi_ok ||
      napi_async_init(env, resource, resourceName, &p->async) != napi_ok ||
      napi_add_async_cleanup_hook(env, OnEnvCleanup, p, &p->hook) != napi_ok) {
    p->jsGone = true;
    StopPoller(p);  // frees p in the close callback
    Napi::Error::New(env, "pollStart: N-API setup failed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  rc = uv_poll_start(&p->handle, UV_READABLE, OnPollReady);
  if (rc < 0) {
    p->jsGone = true;
    StopPoller(p);
    ThrowErrno(env, "uv_poll_start", "fd " + std::to_string(fd), -rc);
    return env.Undefined();
  }
  return Napi::External<Poller>::New(env, p, [](Napi::Env e, Poller* q) { OnPollerFinalize(e, q, nullptr); });
}

Napi::Value PollStop(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsExternal()) {
    ThrowType(env, "pollStop(handle)");
    return env.Undefined();
  }
  Poller* p = info[0].As<Napi::External<Poller>>().Data();
  if (p != nullptr) StopPoller(p);
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("openTun", Napi::Function::New(env, OpenTun, "openTun"));
  exports.Set("openIpipSocket", Napi::Function::New(env, OpenIpipSocket, "openIpipSocket"));
  exports.Set("readBatch", Napi::Function::New(env, ReadBatch, "readBatch"));
  exports.Set("writeBatch", Napi::Function::New(env, WriteBatch, "writeBatch"));
  exports.Set("pollStart", Napi::Function::New(env, PollStart, "pollStart"));
  exports.Set("pollStop", Napi::Function::New(env, PollStop, "pollStop"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("READ_STAT_PACKETS", Napi::Number::New(env, READ_STAT_PACKETS));
  layout.Set("READ_STAT_BYTES", Napi::Number::New(env, READ_STAT_BYTES));
  layout.Set("READ_STAT_OVERSIZE", Napi::Number::New(env, READ_STAT_OVERSIZE));
  layout.Set("READ_STAT_LEN", Napi::Number::New(env, READ_STAT_LEN));
  layout.Set("WRITE_STAT_PACKETS", Napi::Number::New(env, WRITE_STAT_PACKETS));
  layout.Set("WRITE_STAT_BYTES", Napi::Number::New(env, WRITE_STAT_BYTES));
  layout.Set("WRITE_STAT_BACKPRESSURE", Napi::Number::New(env, WRITE_STAT_BACKPRESSURE));
  layout.Set("WRITE_STAT_ERRORS", Napi::Number::New(env, WRITE_STAT_ERRORS));
  layout.Set("WRITE_STAT_LAST_ERRNO", Napi::Number::New(env, WRITE_STAT_LAST_ERRNO));
  layout.Set("WRITE_STAT_LEN", Napi::Number::New(env, WRITE_STAT_LEN));
  exports.Set("statsLayout", layout);
  return exports;
}

}  // namespace

NODE_API_MODULE(kube_tun_native, Init)
