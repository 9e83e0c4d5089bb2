//! `halfgrad info [--json] [--check]`: adapter facts, precision paths, limits, and an
//! optional GPU self-check of the casts.

use halfgrad::{selfcheck, Gpu};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also run the GPU cast self-check (all f16/bf16 patterns, edge cases, random values).
    #[arg(long)]
    check: bool,
}

pub fn run(args: InfoArgs) -> halfgrad::Result<ExitCode> {
    let gpu = Gpu::new_blocking()?;
    let caps = gpu.caps().clone();
    let facts = gpu.adapter().clone();
    let checks = if args.check {
        Some(selfcheck::run_all_blocking(&gpu, 100_000)?)
    } else {
        None
    };
    let passed = checks.as_ref().is_none_or(|c| c.iter().all(|r| r.passed()));
    let coop = caps.cooperative_matrix.map(
        |(m, n, k)| serde_json::json!({"m": m, "n": n, "k": k, "ab": "f16", "accumulator": "f32"}),
    );
    if args.json {
        let mut obj = serde_json::json!({
            "adapter": facts.name,
            "backend": facts.backend,
            "device_type": facts.device_type,
            "driver": facts.driver,
            "driver_info": facts.driver_info,
            "shader_f16": caps.shader_f16,
            "shader_f16_disabled": caps.shader_f16_disabled,
            "f16_packed": true,
            "bf16": true,
            "cooperative_matrix": coop,
            "subgroups": caps.subgroups.map(|(lo, hi)| serde_json::json!({"min": lo, "max": hi})),
            "timestamp_query": caps.timestamps,
            "max_storage_buffer_binding_size": caps.max_storage_buffer_binding_size,
            "max_buffer_size": caps.max_buffer_size,
            "max_compute_workgroups_per_dimension": caps.max_compute_workgroups_per_dimension,
            "max_compute_invocations_per_workgroup": caps.max_compute_invocations_per_workgroup,
            "max_compute_workgroup_storage_size": caps.max_compute_workgroup_storage_size,
        });
        if let Some(c) = &checks {
            obj["cast_self_check"] = serde_json::json!({
                "passed": passed,
                "checks": c.iter().map(|r| serde_json::json!({"name": r.name, "checked": r.checked, "mismatches": r.mismatches})).collect::<Vec<_>>(),
            });
        }
        println!("{obj}");
    } else {
        let yes = |b: bool| if b { "yes" } else { "no" };
        println!("adapter      {}", facts.name);
        println!(
            "backend      {} ({}), driver {} {}",
            facts.backend, facts.device_type, facts.driver, facts.driver_info
        );
        println!("precision paths");
        println!(
            "  f16 native   {}{}",
            yes(caps.shader_f16),
            if caps.shader_f16_disabled {
                " (adapter has shader-f16; disabled by HALFGRAD_DISABLE_F16)"
            } else {
                ""
            }
        );
        println!("  f16 packed   yes (u32 words + unpack2x16float; works on every adapter)");
        println!("  bf16         yes (emulated through u32 bit packing)");
        match caps.cooperative_matrix {
            Some((m, n, k)) => println!("  coop matrix  yes, {m}x{n}x{k} f16 x f16 -> f32"),
            None => println!("  coop matrix  no"),
        }
        println!(
            "  subgroups    {}",
            caps.subgroups
                .map_or("no".to_string(), |(a, b)| format!("yes, size {a}..{b}"))
        );
        println!("  timestamps   {}", yes(caps.timestamps));
        println!("limits");
        println!(
            "  max_storage_buffer_binding_size  {}",
            caps.max_storage_buffer_binding_size
        );
        println!(
            "  max_buffer_size                  {}",
            caps.max_buffer_size
        );
        println!(
            "  max_compute_workgroups_per_dim   {}",
            caps.max_compute_workgroups_per_dimension
        );
        println!(
            "  max_invocations_per_workgroup    {}",
            caps.max_compute_invocations_per_workgroup
        );
        println!(
            "  max_workgroup_storage_size       {}",
            caps.max_compute_workgroup_storage_size
        );
        if let Some(c) = &checks {
            println!("cast self-check");
            for r in c {
                println!(
                    "  {} {:<55} {} values",
                    if r.passed() { "PASS" } else { "FAIL" },
                    r.name,
                    r.checked
                );
                for m in &r.first_mismatches {
                    println!("       {m}");
                }
            }
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
