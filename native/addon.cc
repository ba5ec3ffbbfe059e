// kube_tun_native: the only native code of kube-tun.
//
// Batched packet I/O on a TUN device and on a raw IPPROTO_IPIP socket, over one slab shared with
// JavaScript (the udx-native model): packet i of a batch lives at slab[offs[i] .. offs[i] + lens[i]);
// reads put it at i * slotSize + headroom. One JS -> native call per batch, nothing allocated per
// packet on either side. Readiness comes from a libuv uv_poll_t on the fd, so the daemon's batch
// loop runs on the Node event loop.
//
// Files: tun.cc (open/close, TUN read/write with optional virtio_net_hdr), mmsg.cc (raw socket
// recvmmsg/sendmmsg), poll.cc (uv_poll readiness), this file (shared helpers, module init).
//
// Exports (all synchronous; fds are plain numbers; errors are JS Errors with .code/.errno/.syscall):
//   openTun(name, opts?) -> { fd, name, vnetHdr, offload, offloadRequested, vnetRefused? }  (tun.cc)
//   openIpipSocket() -> fd
//   readBatch(fd, slab, offs, lens, slotSize, headroom, capacity, stats?, vnet?) -> count
//   writeBatch(fd, slab, offs, lens, count, stats?, vnet?) -> written
//   recvBatch(fd, slab, offs, lens, slotSize, headroom, capacity, stats?) -> count     (recvmmsg)
//   sendBatch(fd, slab, offs, lens, count, stats?) -> written                          (sendmmsg)
//   pollStart(fd, callback) -> handle;  pollStop(handle)
//   closeFd(fd)
//   statsLayout: the READ_STAT_* / WRITE_STAT_* / VNET_* indices of common.h, plus TUN_F_* flags.

#include "common.h"

#include <errno.h>
#include <string.h>
#include <uv.h>

namespace kt {

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

static bool Absent(const Napi::CallbackInfo& info, size_t idx) {
  return info.Length() <= idx || info[idx].IsUndefined() || info[idx].IsNull();
}

bool OptionalStats(const Napi::CallbackInfo& info, size_t idx, size_t need, double** out) {
  *out = nullptr;
  if (Absent(info, idx)) return true;
  if (!info[idx].IsTypedArray()) return false;
  Napi::TypedArray ta = info[idx].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_float64_array || ta.ElementLength() < need) return false;
  *out = info[idx].As<Napi::Float64Array>().Data();
  return true;
}

bool OptionalU16(const Napi::CallbackInfo& info, size_t idx, size_t need, uint16_t** out) {
  *out = nullptr;
  if (Absent(info, idx)) return true;
  if (!info[idx].IsTypedArray()) return false;
  Napi::TypedArray ta = info[idx].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint16_array || ta.ElementLength() < need) return false;
  *out = info[idx].As<Napi::Uint16Array>().Data();
  return true;
}

bool FdArg(const Napi::CallbackInfo& info, size_t idx, int* fd) {
  if (info.Length() <= idx || !info[idx].IsNumber()) return false;
  *fd = info[idx].As<Napi::Number>().Int32Value();
  return *fd >= 0;
}

bool ParseReadArgs(const Napi::CallbackInfo& info, const char* usage, ReadArgs* out) {
  Napi::Env env = info.Env();
  if (info.Length() < 7 || !FdArg(info, 0, &out->fd) || !info[1].IsBuffer() || !IsUint32Array(info[2]) ||
      !IsUint32Array(info[3]) || !info[4].IsNumber() || !info[5].IsNumber() || !info[6].IsNumber()) {
    ThrowType(env, usage);
    return false;
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
    return false;
  }
  out->slab = slabBuf.Data();
  out->offs = offsArr.Data();
  out->lens = lensArr.Data();
  out->slotSize = static_cast<size_t>(slotSize);
  out->headroom = static_cast<size_t>(headroom);
  out->capacity = static_cast<uint32_t>(capacity);
  return true;
}

bool ParseWriteArgs(const Napi::CallbackInfo& info, const char* usage, WriteArgs* out) {
  if (info.Length() < 5 || !FdArg(info, 0, &out->fd) || !info[1].IsBuffer() || !IsUint32Array(info[2]) ||
      !IsUint32Array(info[3]) || !info[4].IsNumber()) {
    ThrowType(info.Env(), usage);
    return false;
  }
  Napi::Buffer<uint8_t> slabBuf = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Uint32Array offsArr = info[2].As<Napi::Uint32Array>();
  Napi::Uint32Array lensArr = info[3].As<Napi::Uint32Array>();
  int64_t count = info[4].As<Napi::Number>().Int64Value();
  if (count < 0) count = 0;
  if (static_cast<uint64_t>(count) > offsArr.ElementLength()) count = static_cast<int64_t>(offsArr.ElementLength());
  if (static_cast<uint64_t>(count) > lensArr.ElementLength()) count = static_cast<int64_t>(lensArr.ElementLength());
  out->slab = slabBuf.Data();
  out->slabLen = slabBuf.Length();
  out->offs = offsArr.Data();
  out->lens = lensArr.Data();
  out->count = static_cast<uint32_t>(count);
  return true;
}

