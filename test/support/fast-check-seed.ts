// Every fast-check property in the suite runs from one fixed seed, so a run is reproducible and a
// count over generated cases (e.g. "at least N of 400 take the fast path") cannot fail by chance.
// A failing property still prints its seed and shrink path; FC_SEED=<n> explores other seeds.
import fc from 'fast-check';

export const FC_SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 20261202;
if (!Number.isSafeInteger(FC_SEED)) throw new Error(`FC_SEED=${process.env.FC_SEED} is not an integer`);
if (process.env.FC_SEED !== undefined) console.log(`fast-check seed ${FC_SEED} (from FC_SEED)`);
fc.configureGlobal({ ...fc.readConfigureGlobal(), seed: FC_SEED });
