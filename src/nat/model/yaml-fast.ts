// Fast path for YAML. The yaml package needs ~0.2 ms per document (its lexer and composer keep
// every token, range and comment), seconds for a 10,000-service manifest. fastYamlDocuments()
// reads the plain subset that generated and hand-written manifests use — block mappings and
// sequences, single-line flow collections (a whole document may be one flow mapping line), single-line plain and quoted scalars, comments — into
// the same values as parseAllDocuments(...).toJS() (YAML 1.2 core schema). On anything else
// (anchors, tags, block or multi-line scalars, escapes, complex or non-string keys, duplicate keys,
// tabs, directives, syntax errors…) it returns null and the whole source goes to the yaml package,
// which also reports the errors: documents are numbered and read exactly as before.

// The yaml package's core schema, in its order (schema/core/*.js).
const Y_NULL = /^(?:~|[Nn]ull|NULL)?$/;
const Y_BOOL = /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/;
const Y_INT_OCT = /^0o[0-7]+$/;
const Y_INT = /^[-+]?[0-9]+$/;
const Y_INT_HEX = /^0x[0-9a-fA-F]+$/;
const Y_FLOAT_NAN = /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/;
const Y_FLOAT_EXP = /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/;
const Y_FLOAT = /^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/;
/** Plain scalars that can only be strings: they start with none of ~ . + - 0-9 n N t T f F. */
const Y_SURELY_STRING = /^[^~.+\-0-9nNtTfF]/;

/** A plain scalar's value, as the yaml package's core schema resolves it. */
function yamlPlain(s: string): unknown {
  if (Y_SURELY_STRING.test(s)) return s;
  if (Y_NULL.test(s)) return null;
  if (Y_BOOL.test(s)) return s[0] === 't' || s[0] === 'T';
  if (Y_INT_OCT.test(s)) return parseInt(s.substring(2), 8);
  if (Y_INT.test(s)) return parseInt(s, 10);
  if (Y_INT_HEX.test(s)) return parseInt(s.substring(2), 16);
  if (Y_FLOAT_NAN.test(s)) return s.slice(-3).toLowerCase() === 'nan' ? NaN : s[0] === '-' ? -Infinity : Infinity;
  if (Y_FLOAT_EXP.test(s) || Y_FLOAT.test(s)) return parseFloat(s);
  return s;
}

/** Thrown (and caught) when the fast path leaves a source to the yaml package. */
const YAML_FALLBACK = new Error('fast YAML path: not in the subset');

