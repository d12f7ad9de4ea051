//! The Datacake benchmark harness: runs each suite in one process and prints every figure
//! beside its baseline.

mod alloc;
mod report;
mod suites;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

fn print(report: &report::SuiteReport) {
    println!("== suite {}", report.suite);
    for m in &report.measurements {
        println!("{m}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    print(&suites::crdt::run()?);
    print(&suites::rpc::run().await?);
    print(&suites::gossip::run().await?);
    Ok(())
}
