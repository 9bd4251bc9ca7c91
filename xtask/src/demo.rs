//! `cargo xtask demo` (being written).

#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

pub fn run(_args: &DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not written yet")
}
