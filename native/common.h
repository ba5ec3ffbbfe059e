// Shared by the kube_tun_native sources: argument checks, errno -> JS Error, counter layouts.
// The counter layouts are the contract with src/io/native.ts (READ_STAT / WRITE_STAT / VNET there
// must match; the loader checks statsLayout at load time).
#pragma once

#include <napi.h>

#include <stddef.h>
#include <stdint.h>

#include <string>

namespace kt {

// ---- readBatch / recvBatch stats (Float64Array, accumulated, never reset by native code) ----
constexpr size_t READ_STAT_PACKETS = 0;     // packets returned to JS
constexpr size_t READ_STAT_BYTES = 1;       // bytes returned to JS (IP packets, vnet header excluded)
constexpr size_t READ_STAT_OVERSIZE = 2;    // packets discarded: did not fit in slotSize - headroom
constexpr size_t READ_STAT_CALLS = 3;       // read()/readv()/recvmmsg() system calls made (EAGAIN included)
constexpr size_t READ_STAT_ERRORS = 4;      // read system calls that failed with anything but EAGAIN/EINTR,
                                            // and vnet reads shorter than the vnet header
constexpr size_t READ_STAT_LAST_ERRNO = 5;  // errno of the most recent such failure
constexpr size_t READ_STAT_LEN = 6;

// ---- writeBatch / sendBatch stats (Float64Array, accumulated) ----
constexpr size_t WRITE_STAT_PACKETS = 0;       // packets written
constexpr size_t WRITE_STAT_BYTES = 1;         // bytes written (IP packets, vnet header excluded)
constexpr size_t WRITE_STAT_BACKPRESSURE = 2;  // packets not written: EAGAIN/ENOBUFS stopped the batch
constexpr size_t WRITE_STAT_ERRORS = 3;        // packets skipped: the kernel rejected them (EINVAL, EIO, ...)
                                               // or offs/lens pointed outside the slab
constexpr size_t WRITE_STAT_LAST_ERRNO = 4;    // errno of the most recent skipped packet
constexpr size_t WRITE_STAT_CALLS = 5;         // write()/writev()/sendmmsg() system calls made
constexpr size_t WRITE_STAT_LEN = 6;

// ---- per-packet virtio_net_hdr fields (Uint16Array, VNET_FIELDS per packet: packet i at i*VNET_FIELDS) ----
constexpr size_t VNET_FLAGS = 0;        // VIRTIO_NET_HDR_F_NEEDS_CSUM (1) | F_DATA_VALID (2)
constexpr size_t VNET_GSO_TYPE = 1;     // VIRTIO_NET_HDR_GSO_NONE/TCPV4/UDP/TCPV6/UDP_L4, | GSO_ECN (0x80)
constexpr size_t VNET_HDR_LEN = 2;      // bytes of headers (IP + L4) before the segmented payload
constexpr size_t VNET_GSO_SIZE = 3;     // payload bytes per segment (MSS) when gso_type != NONE
constexpr size_t VNET_CSUM_START = 4;   // offset from the IP header of the L4 header to checksum
constexpr size_t VNET_CSUM_OFFSET = 5;  // offset of the checksum field from csum_start
constexpr size_t VNET_FIELDS = 6;

void ThrowErrno(Napi::Env env, const char* syscall, const std::string& subject, int err);
void ThrowType(Napi::Env env, const char* msg);
bool IsUint32Array(const Napi::Value& v);
// Optional trailing Float64Array of at least `need` elements; *out = nullptr when absent/undefined.
bool OptionalStats(const Napi::CallbackInfo& info, size_t idx, size_t need, double** out);
// Optional trailing Uint16Array of at least `need` elements; *out = nullptr when absent/undefined.
bool OptionalU16(const Napi::CallbackInfo& info, size_t idx, size_t need, uint16_t** out);
bool FdArg(const Napi::CallbackInfo& info, size_t idx, int* fd);

// The arguments every batch read takes: (fd, slab, offs, lens, slotSize, headroom, capacity, ...).
struct ReadArgs {
  int fd;
  uint8_t* slab;
  uint32_t* offs;
  uint32_t* lens;
  size_t slotSize;
  size_t headroom;
  uint32_t capacity;
};
// Checks and unpacks them; throws (and returns false) when they do not describe slots inside the slab.
bool ParseReadArgs(const Napi::CallbackInfo& info, const char* usage, ReadArgs* out);

// The arguments every batch write takes: (fd, slab, offs, lens, count, ...). count is clamped.
struct WriteArgs {
  int fd;
  const uint8_t* slab;
  size_t slabLen;
  const uint32_t* offs;
  const uint32_t* lens;
  uint32_t count;
};
bool ParseWriteArgs(const Napi::CallbackInfo& info, const char* usage, WriteArgs* out);

// What one batch read or write counted; Flush adds it to the caller's stats array (nullptr: none).
struct ReadTally {
  double packets = 0, bytes = 0, oversize = 0, calls = 0, errors = 0;
  int lastErrno = 0;
  void Error(int e) {
    errors += 1;
    lastErrno = e;
  }
  void Flush(double* stats) const;
};

struct WriteTally {
  double packets = 0, bytes = 0, backpressure = 0, errors = 0, calls = 0;
  int lastErrno = 0;
  void Skip(int e) {  // the kernel rejected one packet (or it lay outside the slab): skipped
    errors += 1;
    lastErrno = e;
  }
  // EAGAIN/ENOBUFS at packet `from`: it and every later non-empty packet stay unwritten.
  void Backpressure(const uint32_t* lens, uint32_t from, uint32_t count);
  void Flush(double* stats) const;
};

// How a batch write treats a failed packet's errno: stop the batch (EAGAIN/EWOULDBLOCK/ENOBUFS),
// throw (EBADF: the fd is gone), or skip the packet and go on (anything else).
enum class WriteFailure { Backpressure, Fatal, Skip };
WriteFailure ClassifyWriteErrno(int e);

// Registered in addon.cc's Init.
Napi::Value OpenTun(const Napi::CallbackInfo& info);
Napi::Value OpenIpipSocket(const Napi::CallbackInfo& info);
Napi::Value CloseFd(const Napi::CallbackInfo& info);
Napi::Value ReadBatch(const Napi::CallbackInfo& info);
Napi::Value WriteBatch(const Napi::CallbackInfo& info);
Napi::Value RecvBatch(const Napi::CallbackInfo& info);
Napi::Value SendBatch(const Napi::CallbackInfo& info);
Napi::Value PollStart(const Napi::CallbackInfo& info);
Napi::Value PollStop(const Napi::CallbackInfo& info);

}  // namespace kt
