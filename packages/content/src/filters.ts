import { invalidArgument } from "@berth/errdefs";

/**
 * The operators of containerd's filter syntax. A selector without an operator tests presence.
 * `!~=` (negated regular expression) is accepted as newer containerd versions do.
 */
export const FilterOperator = {
  Present: "present",
  Equal: "==",
  NotEqual: "!=",
  Matches: "~=",
  NotMatches: "!~=",
} as const;

/** One of the values of {@link FilterOperator}. */
export type FilterOperator = (typeof FilterOperator)[keyof typeof FilterOperator];

/** One `<fieldpath><op><value>` term of a filter. */
export interface FilterSelector {
  /** The field path, one element per (possibly quoted) dot-separated part: `labels."a.b"` → `["labels", "a.b"]`. */
  readonly fieldpath: readonly string[];
  readonly operator: FilterOperator;
  /** The value to compare with; `""` for {@link FilterOperator.Present}. */
  readonly value: string;
  /** The compiled expression for `~=` and `!~=`. */
  readonly regexp?: RegExp;
}

/** One parsed filter string: its selectors must all match (`,` is AND). */
export interface Filter {
  /** The string the filter was parsed from, for messages. */
  readonly source: string;
  readonly selectors: readonly FilterSelector[];
}

/**
 * Looks up a field of the object being matched: returns its value as a string, or `undefined`
 * when the object has no such field. The adaptor decides what the fields are (for content:
 * `digest`, `size`, `labels.<key>`; for images: `name`, `target.digest`, `target.mediatype`, …).
 */
export type FieldAdaptor = (fieldpath: readonly string[]) => string | undefined;

const fieldStartRe = /[A-Za-z]/;
// containerd allows [A-Za-z0-9_] after the first letter; berth also allows "-" so that label keys
// like `labels.my-key` need no quotes. It cannot be mistaken for an operator.
const fieldCharRe = /[A-Za-z0-9_-]/;
const spaceRe = /\s/;

class FilterParser {
  #pos = 0;
  constructor(readonly input: string) {}

  fail(what: string): never {
    throw invalidArgument(`invalid filter ${JSON.stringify(this.input)}: ${what} at offset ${this.#pos}`);
  }

