//! The browser demo: `cargo xtask web` builds the wasm package into `web/pkg` and serves
//! `web/` on localhost; `cargo xtask test` ends with [`browser_test`], which drives
//! Debian's Chromium (WebGPU on SwiftShader) through playwright-core.
//!
//! The static file server is std-only (a thread per connection, GET and HEAD, no caching)
//! so xtask stays quick to build.

use crate::{apt_install, cargo, output_ok, root, step, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub(crate) const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where cargo puts build outputs: `CARGO_TARGET_DIR` when set, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root().join(d)
            }
        }
        _ => root().join("target"),
    }
}

/// The `wasm-bindgen` crate version Cargo.lock pins; the CLI must match it exactly.
fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock"))
        .map_err(|e| format!("reading Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                return Ok(v.trim_matches('"').to_string());
            }
        }
    }
    Err("Cargo.lock has no wasm-bindgen package; is the wasm32 dependency gone?".into())
}

/// `wasm-bindgen` on PATH or in cargo's bin directory, with its version.
fn find_wasm_bindgen() -> Option<(PathBuf, String)> {
    let mut candidates = vec![PathBuf::from("wasm-bindgen")];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        candidates.push(home.join("bin/wasm-bindgen"));
    }
    candidates.into_iter().find_map(|c| {
        let out = output_ok(c.to_str()?, &["--version"])?;
        // "wasm-bindgen 0.2.130"
        let version = out.split_whitespace().nth(1)?.to_string();
        Some((c, version))
    })
}

/// The wasm-bindgen CLI at exactly Cargo.lock's version; `cargo install`s it otherwise
/// (a few minutes, once).
pub(crate) fn ensure_wasm_bindgen() -> Result<PathBuf> {
    let want = locked_wasm_bindgen_version()?;
    if let Some((path, have)) = find_wasm_bindgen() {
        if have == want {
            println!("==> wasm-bindgen {have} present (skipping install)");
            return Ok(path);
        }
        println!("==> wasm-bindgen {have} found, but Cargo.lock pins {want}: installing {want}");
    }
    let mut locked = Command::new("cargo");
    locked.args([
        "install",
        "wasm-bindgen-cli",
        "--version",
        &want,
        "--locked",
    ]);
    if step("cargo install wasm-bindgen-cli --locked", locked).is_err() {
        // The CLI's own lock file can name a dependency release the registry no longer
        // serves (or a mirror lacks); resolving afresh still builds the same CLI version.
        let mut unlocked = Command::new("cargo");
        unlocked.args(["install", "wasm-bindgen-cli", "--version", &want]);
        step(
            "cargo install wasm-bindgen-cli (fresh dependency resolution)",
            unlocked,
        )?;
    }
    match find_wasm_bindgen() {
        Some((path, have)) if have == want => Ok(path),
        Some((path, have)) => Err(format!(
            "{} reports version {have} after installing {want}; another wasm-bindgen \
             earlier on PATH shadows it",
            path.display()
        )),
        None => {
            Err("wasm-bindgen was installed but cannot be found: add ~/.cargo/bin to PATH".into())
        }
    }
}

/// Builds the library as a wasm cdylib (the native library stays an rlib) and runs
/// wasm-bindgen into `web/pkg`.
pub fn build_package() -> Result {
    if !crate::ensure_target(WASM_TARGET) {
        return Err(format!(
            "the Rust target {WASM_TARGET} is needed for the web demo"
        ));
    }
    let bindgen = ensure_wasm_bindgen()?;
    let mut build = cargo();
    build.args([
        "rustc",
        "--lib",
        "--release",
        "--target",
        WASM_TARGET,
        "--no-default-features",
        "--crate-type",
        "cdylib",
    ]);
    step("build halfgrad for wasm32 (release cdylib)", build)?;
    let wasm = target_dir().join(WASM_TARGET).join("release/halfgrad.wasm");
    let mut gen = Command::new(bindgen);
    gen.arg("--target")
        .arg("web")
        .arg("--no-typescript")
        .arg("--out-dir")
        .arg(root().join("web/pkg"))
        .arg(&wasm);
    step("wasm-bindgen -> web/pkg", gen)?;
    copy_corpus()
}

