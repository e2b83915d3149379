import { internal, invalidArgument } from "@berth/errdefs";
import { BPF_MAXINSNS, BpfOp } from "./constants.js";

/** A jump target inside a {@link BpfAssembler} program; place it exactly once. @internal */
export interface Label {
  readonly id: number;
}

/** The conditional jumps the assembler knows, all comparing A with the constant k. */
type CondOp = "jeq" | "jgt" | "jge" | "jset";

type Item =
  | { readonly kind: "ld"; readonly k: number }
  | { readonly kind: "and"; readonly k: number }
  | { readonly kind: "ret"; readonly k: number }
  | { readonly kind: "ja"; readonly target: Label }
  | { readonly kind: "cond"; readonly op: CondOp; readonly k: number; readonly jt: Label; readonly jf: Label }
  | { readonly kind: "label"; readonly label: Label };

const condCode: Record<CondOp, number> = {
  jeq: BpfOp.JEQ_K,
  jgt: BpfOp.JGT_K,
  jge: BpfOp.JGE_K,
  jset: BpfOp.JSET_K,
};

/**
 * Builds a classic BPF program with symbolic labels and resolves them at the end. Conditional
 * jumps in classic BPF reach at most 255 instructions forward; when a target is further away the
 * assembler routes that branch through a `ja` trampoline (32-bit reach) placed right after the
 * jump, repeating the layout until every branch fits. Jumps may only go forward, as the kernel
 * requires; a backward reference is a bug in the caller and throws `internal`. @internal
 */
export class BpfAssembler {
  readonly #items: Item[] = [];
  #nextLabel = 0;

  /** A new, not yet placed label. */
  label(): Label {
    return { id: this.#nextLabel++ };
  }

  /** Places `label` at the current position. */
  place(label: Label): void {
    this.#items.push({ kind: "label", label });
  }

  /** `A = *(u32 *)(seccomp_data + offset)`. */
  load(offset: number): void {
    this.#items.push({ kind: "ld", k: offset });
  }

  /** `A &= k`. */
  and(k: number): void {
    this.#items.push({ kind: "and", k: k >>> 0 });
  }

  /** `return k`. */
  ret(k: number): void {
    this.#items.push({ kind: "ret", k: k >>> 0 });
  }

  /** Unconditional jump. */
  jump(target: Label): void {
    this.#items.push({ kind: "ja", target });
  }

  /** `if (A op k) goto jt; else goto jf` (unsigned comparisons; `jset` tests `A & k`). */
  branch(op: CondOp, k: number, jt: Label, jf: Label): void {
    this.#items.push({ kind: "cond", op, k: k >>> 0, jt, jf });
  }

  /**
   * Lays out and encodes the program as `struct sock_filter[]` in host (little-endian) byte
   * order. Throws `invalid-argument` when it exceeds the kernel's 4096 instructions.
   */
  assemble(): Uint8Array {
    const items = this.#items;
    // Per conditional jump: does its true / false branch go through a trampoline?
    const farT = new Set<number>();
    const farF = new Set<number>();
    const labelPos = new Map<number, number>();
    const itemPos: number[] = [];
    const at = (l: Label): number => {
      const p = labelPos.get(l.id);
      if (p === undefined) throw internal(`seccomp: BPF label ${l.id} was never placed`);
      return p;
    };

    let length = 0;
    for (;;) {
      length = 0;
      labelPos.clear();
      items.forEach((item, i) => {
        itemPos[i] = length;
        if (item.kind === "label") {
          if (labelPos.has(item.label.id)) throw internal(`seccomp: BPF label ${item.label.id} placed twice`);
          labelPos.set(item.label.id, length);
          return;
        }
        length += 1 + (farT.has(i) ? 1 : 0) + (farF.has(i) ? 1 : 0);
      });
      let grew = false;
      items.forEach((item, i) => {
        const pos = itemPos[i] ?? 0;
        if (item.kind === "ja" && at(item.target) <= pos) throw internal("seccomp: backward BPF jump");
        if (item.kind !== "cond") return;
        const from = pos + 1;
        for (const [target, far] of [
          [item.jt, farT],
          [item.jf, farF],
        ] as const) {
          const offset = at(target) - from;
          if (offset < 0) throw internal("seccomp: backward BPF jump");
          if (offset > 255 && !far.has(i)) {
            far.add(i);
            grew = true;
          }
        }
      });
      if (!grew) break;
    }
    if (length > BPF_MAXINSNS) {
      throw invalidArgument(
        `seccomp profile compiles to ${length} BPF instructions, more than the kernel's limit of ${BPF_MAXINSNS}`,
      );
    }

    const out = new Uint8Array(length * 8);
    const view = new DataView(out.buffer);
    let pc = 0;
    const emit = (code: number, jt: number, jf: number, k: number): void => {
      view.setUint16(pc * 8, code, true);
      view.setUint8(pc * 8 + 2, jt);
      view.setUint8(pc * 8 + 3, jf);
      view.setUint32(pc * 8 + 4, k >>> 0, true);
      pc++;
    };
    for (const [i, item] of items.entries()) {
      if (item.kind === "label") continue;
      if (item.kind === "ld") emit(BpfOp.LD_W_ABS, 0, 0, item.k);
      else if (item.kind === "and") emit(BpfOp.ALU_AND_K, 0, 0, item.k);
      else if (item.kind === "ret") emit(BpfOp.RET_K, 0, 0, item.k);
      else if (item.kind === "ja") emit(BpfOp.JA, 0, 0, at(item.target) - pc - 1);
      else {
        const base = pc;
        const tT = farT.has(i);
        const tF = farF.has(i);
        // Trampolines follow the jump: first the true one, then the false one.
        const jt = tT ? 0 : at(item.jt) - base - 1;
        const jf = tF ? (tT ? 1 : 0) : at(item.jf) - base - 1;
        emit(condCode[item.op], jt, jf, item.k);
        if (tT) emit(BpfOp.JA, 0, 0, at(item.jt) - pc - 1);
        if (tF) emit(BpfOp.JA, 0, 0, at(item.jf) - pc - 1);
      }
    }
    if (pc !== length) throw internal(`seccomp: BPF layout mismatch (${pc} != ${length})`);
    return out;
  }
}