  skipSpace(): void {
    while (this.#pos < this.input.length && spaceRe.test(this.input[this.#pos] as string)) this.#pos++;
  }

  atEnd(): boolean {
    return this.#pos >= this.input.length;
  }

  peek(n = 1): string {
    return this.input.slice(this.#pos, this.#pos + n);
  }

  parse(): Filter {
    const selectors: FilterSelector[] = [];
    this.skipSpace();
    if (this.atEnd()) return { source: this.input, selectors };
    for (;;) {
      selectors.push(this.selector());
      this.skipSpace();
      if (this.atEnd()) break;
      if (this.peek() !== ",") this.fail(`expected "," or the end, found ${JSON.stringify(this.peek())}`);
      this.#pos++;
      this.skipSpace();
    }
    return { source: this.input, selectors };
  }

  selector(): FilterSelector {
    const fieldpath = [this.field()];
    while (this.peek() === ".") {
      this.#pos++;
      fieldpath.push(this.field());
    }
    this.skipSpace();
    const operator = this.operator();
    if (operator === undefined) return { fieldpath, operator: FilterOperator.Present, value: "" };
    this.skipSpace();
    const regex = operator === FilterOperator.Matches || operator === FilterOperator.NotMatches;
    const value = this.value(regex);
    if (!regex) return { fieldpath, operator, value };
    let regexp: RegExp;
    try {
      regexp = new RegExp(value);
    } catch (cause) {
      throw invalidArgument(
        `invalid filter ${JSON.stringify(this.input)}: bad regular expression ${JSON.stringify(value)}`,
        { cause },
      );
    }
    return { fieldpath, operator, value, regexp };
  }

  field(): string {
    const c = this.peek();
    if (c === '"') return this.quoted('"');
    if (!fieldStartRe.test(c))
      this.fail(c === "" ? "expected a field name" : `unexpected ${JSON.stringify(c)}`);
    const start = this.#pos;
    while (this.#pos < this.input.length && fieldCharRe.test(this.input[this.#pos] as string)) this.#pos++;
    return this.input.slice(start, this.#pos);
  }

  operator(): FilterOperator | undefined {
    for (const op of [
      FilterOperator.NotMatches,
      FilterOperator.Equal,
      FilterOperator.NotEqual,
      FilterOperator.Matches,
    ]) {
      if (this.peek(op.length) === op) {
        this.#pos += op.length;
        return op;
      }
    }
    const c = this.peek();
    if (c === "" || c === ",") return undefined;
    return this.fail(`expected an operator (==, !=, ~=, !~=), "," or the end, found ${JSON.stringify(c)}`);
  }

  value(regex: boolean): string {
    const c = this.peek();
    if (c === '"') return this.quoted('"');
    // Regular expressions may be delimited by "/" or "|" (as in newer containerd), which saves
    // escaping backslashes and quotes.
    if (regex && (c === "/" || c === "|")) return this.delimited(c);
    const start = this.#pos;
    while (this.#pos < this.input.length) {
      const ch = this.input[this.#pos] as string;
      if (ch === "," || spaceRe.test(ch)) break;
      this.#pos++;
    }
    if (this.#pos === start) this.fail('expected a value (use "" for the empty string)');
    return this.input.slice(start, this.#pos);
  }

  delimited(delim: string): string {
    const start = ++this.#pos;
    const end = this.input.indexOf(delim, start);
    if (end < 0) this.fail(`unterminated ${delim}…${delim} value`);
    this.#pos = end + 1;
    return this.input.slice(start, end);
  }

  /** A double-quoted string with Go-style escapes. */
  quoted(quote: string): string {
    this.#pos++;
    let out = "";
    for (;;) {
      if (this.atEnd()) this.fail("unterminated quoted string");
      const ch = this.input[this.#pos++] as string;
      if (ch === quote) return out;
      if (ch !== "\\") {
        out += ch;
        continue;
      }
      const esc = this.input[this.#pos++];
      switch (esc) {
        case "n":
          out += "\n";
          break;
        case "t":
          out += "\t";
          break;
        case "r":
          out += "\r";
          break;
        case "a":
          out += "\x07";
          break;
        case "b":
          out += "\b";
          break;
        case "f":
          out += "\f";
          break;
        case "v":
          out += "\v";
          break;
        case "\\":
        case '"':
        case "'":
        case "/":
          out += esc;
          break;
        case "x":
        case "u":
        case "U": {
          const n = esc === "x" ? 2 : esc === "u" ? 4 : 8;
          const hex = this.input.slice(this.#pos, this.#pos + n);
          if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== n) this.fail(`bad \\${esc} escape`);
          this.#pos += n;
          out += String.fromCodePoint(Number.parseInt(hex, 16));
          break;
        }
        default:
          this.fail(`unknown escape \\${esc ?? ""}`);
      }
    }
  }
}

/**
 * Parses one filter string in containerd's syntax:
 *
 * ```
 * filter    := selector ("," selector)*        all selectors must match
 * selector  := fieldpath (operator value)?     no operator: the field must be present
 * fieldpath := field ("." field)*
 * field     := quoted | [A-Za-z][A-Za-z0-9_-]*
 * operator  := "==" | "!=" | "~=" | "!~="
 * value     := quoted | /regexp/ | |regexp| | [^\s,]+
 * quoted    := a double-quoted string with Go escapes
 * ```
 *
 * Example: `labels."containerd.io/gc.root",size!=0`. An empty string matches everything.
 * Throws `invalid-argument` naming the filter and the offset of the problem.
 */
export function parseFilter(filter: string): Filter {
  return new FilterParser(filter).parse();
}

/**
 * Parses several filter strings; the result matches an object when any of them does (OR), and
 * matches everything when the list is empty. Throws `invalid-argument` like {@link parseFilter}.
 */
export function parseFilters(filters: readonly string[] | undefined): readonly Filter[] {
  return (filters ?? []).map(parseFilter);
}

function matchSelector(selector: FilterSelector, adaptor: FieldAdaptor): boolean {
  const found = adaptor(selector.fieldpath);
  // As in containerd, a missing field compares as the empty string for != and the regexp
  // operators, so `labels.x!=y` also matches objects without the label.
  const value = found ?? "";
  switch (selector.operator) {
    case FilterOperator.Present:
      return found !== undefined;
    case FilterOperator.Equal:
      return found !== undefined && value === selector.value;
    case FilterOperator.NotEqual:
      return value !== selector.value;
    case FilterOperator.Matches:
      return selector.regexp?.test(value) ?? false;
    case FilterOperator.NotMatches:
      return !(selector.regexp?.test(value) ?? true);
  }
}

/**
 * True when the object seen through `adaptor` matches any of `filters` (all selectors of one
 * filter must match); true for an empty list. `filters` may be strings, parsed on the fly (and
 * then `invalid-argument` is thrown for a malformed one), or the result of {@link parseFilters},
 * which is cheaper when matching many objects.
 */
export function matchFilters(filters: readonly (Filter | string)[], adaptor: FieldAdaptor): boolean {
  if (filters.length === 0) return true;
  return filters.some((f) => {
    const filter = typeof f === "string" ? parseFilter(f) : f;
    return filter.selectors.every((s) => matchSelector(s, adaptor));
  });
}

/**
 * A {@link FieldAdaptor} helper for the `labels.<key>` fields every berth object has: the rest of
 * the field path, joined with ".", is the label key (so `labels.a.b` and `labels."a.b"` both name
 * the key `a.b`). Returns `undefined` for a path that does not name a set label.
 */
export function labelField(
  labels: Readonly<Record<string, string>> | undefined,
  rest: readonly string[],
): string | undefined {
  if (labels === undefined || rest.length === 0) return undefined;
  const key = rest.join(".");
  return Object.hasOwn(labels, key) ? labels[key] : undefined;
}
