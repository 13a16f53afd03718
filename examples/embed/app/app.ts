// The embedder's JavaScript application, baked into its snapshot by
// build.rs: this top level runs at build time, so the program that thaws
// the snapshot finds the table built and the functions compiled.
import { squares } from "./table.ts";

const table: Map<string, number> = squares(1000);

(globalThis as Record<string, unknown>).app = {
  lookup(key: string): number {
    return table.get(key) ?? -1;
  },
  size: table.size,
};
