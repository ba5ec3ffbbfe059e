// Before any test: remove labs left by runs that crashed (their owner process is gone).
import { collectStaleLabs } from '../../scripts/lab';

export default function setup(): void {
  const removed = collectStaleLabs();
  if (removed.length) console.log(`removed stale labs: ${removed.join(', ')}`);
}