void ReadTally::Flush(double* stats) const {
  if (stats == nullptr) return;
  stats[READ_STAT_PACKETS] += packets;
  stats[READ_STAT_BYTES] += bytes;
  stats[READ_STAT_OVERSIZE] += oversize;
  stats[READ_STAT_CALLS] += calls;
  stats[READ_STAT_ERRORS] += errors;
  if (lastErrno != 0) stats[READ_STAT_LAST_ERRNO] = lastErrno;
}

void WriteTally::Backpressure(const uint32_t* lens, uint32_t from, uint32_t count) {
  for (uint32_t j = from; j < count; j++) {
    if (lens[j] != 0) backpressure += 1;
  }
}

void WriteTally::Flush(double* stats) const {
  if (stats == nullptr) return;
  stats[WRITE_STAT_PACKETS] += packets;
  stats[WRITE_STAT_BYTES] += bytes;
  stats[WRITE_STAT_BACKPRESSURE] += backpressure;
  stats[WRITE_STAT_ERRORS] += errors;
  stats[WRITE_STAT_CALLS] += calls;
  if (lastErrno != 0) stats[WRITE_STAT_LAST_ERRNO] = lastErrno;
}

WriteFailure ClassifyWriteErrno(int e) {
  if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) return WriteFailure::Backpressure;
  if (e == EBADF) return WriteFailure::Fatal;
  return WriteFailure::Skip;
}

namespace {

Napi::Object InitExports(Napi::Env env, Napi::Object exports) {
  exports.Set("openTun", Napi::Function::New(env, OpenTun, "openTun"));
  exports.Set("openIpipSocket", Napi::Function::New(env, OpenIpipSocket, "openIpipSocket"));
  exports.Set("readBatch", Napi::Function::New(env, ReadBatch, "readBatch"));
  exports.Set("writeBatch", Napi::Function::New(env, WriteBatch, "writeBatch"));
  exports.Set("recvBatch", Napi::Function::New(env, RecvBatch, "recvBatch"));
  exports.Set("sendBatch", Napi::Function::New(env, SendBatch, "sendBatch"));
  exports.Set("pollStart", Napi::Function::New(env, PollStart, "pollStart"));
  exports.Set("pollStop", Napi::Function::New(env, PollStop, "pollStop"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  Napi::Object l = Napi::Object::New(env);
  const struct {
    const char* name;
    size_t value;
  } entries[] = {
      {"READ_STAT_PACKETS", READ_STAT_PACKETS},   {"READ_STAT_BYTES", READ_STAT_BYTES},
      {"READ_STAT_OVERSIZE", READ_STAT_OVERSIZE}, {"READ_STAT_CALLS", READ_STAT_CALLS},
      {"READ_STAT_ERRORS", READ_STAT_ERRORS},     {"READ_STAT_LAST_ERRNO", READ_STAT_LAST_ERRNO},
      {"READ_STAT_LEN", READ_STAT_LEN},           {"WRITE_STAT_PACKETS", WRITE_STAT_PACKETS},
      {"WRITE_STAT_BYTES", WRITE_STAT_BYTES},     {"WRITE_STAT_BACKPRESSURE", WRITE_STAT_BACKPRESSURE},
      {"WRITE_STAT_ERRORS", WRITE_STAT_ERRORS},   {"WRITE_STAT_LAST_ERRNO", WRITE_STAT_LAST_ERRNO},
      {"WRITE_STAT_CALLS", WRITE_STAT_CALLS},     {"WRITE_STAT_LEN", WRITE_STAT_LEN},
      {"VNET_FLAGS", VNET_FLAGS},                 {"VNET_GSO_TYPE", VNET_GSO_TYPE},
      {"VNET_HDR_LEN", VNET_HDR_LEN},             {"VNET_GSO_SIZE", VNET_GSO_SIZE},
      {"VNET_CSUM_START", VNET_CSUM_START},       {"VNET_CSUM_OFFSET", VNET_CSUM_OFFSET},
      {"VNET_FIELDS", VNET_FIELDS},
  };
  for (const auto& e : entries) l.Set(e.name, Napi::Number::New(env, static_cast<double>(e.value)));
  exports.Set("statsLayout", l);
  return exports;
}

}  // namespace
}  // namespace kt

// NODE_API_MODULE pastes its argument into an identifier: it needs an unqualified name.
static Napi::Object InitKubeTunNative(Napi::Env env, Napi::Object exports) { return kt::InitExports(env, exports); }

NODE_API_MODULE(kube_tun_native, InitKubeTunNative)
