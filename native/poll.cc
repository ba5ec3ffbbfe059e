// Readiness for kube_tun_native (see addon.cc): a libuv uv_poll_t per watched fd.

#include "common.h"

#include <uv.h>

namespace kt {
namespace {

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

}  // namespace

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

}  // namespace kt
