// src/io: everything that moves packets between kube-tun and the kernel, plus pcap capture.
//   native.ts      addon loader, counter / vnet-header layouts, TUN_F offload bits
//   batch.ts       PacketBatch: the slab of packet slots one native call reads or writes
//   fd.ts          BatchFd: what a TUN and the raw socket share (counters, readiness, close)
//   tun.ts         TunDevice (plain, or vnet header + offloads)
//   ipip-socket.ts IpipSocket (raw IPPROTO_IPIP, recvmmsg/sendmmsg)
//   stats.ts       scrape-time counters: TUN sysfs statistics, drops by reason
//   pcap.ts        pcap writer and tap
export * from './native';
export * from './batch';
export * from './fd';
export * from './tun';
export * from './ipip-socket';
export * from './stats';
export * from './pcap';
