//! Writes real messages as starting points for the `decode` target:
//! `cargo run --release --example seed_corpus` (from `fuzz/`).

use std::fs;

fn main() -> std::io::Result<()> {
    let seeds = facsimile_fuzz::seeds();
    for target in ["decode"] {
        let dir = format!("corpus/{target}");
        fs::create_dir_all(&dir)?;
        for (i, s) in seeds.iter().enumerate() {
            fs::write(format!("{dir}/seed-{i:03}"), s)?;
        }
    }
    println!("{} seeds", seeds.len());
    Ok(())
}
