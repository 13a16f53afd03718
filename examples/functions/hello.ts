// GET /hello -> "Hello from kiln!"
export default {
  fetch(request: Request): Response {
    const name = new URL(request.url).searchParams.get("name") ?? "kiln";
    return new Response(`Hello from ${name}!\n`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  },
};
