//! `cargo xtask web-bench [--rev REV] [--steps N]`: training steps per second in headless
//! Chromium (WebGPU on SwiftShader, packed f16) for the demo's default model and a plain
//! MLP, every precision (web/tests/bench.mjs). With `--rev`, the same benchmark first runs
//! against a build of REV (checked out in a temporary git worktree, with the
//! src/web/bench.rs hook as first committed added when it lacks it), so "before vs after"
//! is one run on one
//! machine. Both builds share the target directory's compiled dependencies.

use crate::web::{
    ensure_chromium, ensure_playwright, ensure_wasm_bindgen, serve, target_dir, CHROMIUM,
    WASM_TARGET,
};
use crate::{cargo, root, step, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const USAGE: &str = "\
  web-bench [--rev REV] [--steps N] [--rounds R]
               steps/s of the browser demo's training step in headless Chromium (default
               model and MLP 64-256-256-10; f16, bf16, f32), for this tree and, with
               --rev, a build of REV measured in the same run, cases interleaved
";

pub fn web_bench(args: &[String]) -> Result {
    let mut rev = None;
    let mut steps: u32 = 40;
    let mut rounds: u32 = 2;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rev" => rev = Some(it.next().ok_or("--rev needs a revision")?.clone()),
            "--steps" => {
                steps = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--steps needs a positive number")?
            }
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--rounds needs a positive number")?
            }
            other => return Err(format!("web-bench: unknown argument `{other}`")),
        }
    }
    ensure_chromium()?;
    ensure_playwright()?;
    let mut builds: Vec<(String, PathBuf)> = Vec::new();
    let base = target_dir().join("web-bench-base");
    if let Some(rev) = &rev {
        checkout(rev, &base)?;
        build(&base)?;
        builds.push((rev.clone(), base.clone()));
    }
    build(&root())?;
    builds.push(("this-tree".into(), root()));
    let result = bench(&builds, steps, rounds);
    if rev.is_some() {
        let mut rm = Command::new("git");
        rm.current_dir(root())
            .args(["worktree", "remove", "--force"])
            .arg(&base);
        step("git worktree remove (the --rev build)", rm)?;
    }
    result
}

/// A detached worktree of `rev` at `dir`, with the benchmark hook added if it is missing.
fn checkout(rev: &str, dir: &Path) -> Result {
    if dir.exists() {
        let mut rm = Command::new("git");
        rm.current_dir(root())
            .args(["worktree", "remove", "--force"])
            .arg(dir);
        let _ = rm.status();
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut add = Command::new("git");
    add.current_dir(root())
        .args(["worktree", "add", "--detach"])
        .arg(dir)
        .arg(rev);
    step(&format!("git worktree add {rev}"), add)?;
    let hook = dir.join("src/web/bench.rs");
    if !hook.exists() {
        println!("    {rev} lacks src/web/bench.rs: adding its first version");
        // Revisions older than the web/ submodules have no src/web/ folder at all.
        std::fs::create_dir_all(dir.join("src/web")).map_err(|e| e.to_string())?;
        std::fs::write(&hook, first_hook()?).map_err(|e| e.to_string())?;
        let web_rs = dir.join("src/web.rs");
        let text = std::fs::read_to_string(&web_rs).map_err(|e| e.to_string())?;
        let text = if text.contains("mod csv;") {
            text.replacen("mod csv;", "mod bench;\nmod csv;", 1)
        } else {
            format!("{text}\nmod bench;\n")
        };
        std::fs::write(&web_rs, text).map_err(|e| e.to_string())?;
    }
    // node_modules is not tracked; the benchmark script runs from this tree anyway.
    Ok(())
}

/// src/web/bench.rs as the commit that added it wrote it: a revision without the hook
/// predates it, and this tree's hook calls the API of today (`Trainer::new` with
/// `MlpOptions`), which such a revision does not have.
fn first_hook() -> Result<Vec<u8>> {
    let git = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new("git")
            .current_dir(root())
            .args(args)
            .output()
            .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out.stdout)
    };
    let added = git(&[
        "log",
        "--diff-filter=A",
        "--format=%H",
        "--",
        "src/web/bench.rs",
    ])?;
    let added = String::from_utf8_lossy(&added);
    let first = added
        .lines()
        .last()
        .ok_or("no commit adds src/web/bench.rs")?;
    git(&["show", &format!("{first}:src/web/bench.rs")])
}

/// The wasm package of the crate at `dir` into `dir/web/pkg` (as `cargo xtask web`).
/// The --rev build gets its own target directory: cargo hashes a workspace's own package
/// by its path relative to the workspace, so both trees would share one fingerprint and
/// one halfgrad.wasm, and this tree could be measured with the other build's module.
fn build(dir: &Path) -> Result {
    let bindgen = ensure_wasm_bindgen()?;
    let target = if dir == root() {
        target_dir()
    } else {
        target_dir().join("web-bench-base-target")
    };
    let mut b = cargo();
    b.current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .args(["rustc", "--lib", "--release", "--target", WASM_TARGET])
        .args(["--no-default-features", "--crate-type", "cdylib"]);
    step(&format!("build wasm32 package of {}", dir.display()), b)?;
    let wasm = target.join(WASM_TARGET).join("release/halfgrad.wasm");
    let mut gen = Command::new(bindgen);
    gen.args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(dir.join("web/pkg"))
        .arg(&wasm);
    step("wasm-bindgen -> web/pkg", gen)
}

/// Serves each build's `web/` on a free port and runs web/tests/bench.mjs against all of
/// them at once (it interleaves the builds case by case).
fn bench(builds: &[(String, PathBuf)], steps: u32, rounds: u32) -> Result {
    let mut node = Command::new("node");
    node.current_dir(root())
        .arg("web/tests/bench.mjs")
        .arg(steps.to_string())
        .arg(rounds.to_string())
        .env("HALFGRAD_CHROMIUM", CHROMIUM);
    for (label, dir) in builds {
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let web = dir.join("web");
        std::thread::spawn(move || serve(listener, web));
        node.arg(format!("{label}=http://{addr}/"));
    }
    step("browser benchmark (builds interleaved)", node)
}
