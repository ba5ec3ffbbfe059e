/** src/netstack: the pure wire layer (codecs, checksums, protocol facts); no I/O and no node:* (the TUN and pcap live in src/io). */
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
