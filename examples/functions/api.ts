// A small JSON API: POST /api/echo returns the JSON body it was sent,
// GET /api/time the server time, anything else under /api a 404.
interface Echo {
  received: unknown;
  method: string;
  path: string;
}

export default {
  async fetch(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === "/api/echo" && request.method === "POST") {
      let received: unknown;
      try {
        received = await request.json();
      } catch {
        return Response.json({ error: "body is not JSON" }, { status: 400 });
      }
      const echo: Echo = { received, method: request.method, path: pathname };
      return Response.json(echo);
    }
    if (pathname === "/api/time") {
      return Response.json({ now: new Date().toISOString() });
    }
    return Response.json({ error: `no route ${pathname}` }, { status: 404 });
  },
};
