// kiln's hello world: TypeScript types, console, timers, URL, TextEncoder.

interface Greeting {
  who: string;
  at: URL;
}

const greeting: Greeting = {
  who: Deno.args[0] ?? "kiln",
  at: new URL("/hello?from=snapshot", "https://example.com"),
};

console.log(`Hello, ${greeting.who}!`);
console.log(`path=${greeting.at.pathname} query=${greeting.at.searchParams.get("from")}`);

const bytes: Uint8Array = new TextEncoder().encode("kiln");
console.log(`encoded ${bytes.length} bytes: ${Array.from(bytes).join(",")}`);

const waited: number = await new Promise((resolve) => {
  const start = performance.now();
  setTimeout(() => resolve(performance.now() - start), 10);
});
console.log(`timer fired after >= 10 ms: ${waited >= 9}`);
