{
  # Native side of src/io (native.ts loads it): TUN / raw IPIP socket I/O in batches over a shared slab,
  # plus libuv readiness polling. Built offline by `node-gyp rebuild` (package.json "install").
  "targets": [
    {
      "target_name": "kube_tun_native",
      "sources": ["native/addon.cc", "native/tun.cc", "native/mmsg.cc", "native/poll.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }]
      ]
    }
  ]
}