/** Characters a plain scalar cannot start with (YAML indicators; - ? : only when followed by a space). */
const Y_INDICATOR_START = /^[[\]{},#&*!|>'"%@`]|^[-?:](?: |$)/;

class FastYaml {
  private readonly lines: string[];
  private i = 0; // current line
  private end = 0; // end (exclusive) of the current document's lines

  constructor(text: string) {
    this.lines = text.split('\n');
    for (let k = 0; k < this.lines.length; k++) {
      const l = this.lines[k];
      if (l.length > 0 && l.charCodeAt(l.length - 1) === 13) this.lines[k] = l.slice(0, -1);
      if (this.lines[k].includes('\r')) FastYaml.fail(); // a line break of its own for YAML
    }
  }

  static fail(): never {
    throw YAML_FALLBACK;
  }

  /** The documents' values, numbered as parseAllDocuments numbers them. */
  documents(): unknown[] {
    const lines = this.lines, out: unknown[] = [];
    let start = 0, explicit = false;
    for (let k = 0; k <= lines.length; k++) {
      const l = k < lines.length ? lines[k] : null;
      if (l !== null && !(l.startsWith('---') && (l.length === 3 || l[3] === ' '))) {
        const c = l.charCodeAt(0);
        if (c === 37 || (c === 46 && l.startsWith('...'))) FastYaml.fail(); // directives, document end
        continue;
      }
      if (l !== null && l.length > 3 && !/^--- +(?:#.*)?$/.test(l)) FastYaml.fail(); // content after ---
      // lines [start, k) are a document: counted when it was started by "---" or has content.
      this.i = start;
      this.end = k;
      const first = this.skip();
      if (first < k) out.push(this.document());
      else if (explicit) out.push(null);
      start = k + 1;
      explicit = true;
    }
    return out;
  }

  /** Index of the next line with content (not blank, not a comment) from this.i, or this.end. */
  private skip(): number {
    const lines = this.lines;
    let k = this.i;
    for (; k < this.end; k++) {
      const l = lines[k];
      let p = 0;
      while (p < l.length && l.charCodeAt(p) === 32) p++;
      if (p < l.length && l.charCodeAt(p) !== 35) break;
    }
    this.i = k;
    return k;
  }

  private static indent(l: string): number {
    let p = 0;
    while (p < l.length && l.charCodeAt(p) === 32) p++;
    return p;
  }

  private document(): unknown {
    const l = this.lines[this.i];
    if (FastYaml.indent(l) !== 0 || FastYaml.isItem(l, 0)) FastYaml.fail();
    // A document that is one flow mapping on one line ("{apiVersion: v1, kind: Service, …}", as
    // scripts/bench/gen-config.ts writes them); a multi-line one fails in the FlowReader.
    let v: unknown;
    if (l.charCodeAt(0) === 123) {
      this.i++;
      v = this.inline(l, 0);
    } else {
      v = this.mapping(0, 0);
    }
    if (this.skip() < this.end) FastYaml.fail();
    return v;
  }

  /** Does line l have a sequence item ("-" then a space or the end) at column c? */
  private static isItem(l: string, c: number): boolean {
    return l.charCodeAt(c) === 45 && (l.length === c + 1 || l.charCodeAt(c + 1) === 32);
  }

  /**
   * "key: value" at column col of this.i (the first line may have the key after "- "), and the
   * following lines with keys at column col.
   */
  private mapping(col: number, firstAt: number): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    let at = firstAt; // column of the key on the current line
    for (;;) {
      const l = this.lines[this.i];
      const colon = FastYaml.keyEnd(l, at);
      if (colon < 0) FastYaml.fail();
      let key: string;
      const q = l.charCodeAt(at);
      if (q === 34 || q === 39) { // "key": / 'key':
        const [k, after] = quoted(l, at);
        if (after !== colon) FastYaml.fail();
        key = k;
      } else {
        key = l.slice(at, colon);
        if (key.charCodeAt(key.length - 1) === 32 || typeof yamlPlain(key) !== 'string') FastYaml.fail(); // "a : b", "1: b"
      }
      if (key === '__proto__' || key === '<<') FastYaml.fail();
      if (Object.prototype.hasOwnProperty.call(obj, key)) FastYaml.fail(); // duplicate: the yaml package says so
      this.i++;
      obj[key] = this.valueAfter(l, colon + 1, col);
      if (this.skip() >= this.end) return obj;
      const next = this.lines[this.i], ind = FastYaml.indent(next);
      if (ind < col) return obj;
      if (ind > col) FastYaml.fail(); // a continuation or a syntax error
      if (FastYaml.isItem(next, ind)) return obj; // a sequence at the key's column: the caller's
      at = col;
    }
  }

  /** Position of the ": " (or ":" ending the line) after a plain or quoted key starting at `at` on l, or -1. */
  private static keyEnd(l: string, at: number): number {
    const c = l.charCodeAt(at);
    if (c === 34 || c === 39) { // a quoted key, or a quoted scalar
      let e = l.indexOf(l[at], at + 1);
      while (c === 39 && e > 0 && l.charCodeAt(e + 1) === 39) e = l.indexOf("'", e + 2); // '' in '…'
      if (e < 0 || l.charCodeAt(e + 1) !== 58) return -1;
      return e + 2 === l.length || l.charCodeAt(e + 2) === 32 ? e + 1 : -1;
    }
    if (Y_INDICATOR_START.test(l.slice(at, at + 2))) return -1; // a flow collection, …
    for (let p = at; p < l.length; p++) {
      const c = l.charCodeAt(p);
      if (c === 58) { // ':'
        if (p + 1 === l.length || l.charCodeAt(p + 1) === 32) return p > at ? p : -1;
        return -1; // "a:b" keys: leave them to the yaml package
      }
      if (c === 35 && l.charCodeAt(p - 1) === 32) return -1; // a comment
      if (c === 34 || c === 39) return -1; // quotes
    }
    return -1;
  }

  /** The value of a mapping entry whose key ends before `from` on line l (already consumed), the key at column col. */
  private valueAfter(l: string, from: number, col: number): unknown {
    let p = from;
    while (p < l.length && l.charCodeAt(p) === 32) p++;
    if (p < l.length && l.charCodeAt(p) !== 35) {
      if (p === from) FastYaml.fail();
      return this.inline(l, p);
    }
    // Nothing on the line: a block below, a sequence at the key's column, or null.
    if (this.skip() >= this.end) return null;
    const next = this.lines[this.i], ind = FastYaml.indent(next);
    if (ind > col) return this.block(ind);
    if (ind === col && FastYaml.isItem(next, ind)) return this.sequence(ind);
    return null;
  }

  /** A block mapping or sequence whose first line (this.i) is indented by ind. */
  private block(ind: number): unknown {
    return FastYaml.isItem(this.lines[this.i], ind) ? this.sequence(ind) : this.mapping(ind, ind);
  }

  /** "- item" lines at column col. */
  private sequence(col: number): unknown[] {
    const arr: unknown[] = [];
    for (;;) {
      const l = this.lines[this.i];
      let p = col + 1;
      while (p < l.length && l.charCodeAt(p) === 32) p++;
      if (p === l.length || l.charCodeAt(p) === 35) FastYaml.fail(); // a block below a lone "-"
      if (FastYaml.isItem(l, p)) arr.push(this.sequence(p)); // "- - item" and more items below
      else if (FastYaml.keyEnd(l, p) >= 0) arr.push(this.mapping(p, p)); // "- key: value" and more keys below
      else {
        this.i++;
        arr.push(this.inline(l, p));
      }
      if (this.skip() >= this.end) return arr;
      const next = this.lines[this.i], ind = FastYaml.indent(next);
      if (ind < col) return arr;
      if (ind > col) FastYaml.fail();
      if (!FastYaml.isItem(next, ind)) return arr;
    }
  }

  /** A value that starts at l[p] and ends the line (but for a comment): flow collection, quoted or plain scalar. */
  private inline(l: string, p: number): unknown {
    const c = l.charCodeAt(p);
    let v: unknown, q: number;
    if (c === 123 || c === 91) { // { [
      const f = new FlowReader(l, p);
      v = f.value();
      q = f.p;
    } else if (c === 34 || c === 39) {
      const r = quoted(l, p);
      v = r[0];
      q = r[1];
    } else {
      if (Y_INDICATOR_START.test(l.slice(p, p + 2))) FastYaml.fail();
      let e = l.indexOf(' #', p);
      if (e < 0) e = l.length;
      const s = trimSpaces(l, p, e);
      if (s.includes(': ') || s.endsWith(':')) FastYaml.fail();
      return yamlPlain(s);
    }
    while (q < l.length && l.charCodeAt(q) === 32) q++;
    if (q < l.length && !(l.charCodeAt(q) === 35 && l.charCodeAt(q - 1) === 32)) FastYaml.fail();
    return v;
  }
}

/** l[start, end) without trailing spaces (YAML trims spaces, not all of String.trim's white space). */
function trimSpaces(l: string, start: number, end: number): string {
  while (end > start && l.charCodeAt(end - 1) === 32) end--;
  return l.slice(start, end);
}

/** A quoted scalar at l[p] (single-line; double-quoted without escapes): [value, position after it]. */
function quoted(l: string, p: number): [string, number] {
  const qc = l[p];
  if (qc === '"') {
    const e = l.indexOf('"', p + 1);
    if (e < 0) FastYaml.fail();
    const s = l.slice(p + 1, e);
    if (s.includes('\\')) FastYaml.fail();
    return [s, e + 1];
  }
  let s = '';
  let k = p + 1;
  for (;;) {
    const e = l.indexOf("'", k);
    if (e < 0) FastYaml.fail();
    s += l.slice(k, e);
    if (l[e + 1] !== "'") return [s, e + 1];
    s += "'";
    k = e + 2;
  }
}

/** A flow collection on one line: { key: value, … } and [ value, … ] with plain keys. */
class FlowReader {
  constructor(private readonly l: string, public p: number) {}

  private ws(): void {
    while (this.p < this.l.length && this.l.charCodeAt(this.p) === 32) this.p++;
  }

  value(): unknown {
    const c = this.l.charCodeAt(this.p);
    if (c === 123) return this.map();
    if (c === 91) return this.seq();
    if (c === 34 || c === 39) {
      const [v, q] = quoted(this.l, this.p);
      this.p = q;
      return v;
    }
    return yamlPlain(this.plain(false));
  }

  /** A plain scalar in a flow collection, up to , [ ] { } or ": " (a key when `key`). */
  private plain(key: boolean): string {
    const l = this.l, start = this.p;
    if (Y_INDICATOR_START.test(l.slice(start, start + 2))) FastYaml.fail();
    const c0 = l.charCodeAt(start);
    if ((c0 === 45 || c0 === 63 || c0 === 58) && ' ,[]{}'.includes(l[start + 1] ?? ' ')) FastYaml.fail(); // - ? : alone
    let p = start;
    for (; p < l.length; p++) {
      const c = l.charCodeAt(p);
      if (c === 44 || c === 91 || c === 93 || c === 123 || c === 125) break; // , [ ] { }
      if (c === 58) { // ':'
        const d = p + 1 < l.length ? l.charCodeAt(p + 1) : 32;
        if (d === 32 || d === 44 || d === 91 || d === 93 || d === 123 || d === 125) {
          if (!key) FastYaml.fail(); // an implicit key in a sequence, or "a: b: c"
          break;
        }
      }
      if (c === 35 && l.charCodeAt(p - 1) === 32) FastYaml.fail(); // a comment inside the collection
      if (c === 34 || c === 39 || c === 9) FastYaml.fail();
    }
    this.p = p;
    const s = trimSpaces(l, start, p);
    if (s === '') FastYaml.fail();
    return s;
  }

  private seq(): unknown[] {
    const arr: unknown[] = [];
    this.p++;
    this.ws();
    if (this.l.charCodeAt(this.p) === 93) { this.p++; return arr; }
    for (;;) {
      arr.push(this.value());
      this.ws();
      const c = this.l.charCodeAt(this.p++);
      if (c === 93) return arr;
      if (c !== 44) FastYaml.fail();
      this.ws();
      if (this.l.charCodeAt(this.p) === 93) FastYaml.fail(); // a trailing comma
    }
  }

  private map(): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    this.p++;
    this.ws();
    if (this.l.charCodeAt(this.p) === 125) { this.p++; return obj; }
    for (;;) {
      const key = this.plain(true);
      if (key === '__proto__' || key === '<<' || typeof yamlPlain(key) !== 'string') FastYaml.fail();
      if (this.l.charCodeAt(this.p) !== 58 || this.l.charCodeAt(this.p + 1) !== 32) FastYaml.fail();
      if (Object.prototype.hasOwnProperty.call(obj, key)) FastYaml.fail();
      this.p += 2;
      this.ws();
      obj[key] = this.value();
      this.ws();
      const c = this.l.charCodeAt(this.p++);
      if (c === 125) return obj;
      if (c !== 44) FastYaml.fail();
      this.ws();
      if (this.l.charCodeAt(this.p) === 125) FastYaml.fail();
    }
  }
}

/**
 * The documents of a YAML stream as parseAllDocuments(text, { uniqueKeys: true }) and toJS() read
 * them, or null when the text is not in the subset the fast path reads.
 */
export function fastYamlDocuments(text: string): unknown[] | null {
  if (text.includes('\t') || text.charCodeAt(0) === 0xfeff) return null;
  try {
    return new FastYaml(text).documents();
  } catch (e) {
    if (e === YAML_FALLBACK) return null;
    throw e;
  }
}
