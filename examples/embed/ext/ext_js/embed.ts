// embed_ext glue: the example's JS API, baked into the snapshot.

import { core } from "ext:core/mod.js";
import {
  op_counter_incr,
  op_counter_open,
  op_embed_add,
  op_embed_delay,
} from "ext:core/ops";

class Counter {
  #rid: number;
  constructor() {
    this.#rid = op_counter_open();
  }
  increment(): number {
    return op_counter_incr(this.#rid);
  }
  close(): void {
    core.close(this.#rid);
  }
}

Object.defineProperty(globalThis, "embed", {
  value: Object.freeze({
    add: (a: number, b: number): number => op_embed_add(a, b),
    delay: (ms: number, value: string): Promise<string> => op_embed_delay(ms, value),
    Counter,
  }),
  enumerable: false,
  writable: false,
  configurable: false,
});
