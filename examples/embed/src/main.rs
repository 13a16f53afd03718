//! An embedder's program: a kiln runtime thawed from its own snapshot, with
//! its own extension baked next to kiln's.

use kiln_embed_ext as ext;

mod baked {
  include!(concat!(env!("OUT_DIR"), "/kiln_residual.rs"));
}

static SNAPSHOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln.snap"));

fn main() -> Result<(), Box<dyn std::error::Error>> {
  let tokio = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()?;
  tokio.block_on(async {
    let closed = ext::ClosedCounters::default();
    let mut runtime = kiln::Runtime::builder()
      .snapshot(SNAPSHOT)
      .residual_sources(baked::RESIDUAL_LAZY_JS, baked::RESIDUAL_LAZY_ESM)
      .extension(ext::embed_ext::init(closed.clone()))
      .build()?;
    runtime.execute_script(
      r#"
        console.log("sync op: 2 + 3 =", embed.add(2, 3));
        const counter = new embed.Counter();
        counter.increment();
        console.log("resource: counter =", counter.increment());
        counter.close();
        try { counter.increment(); } catch (e) { console.log("after close:", e.message); }
        embed.delay(10, "done").then((v) => console.log("async op:", v));
      "#,
    )?;
    runtime.run_event_loop().await?;
    println!("counters closed: {}", closed.0.get());

    // The application baked by build.rs: evaluated at build time, taken
    // from the snapshot now (nothing is read, parsed or run).
    let app = kiln::runtime::ModuleSpecifier::parse("file:///app/app.ts")?;
    runtime.baked_module(&app).await?;
    let answer = runtime.execute_script("`${app.size} entries, k12 = ${app.lookup('k12')}`")?;
    println!("baked app: {answer}");

    // The same snapshot without the extension it was baked with is refused.
    match kiln::Runtime::builder().snapshot(SNAPSHOT).build() {
      Ok(_) => println!("fingerprint check: MISSING"),
      Err(e) => println!("without embed_ext: {e}"),
    }
    Ok(())
  })
}