/// The GPT page fetches the shipped corpus (on wasm32 it is not compiled into the
/// module): data/kjv.txt is copied to web/data/kjv.txt (git-ignored) beside the package.
fn copy_corpus() -> Result {
    let (from, dir) = (root().join("data/kjv.txt"), root().join("web/data"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::copy(&from, dir.join("kjv.txt"))
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), dir.display()))?;
    println!("==> data/kjv.txt -> web/data/kjv.txt (the GPT page's corpus)");
    Ok(())
}

/// `cargo xtask web [--port N]`: build, then serve `web/` until interrupted.
pub fn web(args: &[String]) -> Result {
    let mut port: u16 = 8000;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => {
                port = it
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("--port needs a number")?
            }
            other => return Err(format!("web: unknown argument `{other}` (try --port N)")),
        }
    }
    build_package()?;
    // The first free port from the requested one on.
    let listener = (port..port.saturating_add(20))
        .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
        .ok_or_else(|| format!("no free port in {port}..{}", port.saturating_add(20)))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("\nserving web/ at http://{addr}/  (Ctrl-C to stop)");
    println!(
        "open it in a browser with WebGPU: Chrome/Edge 113+, Safari 26+, Firefox 141+ (Windows)"
    );
    serve(listener, root().join("web"));
    Ok(())
}

/// Serves files under `dir` forever, a thread per connection.
pub fn serve(listener: TcpListener, dir: PathBuf) {
    for stream in listener.incoming().flatten() {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &dir);
        });
    }
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The file a request path names, if it lies inside `dir` (no `..`, no hidden files).
fn resolve(dir: &Path, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next().unwrap_or("/");
    let mut file = dir.to_path_buf();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if seg.starts_with('.') || seg.contains('\\') || seg.contains('%') {
            return None;
        }
        file.push(seg);
    }
    if file.is_dir() {
        file.push("index.html");
    }
    file.is_file().then_some(file)
}

fn handle(stream: TcpStream, dir: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; the body of a GET is empty.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let mut out = stream;
    let head = |status: &str, ctype: &str, len: usize| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
        )
    };
    if method != "GET" && method != "HEAD" {
        let body = "only GET and HEAD\n";
        out.write_all(head("405 Method Not Allowed", "text/plain", body.len()).as_bytes())?;
        return out.write_all(body.as_bytes());
    }
    match resolve(dir, target).and_then(|f| Some((std::fs::read(&f).ok()?, f))) {
        Some((body, file)) => {
            out.write_all(head("200 OK", mime(&file), body.len()).as_bytes())?;
            if method == "GET" {
                out.write_all(&body)?;
            }
        }
        None => {
            let body = format!("not found: {target}\n");
            out.write_all(head("404 Not Found", "text/plain", body.len()).as_bytes())?;
            if method == "GET" {
                out.write_all(body.as_bytes())?;
            }
        }
    }
    out.flush()
}

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian's Chromium (its WebGPU runs on SwiftShader, without shader-f16).
pub(crate) fn ensure_chromium() -> Result {
    if Path::new(CHROMIUM).exists() {
        println!("==> {CHROMIUM} present (skipping install)");
        return Ok(());
    }
    println!("==> {CHROMIUM} missing: installing Debian's chromium");
    apt_install(&["chromium"])
}

/// Node.js and playwright-core (from web/tests/package-lock.json) for the browser driver.
pub(crate) fn ensure_playwright() -> Result {
    if output_ok("node", &["--version"]).is_none() {
        println!("==> node missing: installing Debian's nodejs and npm");
        apt_install(&["nodejs", "npm"])?;
    }
    let tests = root().join("web/tests");
    if tests
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        println!("==> playwright-core present (skipping npm ci)");
        return Ok(());
    }
    let mut ci = Command::new("npm");
    ci.current_dir(&tests)
        .args(["ci", "--no-audit", "--no-fund"]);
    step("npm ci (playwright-core, in web/tests)", ci)
}

