/** src/netstack codecs (the TUN addon lives in ./tun and is imported from there directly). */
export * from './addr';
export * from './bytes';
export * from './checksum';
export * from './gso';
export * from './icmp';
export * from './ipip';
export * from './ipv4';
export * from './packet';
export * from './partial';
export * from './proto';
export * from './repr';
export * from './tcp';
export * from './udp';
export * from './vnet';
