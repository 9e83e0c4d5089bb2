//! `cargo xtask run | test | web`: the project's quick-start commands.
//!
//! Both make sure a Vulkan adapter exists first: when no Vulkan driver is installed they
//! install Mesa's software driver (lavapipe, Debian's `mesa-vulkan-drivers`) if running as
//! root, and otherwise print the one command to run. Installs already present are skipped.
//! Standard library only, so the first `cargo xtask` builds in seconds.

mod reliability;
mod web;
mod web_bench;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  run [ARGS]   build the release binary, check the GPU casts, then train the default model
               (ARGS go to `halfgrad train`)
  test         everything CI checks: fmt, clippy, tests on the software adapter, the wasm
               build, cross-checks for Windows (DX12) and macOS (Metal), and the browser
               demo trained end to end in headless Chromium (WebGPU on SwiftShader)
  web [--port N]
               build the wasm package into web/pkg and serve the in-browser training
               demo (web/) on http://127.0.0.1:8000/
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("web") => web::web(&args[1..]),
        Some("web-bench") => web_bench::web_bench(&args[1..]),
        Some("-h") | Some("--help") | None => {
            print!("{USAGE}{}{}", web_bench::USAGE, reliability::USAGE);
            Ok(())
        }
        Some(other) => reliability::run(other, &args[1..]).unwrap_or_else(|| {
            Err(format!(
                "unknown command `{other}`\n\n{USAGE}{}",
                reliability::USAGE
            ))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command, echoing it first; a non-zero exit is an error naming the step.
fn step(name: &str, mut cmd: Command) -> Result {
    println!("\n==> {name}");
    println!("    $ {}", describe(&cmd));
    let t = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    println!("    ({name}: {:.1}s)", t.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn output_ok(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output_ok("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

fn apt_install(packages: &[&str]) -> Result {
    if !is_root() {
        return Err(format!(
            "missing packages; run: sudo apt-get install -y {}",
            packages.join(" ")
        ));
    }
    if output_ok("apt-get", &["--version"]).is_none() {
        return Err(format!(
            "missing {}; this is not a Debian-like system: install them with your package manager",
            packages.join(" ")
        ));
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    step("apt-get update", update)?;
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages);
    step(&format!("install {}", packages.join(" ")), install)
}

/// A Vulkan loader plus at least one installable client driver (ICD).
fn vulkan_present() -> bool {
    let loader = output_ok("ldconfig", &["-p"]).is_some_and(|s| s.contains("libvulkan.so.1"));
    let icd_env = ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"]
        .iter()
        .any(|v| env::var_os(v).is_some());
    let icd_dirs = [
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
        "/usr/local/share/vulkan/icd.d",
    ];
    let icd_file = icd_dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|mut it| {
            it.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
        })
    });
    loader && (icd_env || icd_file)
}

/// Makes sure wgpu will find a Vulkan adapter on Linux; installs lavapipe when none is.
fn ensure_vulkan() -> Result {
    if !cfg!(target_os = "linux") {
        return Ok(()); // Metal / DX12 come with the OS.
    }
    if vulkan_present() {
        println!("==> Vulkan driver present (skipping install)");
    } else {
        println!("==> no Vulkan driver found: installing Mesa's software adapter (lavapipe)");
        apt_install(&["mesa-vulkan-drivers", "libvulkan1"])?;
    }
    // Mesa's WSI layer complains (harmlessly) when this is unset on headless machines.
    if env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = env::temp_dir().join("halfgrad-xdg-runtime");
        let _ = std::fs::create_dir_all(&dir);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        env::set_var("XDG_RUNTIME_DIR", dir);
    }
    Ok(())
}

/// `rustup target add` when the target's standard library is missing. Returns false (and
/// warns) when it cannot be fetched, so the caller can skip that check.
fn ensure_target(target: &str) -> bool {
    if output_ok("rustup", &["target", "list", "--installed"])
        .is_some_and(|s| s.lines().any(|l| l.trim() == target))
    {
        return true;
    }
    println!("==> adding Rust target {target}");
    let ok = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("warning: could not add the Rust target {target}; skipping its check");
    }
    ok
}

fn ensure_component(component: &str) -> Result {
    if output_ok("rustup", &["component", "list", "--installed"])
        .is_some_and(|s| s.lines().any(|l| l.starts_with(component)))
    {
        return Ok(());
    }
    let mut c = Command::new("rustup");
    c.args(["component", "add", component]);
    step(&format!("rustup component add {component}"), c)
}

fn run(args: &[String]) -> Result {
    ensure_vulkan()?;
    let mut build = cargo();
    build.args(["build", "--release", "--bin", "halfgrad"]);
    step("build halfgrad (release)", build)?;
    let bin = web::target_dir().join("release").join(if cfg!(windows) {
        "halfgrad.exe"
    } else {
        "halfgrad"
    });
    let mut info = Command::new(&bin);
    info.args(["info", "--check"]);
    step(
        "halfgrad info --check (adapter facts and GPU cast self-check)",
        info,
    )?;
    let mut train = Command::new(&bin);
    train.arg("train").args(args);
    step("halfgrad train", train)?;
    // The binary stays in the target folder: say where, and what to try next.
    println!(
        "\nthe halfgrad binary is {bin}\n\
         put it on your PATH with `cargo install --path .` (or run it in place), then try:\n  \
         {bin} gpt train                                 (a byte-level GPT-2, README: GPT)\n  \
         {bin} train --data your.csv --label COLUMN      (your own table, README: Your own data)",
        bin = bin.display()
    );
    Ok(())
}

fn test(_args: &[String]) -> Result {
    let t = Instant::now();
    ensure_vulkan()?;
    ensure_component("rustfmt")?;
    ensure_component("clippy")?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    step("cargo fmt --check", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("cargo clippy --all-targets -- -D warnings", clippy)?;

    let mut tests = cargo();
    tests
        .args(["test", "--workspace", "--", "--nocapture"])
        .env("RUST_BACKTRACE", "1");
    step(
        "cargo test (GPU tests on the available adapter; lavapipe in CI)",
        tests,
    )?;

    if ensure_target("wasm32-unknown-unknown") {
        // Clippy compiles the library for the browser and lints what only exists there
        // (src/web.rs); the browser step at the end builds and runs the real package.
        let mut wasm = cargo();
        wasm.args([
            "clippy",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--no-default-features",
            "--",
            "-D",
            "warnings",
        ]);
        step(
            "cargo clippy --target wasm32-unknown-unknown --lib -- -D warnings",
            wasm,
        )?;
    }
    for (target, backend) in [
        ("x86_64-pc-windows-msvc", "DX12"),
        ("aarch64-apple-darwin", "Metal"),
    ] {
        if ensure_target(target) {
            let mut check = cargo();
            check.args([
                "check",
                "--lib",
                "--target",
                target,
                "--no-default-features",
            ]);
            step(
                &format!("cargo check --lib --target {target} ({backend})"),
                check,
            )?;
        }
    }
    web::browser_test()?;
    println!(
        "\nxtask test: all checks passed in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
