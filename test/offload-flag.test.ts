// `kube-tun run --offload on|off` and the daemon config file's `offload` key (no namespaces).
import { describe, expect, it } from 'vitest';
import { daemonOptions } from '../src/cli/run';
import { UsageError } from '../src/cli/flags';
import { parseDaemonConfig, mergeFlags } from '../src/cli/config-file';

const base = { node: 'worker-1', config: ['/dev/null'], tun: 'kt0' };
const file = (v: string) => `apiVersion: kubetun.dev/v1alpha1\nkind: KubeTunDaemonConfiguration\noffload: ${v}\n`;

describe('--offload', () => {
  it('defaults to on; off and on are taken; anything else is a usage error', () => {
    expect(daemonOptions(base).offload).toBe(true);
    expect(daemonOptions({ ...base, offload: 'off' }).offload).toBe(false);
    expect(daemonOptions({ ...base, offload: 'on' }).offload).toBe(true);
    expect(() => daemonOptions({ ...base, offload: 'maybe' })).toThrow(UsageError);
    expect(() => daemonOptions({ ...base, offload: 'maybe' })).toThrow(/--offload: expected on or off, got "maybe"/);
  });

  it('config file key offload: on/off (or true/false), the flag wins over it', () => {
    expect(parseDaemonConfig(file('off'), 'k.yaml').offload).toBe('off');
    expect(parseDaemonConfig(file('"on"'), 'k.yaml').offload).toBe('on');
    expect(parseDaemonConfig(file('false'), 'k.yaml').offload).toBe('off');
    expect(() => parseDaemonConfig(file('fast'), 'k.yaml')).toThrow(/offload.*expected on or off/);
    const fromFile = mergeFlags(parseDaemonConfig(file('off'), 'k.yaml'), base, new Set());
    expect(daemonOptions(fromFile).offload).toBe(false);
    const flagWins = mergeFlags(parseDaemonConfig(file('off'), 'k.yaml'), { ...base, offload: 'on' }, new Set(['offload']));
    expect(daemonOptions(flagWins).offload).toBe(true);
  });
});