/// Builds the package, serves `web/` on a free port and runs web/tests/e2e.mjs against it:
/// the demo trains in Chromium on WebGPU (SwiftShader), and the test checks the loss,
/// the accuracy, the console, the checkpoint round trip and device-loss recovery; then
/// web/tests/gpt.mjs trains the GPT page's tiny preset, and both downloaded checkpoints
/// continue natively.
pub fn browser_test() -> Result {
    build_package()?;
    ensure_chromium()?;
    ensure_playwright()?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let dir = root().join("web");
    std::thread::spawn(move || serve(listener, dir));
    let out = target_dir().join("web-e2e");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut node = Command::new("node");
    node.current_dir(root())
        .arg("web/tests/e2e.mjs")
        .arg(format!("http://{addr}/"))
        .arg(&out)
        .env("HALFGRAD_CHROMIUM", CHROMIUM);
    step(
        "browser end-to-end test (Chromium, WebGPU on SwiftShader, packed f16)",
        node,
    )?;
    println!("    screenshot: {}", out.join("screenshot.png").display());

    // The checkpoint the page downloaded (F16 on the packed path, step 300) continues
    // natively, on whatever f16 path this machine's adapter takes.
    let mut resume = cargo();
    resume
        .args([
            "run", "--quiet", "--bin", "halfgrad", "--", "train", "--resume",
        ])
        .arg(out.join("digits.safetensors"))
        .args(["--steps", "310"]);
    step(
        "native `halfgrad train --resume` of the browser's checkpoint (10 more steps)",
        resume,
    )?;

    // The GPT page: tiny preset in F16 (packed) and BF16, samples, checkpoints (a few
    // minutes on SwiftShader; HALFGRAD_SKIP_GPT_BROWSER_TEST=1 skips it locally, CI runs it).
    if std::env::var_os("HALFGRAD_SKIP_GPT_BROWSER_TEST").is_some_and(|v| v == "1") {
        println!("==> GPT browser test skipped (HALFGRAD_SKIP_GPT_BROWSER_TEST=1)");
        return Ok(());
    }
    let mut node = Command::new("node");
    node.current_dir(root())
        .arg("web/tests/gpt.mjs")
        .arg(format!("http://{addr}/"))
        .arg(&out)
        .env("HALFGRAD_CHROMIUM", CHROMIUM);
    step(
        "browser GPT test (Chromium, SwiftShader: tiny GPT in packed f16 and bf16)",
        node,
    )?;
    println!(
        "    screenshot: {}",
        out.join("gpt-screenshot.png").display()
    );
    // The GPT checkpoint the page downloaded (step 200, the end of gpt.mjs's 200-step
    // schedule) continues natively on the embedded corpus, its schedule stretched by 10.
    let mut resume = cargo();
    resume
        .args([
            "run", "--quiet", "--bin", "halfgrad", "--", "gpt", "train", "--resume",
        ])
        .arg(out.join("gpt.safetensors"))
        .args(["--steps", "210", "--extend-schedule"]);
    step(
        "native `halfgrad gpt train --resume` of the browser's GPT checkpoint (10 more steps)",
        resume,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_files_inside_web_only() {
        let web = root().join("web");
        assert_eq!(resolve(&web, "/"), Some(web.join("index.html")));
        assert_eq!(
            resolve(&web, "/index.html?precision=f16"),
            Some(web.join("index.html"))
        );
        assert_eq!(resolve(&web, "/chart.js"), Some(web.join("chart.js")));
        assert_eq!(resolve(&web, "/../Cargo.toml"), None);
        assert_eq!(resolve(&web, "/tests/%2e%2e/index.html"), None);
        assert_eq!(resolve(&web, "/.hidden"), None);
        assert_eq!(resolve(&web, "/missing.js"), None);
    }

    #[test]
    fn wasm_is_served_as_application_wasm() {
        assert_eq!(mime(Path::new("pkg/halfgrad_bg.wasm")), "application/wasm");
        assert!(mime(Path::new("app.js")).starts_with("text/javascript"));
        assert!(mime(Path::new("index.html")).starts_with("text/html"));
    }

    #[test]
    fn cargo_lock_pins_wasm_bindgen() {
        let v = locked_wasm_bindgen_version().unwrap();
        assert!(v.starts_with("0.2."), "{v}");
    }
}
