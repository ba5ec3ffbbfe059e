// Batch sizes, named once for the loop that reads batches, the pipeline that counts them and the
// metrics that export the count (kubetun_batch_size).

/** Packets one TUN or IPIP read takes at most (also the room for packets kube-tun generates per batch). */
export const BATCH = 64;

/** The histogram bucket of a batch of n packets: bucket i counts sizes in (2^(i-1), 2^i]. */
export function batchSizeBucket(n: number): number {
  return n <= 1 ? 0 : 32 - Math.clz32(n - 1);
}

/** Buckets of the batch-size histogram: le = 1, 2, 4, ..., BATCH. */
export const BATCH_SIZE_BUCKETS = batchSizeBucket(BATCH) + 1;
